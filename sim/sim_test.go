package sim

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/hextest"
)

func TestBringUp(t *testing.T) {
	e := newEnv(t, Config{})
	sw, err := e.f.AddSwitch("sw0", SwitchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	h0, _ := e.f.AddHost("a", HostConfig{})
	h1, _ := e.f.AddHost("b", HostConfig{LIDs: []ib.LID{0x40}})
	for _, h := range []*Host{h0, h1} {
		if _, err := e.f.Connect(h, sw, CableConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	x := e.open(h0, 1)
	if a := x.attr(); a.State != ib.PortInit || a.LID != 0 {
		t.Fatalf("before Start: state %v LID %v, want INIT and no LID", a.State, a.LID)
	}
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	a := x.attr()
	if a.State != ib.PortActive || a.SMLID != sw.LID() || sw.LID() != 1 {
		t.Errorf("after Start: state %v SM LID %v (switch LID %v), want ACTIVE at SM LID 1", a.State, a.SMLID, sw.LID())
	}
	if a.LID != 2 {
		t.Errorf("host a LID %v, want 2 (1 is the SM's)", a.LID)
	}
	b, _ := h1.Port(1)
	if b.LID != 0x40 {
		t.Errorf("host b LID %v, want the configured 0x40", b.LID)
	}
	wantGID := ib.GIDFromParts(DefaultSubnetPrefix, uint64(h0.guid)+1)
	if a.GIDs[0] != wantGID || a.GUID() != h0.guid+1 {
		t.Errorf("GID %v, want %v", a.GIDs[0], wantGID)
	}
	if !slices.Equal(a.PKeys, []ib.PKey{ib.PKeyDefault}) || a.ActiveMTU != ib.MTU4096 || a.Rate != DefaultRate {
		t.Errorf("P_Keys %v MTU %v rate %v, want defaults", a.PKeys, a.ActiveMTU, a.Rate)
	}
	if !slices.Equal(x.events, []ib.Event{{Type: ib.EventPortActive, Port: 1}}) {
		t.Errorf("events %v, want one port-active", x.events)
	}
	if p, ok := sw.Route(0x40); !ok || p != 2 {
		t.Errorf("switch route to 0x40 = %d, %v; want port 2", p, ok)
	}
}

// TestExchange is the life of an IPoIB pair: both join the broadcast
// group through the SA (the first creates it), one resolves a path to the
// other, and they exchange unicast and multicast datagrams both ways.
func TestExchange(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(2, HostConfig{})
	const qkey = ib.QKeyIPoIBDefault
	a, b := e.open(hosts[0], qkey), e.open(hosts[1], qkey)

	r, mask := createJoin(broadcastMGID, a.gid(), ib.PKeyDefault, qkey)
	ga, st := e.join(a, r, mask)
	if st != 0 {
		t.Fatalf("create join: status %v", st)
	}
	if ga.MLID != ib.LIDMulticastMin || ga.QKey != qkey || ga.MTU != ib.MTU2048 || ga.Rate != ib.Rate10Gbps ||
		ga.PKey != ib.PKeyDefault || ga.JoinState != ib.JoinFullMember || ga.PortGID != a.gid() {
		t.Errorf("create join answer %+v", ga)
	}
	rb, maskb := ib.MCMemberQuery(broadcastMGID, b.gid(), ib.PKeyDefault, ib.JoinFullMember)
	gb, st := e.join(b, rb, maskb)
	if st != 0 || gb.MLID != ga.MLID || gb.QKey != qkey || gb.MTU != ga.MTU {
		t.Fatalf("second join: status %v record %+v", st, gb)
	}
	ans := b.answer(b.tid)
	if ans.Method != ib.MethodGetResp || ans.AttributeOffset != 7 || ans.ComponentMask != maskb {
		t.Errorf("join answer header: method %v offset %d mask %v", ans.Method, ans.AttributeOffset, ans.ComponentMask)
	}

	pr, st := e.path(a, b.gid())
	bAttr := b.attr()
	if st != 0 || pr.DLID != bAttr.LID || pr.SLID != a.attr().LID || pr.MTU != ib.MTU4096 ||
		pr.Rate != DefaultRate || pr.PKey != ib.PKeyDefault || !pr.Reversible || pr.PacketLifeTime != DefaultPacketLifeTime {
		t.Fatalf("path record: status %v %+v", st, pr)
	}

	for _, x := range []*ep{a, b} {
		if err := x.qp.AttachMcast(broadcastMGID, ga.MLID); err != nil {
			t.Fatal(err)
		}
	}
	// Unicast both ways.
	a.send(unicastAV(pr.DLID), b.qp.QPN(), qkey, []byte("hello "), []byte("b"))
	b.send(unicastAV(pr.SLID), a.qp.QPN(), qkey, []byte("hello a"))
	// Multicast both ways.
	a.send(mcastAV(broadcastMGID, ga.MLID), ib.QPNMulticast, qkey, []byte("to all from a"))
	b.send(mcastAV(broadcastMGID, ga.MLID), ib.QPNMulticast, qkey, []byte("to all from b"))
	e.settle()

	check := func(x *ep, from *ep, payload string, grh bool) {
		t.Helper()
		for _, r := range x.recv {
			if string(r.payload) != payload {
				continue
			}
			if r.wc.SrcQPN != from.qp.QPN() || r.wc.SLID != from.attr().LID || r.wc.HasGRH != grh ||
				r.wc.PKeyIndex != 0 || r.wc.QPN != x.qp.QPN() || r.wc.Len != ib.GRHSize+len(payload) {
				t.Errorf("%s: completion %+v", payload, r.wc)
			}
			if grh {
				var g ib.GRH
				_ = g.Decode(r.grh)
				if g.SGID != from.gid() || g.DGID != broadcastMGID || g.IPVer != 6 || g.NxtHdr != ib.NxtHdrIBA {
					t.Errorf("%s: GRH %+v", payload, g)
				}
			}
			return
		}
		t.Errorf("%s: not received by %s (got %d datagrams)", payload, x.h.name, len(x.recv))
	}
	check(b, a, "hello b", false)
	check(a, b, "hello a", false)
	check(b, a, "to all from a", true)
	check(a, b, "to all from b", true)
	// The senders are attached, so their HCAs loop their own multicast
	// back to them.
	check(a, a, "to all from a", true)
	check(b, b, "to all from b", true)
	if len(a.recv) != 3 || len(b.recv) != 3 {
		t.Errorf("received %d and %d datagrams, want 3 each", len(a.recv), len(b.recv))
	}
	for _, x := range []*ep{a, b} {
		if len(x.sends) != 2 || x.sends[0].Status != ib.StatusSuccess || x.sends[1].Status != ib.StatusSuccess {
			t.Errorf("%s send completions %+v", x.h.name, x.sends)
		}
	}
	c := e.f.Counters()
	if c.TotalDrops() != 0 {
		t.Errorf("drops: %v", c)
	}

	// Leaving: b leaves, the group stays; a leaves, it goes.
	leave := func(x *ep) ib.MADStatus {
		r, m := ib.MCMemberQuery(broadcastMGID, x.gid(), ib.PKeyDefault, ib.JoinFullMember)
		ans := e.ask(x, ib.MethodDelete, ib.SAAttrMCMemberRecord, m, &r)
		if ans.Method != ib.MethodDeleteResp {
			t.Errorf("leave answered with %v", ans.Method)
		}
		return ans.Status
	}
	if st := leave(b); st != 0 || len(e.f.Groups()) != 1 || len(e.f.Groups()[0].Members) != 1 {
		t.Fatalf("after b leaves: status %v groups %+v", st, e.f.Groups())
	}
	if st := leave(a); st != 0 || len(e.f.Groups()) != 0 {
		t.Fatalf("after a leaves: status %v groups %+v", st, e.f.Groups())
	}
	if _, ok := e.f.switches[0].mft[ga.MLID]; ok {
		t.Error("deleted group still has a forwarding entry")
	}
}

// TestSAClient runs a join and a path query through the ib package's SA
// client, as IPoIB will.
func TestSAClient(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(2, HostConfig{})
	dev, err := hosts[0].Open(e.loop)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	mp, err := dev.OpenMADPort(1)
	if err != nil {
		t.Fatal(err)
	}
	attr, _ := dev.QueryPort(1)
	c, err := ib.NewSAClient(e.loop, mp, attr, ib.SAClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var joined ib.MCMemberRecord
	var joinErr error
	r, mask := createJoin(broadcastMGID, attr.GIDs[0], ib.PKeyDefault, ib.QKeyIPoIBDefault)
	if _, err := c.SetMCMemberRecord(r, mask, func(rec ib.MCMemberRecord, err error) { joined, joinErr = rec, err }); err != nil {
		t.Fatal(err)
	}
	peer, _ := hosts[1].Port(1)
	var path ib.PathRecord
	var pathErr error
	q, qm := ib.PathQueryByGID(attr.GIDs[0], peer.GIDs[0], ib.PKeyDefault)
	if _, err := c.GetPathRecord(q, qm, func(rec ib.PathRecord, err error) { path, pathErr = rec, err }); err != nil {
		t.Fatal(err)
	}
	var missErr error
	q2, qm2 := ib.PathQueryByGID(attr.GIDs[0], mustGID("fe80::dead:beef"), ib.PKeyDefault)
	if _, err := c.GetPathRecord(q2, qm2, func(_ ib.PathRecord, err error) { missErr = err }); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if joinErr != nil || joined.MLID != ib.LIDMulticastMin {
		t.Errorf("join: %+v, %v", joined, joinErr)
	}
	if pathErr != nil || path.DLID != peer.LID {
		t.Errorf("path: %+v, %v", path, pathErr)
	}
	if !errors.Is(missErr, ib.SAErrNoRecords) {
		t.Errorf("path to an unknown GID: %v, want ERR_NO_RECORDS", missErr)
	}
}

// TestMADSendRefused: a MAD port refuses a MAD of the wrong length and an
// address it cannot carry before anything reaches the fabric, wrapping the
// cause callers test for.
func TestMADSendRefused(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(1, HostConfig{})
	x := e.open(hosts[0], ib.QKeyIPoIBDefault)
	attr := x.attr()
	sa := ib.MADAddress{LID: attr.SMLID, QPN: ib.QPNGSI, QKey: ib.QKeyGSI}
	mad := make([]byte, ib.MADLen)
	with := func(f func(*ib.MADAddress)) ib.MADAddress { a := sa; f(&a); return a }
	tests := []struct {
		name string
		dst  ib.MADAddress
		mad  []byte
		want []error
	}{
		{"short MAD", sa, mad[:100], []error{ib.ErrMADLength}},
		{"QPN past 24 bits", with(func(a *ib.MADAddress) { a.QPN = ib.QPNMask + 1 }), mad, []error{ErrInvalidWR, ib.ErrBadConfig}},
		{"SL 16", with(func(a *ib.MADAddress) { a.SL = 16 }), mad, []error{ErrInvalidWR, ib.ErrBadConfig}},
		{"negative P_Key index", with(func(a *ib.MADAddress) { a.PKeyIndex = -1 }), mad, []error{ErrInvalidWR, ib.ErrBadConfig}},
		{"P_Key index past the table", with(func(a *ib.MADAddress) { a.PKeyIndex = len(attr.PKeys) }), mad, []error{ErrInvalidWR}},
	}
	sent := hosts[0].Counters().Sent
	for _, tc := range tests {
		err := x.mad.Send(tc.dst, tc.mad)
		if err == nil {
			t.Errorf("%s: Send succeeded", tc.name)
		}
		for _, w := range tc.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: Send = %v, want it to wrap %v", tc.name, err, w)
			}
		}
	}
	e.settle()
	if got := hosts[0].Counters().Sent; got != sent {
		t.Errorf("refused MADs left the port: %d packets sent, want %d", got, sent)
	}
}

func TestSARequests(t *testing.T) {
	e := newEnv(t, Config{})
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{})
	mk := func(name string, hc HostConfig) *Host {
		h, err := e.f.AddHost(name, hc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.f.Connect(h, sw, CableConfig{}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	mk("a", HostConfig{PKeys: []ib.PKey{ib.PKeyDefault, 0x8001}})
	mk("b", HostConfig{MTU: ib.MTU1024, Rate: ib.Rate25Gbps})
	mk("c", HostConfig{PKeys: []ib.PKey{0x8002}})
	mk("lim1", HostConfig{PKeys: []ib.PKey{0x7FFF, 0x0003}})
	mk("lim2", HostConfig{PKeys: []ib.PKey{0x7FFF, 0x0003}})
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	x := map[string]*ep{}
	for _, h := range e.f.Hosts() {
		x[h.name] = e.open(h, 1)
	}
	gid := func(n string) ib.GID { return x[n].gid() }
	lid := func(n string) ib.LID { return x[n].attr().LID }

	pathTests := []struct {
		name    string
		from    string
		rec     ib.PathRecord
		mask    ib.ComponentMask
		status  ib.MADStatus
		dlid    string
		mtu     ib.MTU
		rate    ib.Rate
		pkey    ib.PKey
		sl      ib.SL
		lifeSet bool
	}{
		{name: "by GID", from: "a", rec: ib.PathRecord{SGID: gid("a"), DGID: gid("b")},
			mask: ib.PathRecCompSGID | ib.PathRecCompDGID, dlid: "b", mtu: ib.MTU1024, rate: ib.Rate25Gbps, pkey: ib.PKeyDefault},
		{name: "by LID from requester", from: "a", rec: ib.PathRecord{DLID: lid("b")},
			mask: ib.PathRecCompDLID, dlid: "b", mtu: ib.MTU1024, rate: ib.Rate25Gbps, pkey: ib.PKeyDefault},
		{name: "by SLID and DLID", from: "b", rec: ib.PathRecord{SLID: lid("a"), DLID: lid("b")},
			mask: ib.PathRecCompSLID | ib.PathRecCompDLID, dlid: "b", mtu: ib.MTU1024, rate: ib.Rate25Gbps, pkey: ib.PKeyDefault},
		{name: "SL asked", from: "a", rec: ib.PathRecord{DGID: gid("b"), SL: 3},
			mask: ib.PathRecCompDGID | ib.PathRecCompSL, dlid: "b", mtu: ib.MTU1024, rate: ib.Rate25Gbps, pkey: ib.PKeyDefault, sl: 3},
		{name: "MTU less than 1024", from: "a", rec: ib.PathRecord{DGID: gid("b"), MTUSelector: ib.SelectorLessThan, MTU: ib.MTU1024},
			mask: ib.PathRecCompDGID | ib.PathRecCompMTUSelector | ib.PathRecCompMTU, dlid: "b", mtu: ib.MTU512, rate: ib.Rate25Gbps, pkey: ib.PKeyDefault},
		{name: "MTU greater than 1024 impossible", from: "a", rec: ib.PathRecord{DGID: gid("b"), MTUSelector: ib.SelectorGreaterThan, MTU: ib.MTU1024},
			mask: ib.PathRecCompDGID | ib.PathRecCompMTUSelector | ib.PathRecCompMTU, status: ib.SAErrNoRecords.MADStatus()},
		{name: "rate less than 25", from: "a", rec: ib.PathRecord{DGID: gid("b"), RateSelector: ib.SelectorLessThan, Rate: ib.Rate25Gbps},
			mask: ib.PathRecCompDGID | ib.PathRecCompRateSelector | ib.PathRecCompRate, dlid: "b", mtu: ib.MTU1024, rate: ib.Rate20Gbps, pkey: ib.PKeyDefault},
		{name: "exact rate above path", from: "a", rec: ib.PathRecord{DGID: gid("b"), RateSelector: ib.SelectorExactly, Rate: ib.Rate40Gbps},
			mask: ib.PathRecCompDGID | ib.PathRecCompRateSelector | ib.PathRecCompRate, status: ib.SAErrNoRecords.MADStatus()},
		{name: "unknown DGID", from: "a", rec: ib.PathRecord{DGID: mustGID("fe80::1:2:3:4")},
			mask: ib.PathRecCompDGID, status: ib.SAErrNoRecords.MADStatus()},
		{name: "unknown SGID", from: "a", rec: ib.PathRecord{SGID: mustGID("fe80::1:2:3:4"), DGID: gid("b")},
			mask: ib.PathRecCompSGID | ib.PathRecCompDGID, status: ib.SAErrNoRecords.MADStatus()},
		{name: "no common partition", from: "a", rec: ib.PathRecord{DGID: gid("c")},
			mask: ib.PathRecCompDGID, status: ib.SAErrNoRecords.MADStatus()},
		{name: "two limited members", from: "lim1", rec: ib.PathRecord{DGID: gid("lim2")},
			mask: ib.PathRecCompDGID, status: ib.SAErrNoRecords.MADStatus()},
		{name: "P_Key the destination lacks", from: "a", rec: ib.PathRecord{DGID: gid("b"), PKey: 0x8001},
			mask: ib.PathRecCompDGID | ib.PathRecCompPKey, status: ib.SAErrNoRecords.MADStatus()},
		{name: "no destination", from: "a", rec: ib.PathRecord{SGID: gid("a")},
			mask: ib.PathRecCompSGID, status: ib.SAErrReqInsufficientComponents.MADStatus()},
	}
	// The loop belongs to this goroutine, so the cases run in it rather
	// than in subtests.
	for _, tc := range pathTests {
		func() {
			t := &prefixT{t, "PathRecord/" + tc.name}
			m := e.ask(x[tc.from], ib.MethodGet, ib.SAAttrPathRecord, tc.mask, &tc.rec)
			if m.Status != tc.status || m.Method != ib.MethodGetResp || m.ComponentMask != tc.mask || m.AttributeOffset != 8 {
				t.Fatalf("status %v method %v mask %v offset %d, want status %v", m.Status, m.Method, m.ComponentMask, m.AttributeOffset, tc.status)
			}
			if tc.status != 0 {
				return
			}
			var r ib.PathRecord
			_ = r.Decode(m.Data[:])
			if r.DLID != lid(tc.dlid) || r.DGID != gid(tc.dlid) || r.MTU != tc.mtu || r.Rate != tc.rate ||
				r.PKey != tc.pkey || r.SL != tc.sl || r.MTUSelector != ib.SelectorExactly || !r.Reversible {
				t.Errorf("record %+v", r)
			}
		}()
	}

	mgid := mustGID("ff12:401b:8001::1")
	full, fullMask := createJoin(mgid, gid("a"), 0x8001, 0x1234)
	mcTests := []struct {
		name   string
		from   string
		method ib.Method
		rec    ib.MCMemberRecord
		mask   ib.ComponentMask
		status ib.MADStatus
		check  func(t *prefixT, r ib.MCMemberRecord)
	}{
		{name: "non-member join of a missing group", from: "a", method: ib.MethodSet,
			rec:  ib.MCMemberRecord{MGID: mgid, PortGID: gid("a"), JoinState: ib.JoinNonMember},
			mask: ib.MCMemberCompMGID | ib.MCMemberCompPortGID | ib.MCMemberCompJoinState, status: ib.SAErrNoRecords.MADStatus()},
		{name: "create without Q_Key", from: "a", method: ib.MethodSet,
			rec: full, mask: fullMask &^ ib.MCMemberCompQKey, status: ib.SAErrReqInsufficientComponents.MADStatus()},
		{name: "create with MTU but no selector", from: "a", method: ib.MethodSet,
			rec: full, mask: fullMask &^ ib.MCMemberCompMTUSelector, status: ib.SAErrReqInsufficientComponents.MADStatus()},
		{name: "create with a P_Key the port lacks", from: "b", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord { r := full; r.PortGID = gid("b"); return r }(), mask: fullMask, status: ib.SAErrReqInvalid.MADStatus()},
		{name: "join for another port", from: "b", method: ib.MethodSet,
			rec: full, mask: fullMask, status: ib.SAErrReqInvalid.MADStatus()},
		{name: "create", from: "a", method: ib.MethodSet, rec: full, mask: fullMask,
			check: func(t *prefixT, r ib.MCMemberRecord) {
				if r.MGID != mgid || r.QKey != 0x1234 || r.PKey != 0x8001 || r.MTU != ib.MTU2048 || r.MLID != ib.LIDMulticastMin || r.Scope != 2 {
					t.Errorf("created %+v", r)
				}
			}},
		{name: "join with another Q_Key", from: "a", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord { r := full; r.QKey = 1; return r }(), mask: fullMask, status: ib.SAErrReqInvalid.MADStatus()},
		{name: "join with MTU the group exceeds", from: "a", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord { r := full; r.MTU = ib.MTU1024; return r }(), mask: fullMask, status: ib.SAErrReqInvalid.MADStatus()},
		{name: "create on the default partition", from: "a", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord {
				r, _ := createJoin(broadcastMGID, gid("a"), ib.PKeyDefault, ib.QKeyIPoIBDefault)
				return r
			}(), mask: fullMask},
		{name: "port below the group MTU", from: "b", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord {
				r, _ := ib.MCMemberQuery(broadcastMGID, gid("b"), ib.PKeyDefault, ib.JoinFullMember)
				return r
			}(), mask: ib.MCMemberCompMGID | ib.MCMemberCompPortGID | ib.MCMemberCompPKey | ib.MCMemberCompJoinState,
			status: ib.SAErrReqInvalid.MADStatus()},
		{name: "SA-allocated MGID", from: "a", method: ib.MethodSet,
			rec: func() ib.MCMemberRecord { r := full; r.MGID = ib.GID{}; return r }(), mask: fullMask,
			check: func(t *prefixT, r ib.MCMemberRecord) {
				if r.MGID[0] != 0xff || r.MGID[2] != 0xa0 || r.MGID[3] != 0x1b || r.MLID == ib.LIDMulticastMin {
					t.Errorf("allocated %+v", r)
				}
			}},
		{name: "get by MGID", from: "b", method: ib.MethodGet,
			rec: ib.MCMemberRecord{MGID: mgid}, mask: ib.MCMemberCompMGID,
			check: func(t *prefixT, r ib.MCMemberRecord) {
				if r.MLID != ib.LIDMulticastMin || !r.PortGID.IsZero() || r.QKey != 0x1234 {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "get membership", from: "a", method: ib.MethodGet,
			rec: ib.MCMemberRecord{MGID: mgid, PortGID: gid("a")}, mask: ib.MCMemberCompMGID | ib.MCMemberCompPortGID,
			check: func(t *prefixT, r ib.MCMemberRecord) {
				if r.PortGID != gid("a") || r.JoinState != ib.JoinFullMember {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "get matching two groups", from: "a", method: ib.MethodGet,
			rec: ib.MCMemberRecord{PKey: 0x8001}, mask: ib.MCMemberCompPKey, status: ib.SAErrTooManyRecords.MADStatus()},
		{name: "leave a group not joined", from: "lim1", method: ib.MethodDelete,
			rec:  ib.MCMemberRecord{MGID: mgid, PortGID: gid("lim1"), JoinState: ib.JoinFullMember},
			mask: ib.MCMemberCompMGID | ib.MCMemberCompPortGID | ib.MCMemberCompJoinState, status: ib.SAErrReqInvalid.MADStatus()},
		{name: "leave without JoinState", from: "a", method: ib.MethodDelete,
			rec: ib.MCMemberRecord{MGID: mgid, PortGID: gid("a")}, mask: ib.MCMemberCompMGID | ib.MCMemberCompPortGID,
			status: ib.SAErrReqInsufficientComponents.MADStatus()},
	}
	for _, tc := range mcTests {
		func() {
			t := &prefixT{t, "MCMemberRecord/" + tc.name}
			m := e.ask(x[tc.from], tc.method, ib.SAAttrMCMemberRecord, tc.mask, &tc.rec)
			if m.Status != tc.status || m.Method != tc.method.Response() {
				t.Fatalf("status %v method %v, want %v %v", m.Status, m.Method, tc.status, tc.method.Response())
			}
			if tc.check != nil {
				var r ib.MCMemberRecord
				_ = r.Decode(m.Data[:])
				tc.check(t, r)
			}
		}()
	}

	func() {
		for _, c := range []struct {
			method ib.Method
			attr   ib.AttributeID
		}{
			{ib.MethodGetTable, ib.SAAttrPathRecord},
			{ib.MethodSet, ib.SAAttrPathRecord},
			{ib.MethodGet, ib.SAAttrNodeRecord},
			{ib.MethodGet, ib.AttrClassPortInfo},
		} {
			var empty ib.PathRecord
			if m := e.ask(x["a"], c.method, c.attr, 0, &empty); m.Status != ib.MADStatusMethodAttrUnsupported {
				t.Errorf("%v(%s): status %v", c.method, ib.SAAttributeName(c.attr), m.Status)
			}
		}
	}()
}

// prefixT names a table case in failure messages when the cases cannot be
// subtests (the fabric loop is held by the test's goroutine).
type prefixT struct {
	*testing.T
	name string
}

func (p *prefixT) Errorf(format string, args ...any) {
	p.T.Helper()
	p.T.Errorf("%s: "+format, append([]any{p.name}, args...)...)
}

func (p *prefixT) Fatalf(format string, args ...any) {
	p.T.Helper()
	p.T.Fatalf("%s: "+format, append([]any{p.name}, args...)...)
}

func TestRealSAExchange(t *testing.T) {
	// Frames 32 and 33 of the softroce-demo-infiniband capture (ERF type
	// 21, real hardware and OpenSM): a PathRecord Get from LID 4 to the SA
	// at LID 1, and the SA's answer. The simulator, given the same ports,
	// must answer with the same bytes (its SA PSN set to the captured one).
	req, want := captureFrame32(t), captureFrame33(t)
	var capture bytes.Buffer
	e := newEnv(t, Config{MTU: ib.MTU2048, Rate: ib.Rate10Gbps, Capture: &capture})
	a, _ := captureHosts(t, e, 0x0002c90300001895)
	x := e.open(a, 1)
	e.f.sa.psn = 979798
	e.inject(a, 1, req)
	if len(x.mads) != 1 {
		t.Fatalf("%d MADs reached a, want the answer", len(x.mads))
	}
	if got := x.mads[0].mad; !bytes.Equal(got, want[0x1c:0x11c]) {
		t.Errorf("answer MAD differs from the capture:\n got %x\nwant %x", got, want[0x1c:0x11c])
	}
	frames := readERF(t, capture.Bytes())
	if len(frames) != 2 || !bytes.Equal(frames[0], req) {
		t.Fatalf("capture holds %d frames, want the request then the answer", len(frames))
	}
	if !bytes.Equal(frames[1], want) {
		t.Errorf("answer frame differs from the capture:\n got %x\nwant %x", frames[1], want)
	}
}

// zeros returns hex for the zero bytes from offset from up to to.
func zeros(from, to int) string { return string(bytes.Repeat([]byte(" 00"), to-from)) }

func TestRealMulticastFrame(t *testing.T) {
	// Frame 5 of the same capture: an IPoIB ARP request broadcast by LID 4
	// from QP 0x405 (PSN 8367) to the IPv4 broadcast group at MLID 0xC000.
	want := captureFrame5(t)
	var capture bytes.Buffer
	e := newEnv(t, Config{MTU: ib.MTU2048, Rate: ib.Rate10Gbps, Capture: &capture})
	a, b := captureHosts(t, e, 0)
	a.nextQPN = 0x405
	xa, xb := e.open(a, ib.QKeyIPoIBDefault), e.open(b, ib.QKeyIPoIBDefault)
	xa.qp.(*qp).psn = 8367
	r, m := createJoin(broadcastMGID, xa.gid(), ib.PKeyDefault, ib.QKeyIPoIBDefault)
	if g, st := e.join(xa, r, m); st != 0 || g.MLID != 0xC000 {
		t.Fatalf("join: %v %+v", st, g)
	}
	r.PortGID = xb.gid()
	e.join(xb, r, m)
	if err := xb.qp.AttachMcast(broadcastMGID, 0xC000); err != nil {
		t.Fatal(err)
	}
	payload := want[0x44:0x80]
	xa.send(mcastAV(broadcastMGID, 0xC000), ib.QPNMulticast, ib.QKeyIPoIBDefault, payload[:4], payload[4:])
	e.settle()
	frames := readERF(t, capture.Bytes())
	if got := frames[len(frames)-1]; !bytes.Equal(got, want) {
		t.Errorf("sent frame differs from the capture:\n got %x\nwant %x", got, want)
	}
	if len(xb.recv) != 1 || !bytes.Equal(xb.recv[0].payload, payload) || !bytes.Equal(xb.recv[0].grh, want[8:48]) {
		t.Fatalf("b received %+v", xb.recv)
	}
	if wc := xb.recv[0].wc; wc.SrcQPN != 0x405 || wc.SLID != 4 || !wc.HasGRH {
		t.Errorf("completion %+v", wc)
	}
}

// Frames of the softroce-demo-infiniband capture (/work/shared/captures;
// ERF type 21 from real HCAs and OpenSM), used as golden vectors and fuzz
// seeds.

// captureFrame5 is an IPoIB ARP request broadcast by LID 4 from QP 0x405
// (PSN 8367) to the IPv4 broadcast group at MLID 0xC000.
func captureFrame5(t testing.TB) []byte {
	return hextest.Bytes(t, `
		00 03 c0 00 00 21 00 04 60 00 00 00 00 54 1b 00
		fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36
		ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff
		64 40 ff ff 00 ff ff ff 00 00 20 af 00 00 0b 1b
		00 00 04 05 08 06 00 00 00 20 08 00 14 04 00 01
		80 00 04 05 fe 80 00 00 00 00 00 00 00 02 c9 02
		00 24 f6 36 0a 00 01 22 00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 00 00 00 00 00 0a 00 00 3a
		bd 6b d6 a8 88 83`)
}

// captureFrame32 is a PathRecord Get from LID 4 to the SA at LID 1.
func captureFrame32(t testing.TB) []byte {
	return hextest.Bytes(t, `
		00 02 00 01 00 48 00 04 64 00 ff ff 00 00 00 01
		00 00 2f 1e 80 01 00 00 00 00 00 01 01 03 02 01
		00 00 00 00 00 00 00 0b b9 64 7f 9e 00 35 00 00
		00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
		00 00 34 0c 00 00 00 00 00 00 00 00 fe 80 00 00
		00 00 00 00 00 02 c9 03 00 00 18 95 fe 80 00 00
		00 00 00 00 00 02 c9 02 00 24 f6 36 00 00 00 00
		00 00 00 00 00 01 ff ff 00 00 00 00 00 00 00 00`+zeros(0x90, 0x11c)+`
		4c c1 eb 2f c2 53`)
}

// captureFrame33 is the SA's answer to frame 32.
func captureFrame33(t testing.TB) []byte {
	return hextest.Bytes(t, `
		00 02 00 04 00 48 00 01 64 00 ff ff 00 00 00 01
		00 0e f3 56 80 01 00 00 00 00 00 01 01 03 02 81
		00 00 00 00 00 00 00 0b b9 64 7f 9e 00 35 00 00
		00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 00 00 08 00 00 00 00 00 00
		00 00 34 0c 00 00 00 00 00 00 00 00 fe 80 00 00
		00 00 00 00 00 02 c9 03 00 00 18 95 fe 80 00 00
		00 00 00 00 00 02 c9 02 00 24 f6 36 00 02 00 04
		00 00 00 00 00 80 ff ff 00 00 84 83 92 00 00 00`+zeros(0x90, 0x11c)+`
		23 53 11 01 c3 67`)
}

// TestMulticastWithoutGRHDropped settles a suspicion of the hardening
// issue: that a multicast datagram arriving without a GRH would reach
// IPoIB, which cannot tell it from unicast (a UD completion carries no
// DLID, so a receiver keys it to its own address). A multicast packet
// carries its group's MGID in the GRH, and the fabric, as a real port
// does, drops one without it as malformed: the member never sees it,
// while the same datagram with its GRH arrives.
func TestMulticastWithoutGRHDropped(t *testing.T) {
	e := newEnv(t, Config{})
	ha, hb := captureHosts(t, e, 0x0002c90300001895)
	a, b := e.open(ha, ib.QKeyIPoIBDefault), e.open(hb, ib.QKeyIPoIBDefault)
	r, m := createJoin(broadcastMGID, a.gid(), ib.PKeyDefault, ib.QKeyIPoIBDefault)
	g, st := e.join(a, r, m)
	if st != 0 {
		t.Fatalf("join: %v", st)
	}
	r.PortGID = b.gid()
	e.join(b, r, m)
	if err := b.qp.AttachMcast(broadcastMGID, g.MLID); err != nil {
		t.Fatal(err)
	}
	pkt := ib.Packet{
		LRH:     ib.LRH{LNH: ib.LNHIBALocal, DLID: g.MLID, SLID: ha.ports[1].lid},
		BTH:     ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: ib.QPNMulticast},
		DETH:    ib.DETH{QKey: ib.QKeyIPoIBDefault, SrcQP: a.qp.QPN()},
		Payload: []byte{0x08, 0x06, 0, 0, 'n', 'o', ' ', 'G', 'R', 'H'},
	}
	frame, err := pkt.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	before := e.f.Counters().Dropped(DropMalformed)
	e.inject(ha, 1, frame)
	if len(b.recv) != 0 {
		t.Fatalf("member received a multicast datagram without a GRH: %+v", b.recv[0].wc)
	}
	if e.f.Counters().Dropped(DropMalformed) == before {
		t.Fatalf("not counted as malformed: %v", e.f.Counters())
	}
	// The same datagram with its GRH is delivered: the drop is the GRH's.
	a.send(mcastAV(broadcastMGID, g.MLID), ib.QPNMulticast, ib.QKeyIPoIBDefault, []byte{0x08, 0x06, 0, 0}, []byte("with GRH"))
	e.settle()
	if len(b.recv) != 1 || !b.recv[0].wc.HasGRH {
		t.Fatalf("member received %d datagrams with their GRH, want 1", len(b.recv))
	}
}
