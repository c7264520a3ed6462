package sim

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/looptest"
)

// testEpoch is where the manual clocks of the tests start; any time ERF can
// stamp would do.
var testEpoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fabricSeq keeps fabric names unique across tests in one process.
var fabricSeq atomic.Uint64

// env is a fabric on a loop with a manual clock, held by the test
// goroutine for the whole test.
type env struct {
	t     testing.TB
	loop  *aio.Context
	clock *aio.ManualClock
	f     *Fabric
}

// newEnv makes a loop the test goroutine is home on, and an empty fabric.
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	clock := aio.NewManualClock(testEpoch)
	loop := looptest.Home(t, aio.WithClock(clock), aio.WithName("fabric"))
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("t%d", fabricSeq.Add(1))
	}
	f, err := New(loop, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before looptest's: the fabric goes before its loop
		if !f.closed.Load() {
			f.Close()
		}
	})
	return &env{t: t, loop: loop, clock: clock, f: f}
}

// star builds sw0 plus n hosts in e's fabric and starts it.
func (e *env) star(n int, hc HostConfig) []*Host {
	e.t.Helper()
	sw, err := e.f.AddSwitch("sw0", SwitchConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	hosts := make([]*Host, n)
	for i := range hosts {
		if hosts[i], err = e.f.AddHost(fmt.Sprintf("host%d", i), hc); err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.f.Connect(hosts[i], sw, CableConfig{}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.f.Start(); err != nil {
		e.t.Fatal(err)
	}
	return hosts
}

// settle runs the loop until nothing is left to do at the current time.
func (e *env) settle() {
	e.t.Helper()
	looptest.Settle(e.t, e.loop)
}

// advance moves the clock by d in one step and settles.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	looptest.Advance(e.t, e.loop, e.clock, d, 0)
}

// rx is one received datagram, copied out of its buffer.
type rx struct {
	wc      ib.Completion
	grh     []byte
	payload []byte
}

// madRx is one MAD that reached a MAD port.
type madRx struct {
	src ib.MADAddress
	mad []byte
}

// ep is an open device with one CQ, one UD QP and the port's MAD port,
// whose handlers record everything.
type ep struct {
	t      testing.TB
	h      *Host
	dev    ib.Device
	cq     ib.CompletionQueue
	qp     ib.QueuePair
	mad    ib.MADPort
	recv   []rx
	sends  []ib.Completion
	mads   []madRx
	events []ib.Event
	tid    uint64
	wcs    [16]ib.Completion
}

// open opens h on the fabric loop with a QP of the given Q_Key on P_Key
// index 0.
func (e *env) open(h *Host, qkey ib.QKey) *ep {
	return e.openQP(h, ib.QPConfig{Port: 1, QKey: qkey, SendDepth: 64, RecvDepth: 64, RecvBufSize: ib.GRHSize + 4096})
}

func (e *env) openQP(h *Host, qc ib.QPConfig) *ep {
	e.t.Helper()
	dev, err := h.Open(e.loop)
	if err != nil {
		e.t.Fatal(err)
	}
	x := &ep{t: e.t, h: h, dev: dev, tid: uint64(h.seq) << 32}
	dev.SetEventHandler(func(ev ib.Event) { x.events = append(x.events, ev) })
	if x.cq, err = dev.CreateCQ(256); err != nil {
		e.t.Fatal(err)
	}
	x.cq.SetHandler(x.poll)
	qc.SendCQ, qc.RecvCQ = x.cq, x.cq
	if x.qp, err = dev.CreateUDQP(qc); err != nil {
		e.t.Fatal(err)
	}
	// Only one MAD port per host port: later endpoints go without.
	if x.mad, err = dev.OpenMADPort(qc.Port); err == nil {
		x.mad.SetHandler(func(src ib.MADAddress, b []byte) {
			x.mads = append(x.mads, madRx{src, append([]byte(nil), b...)})
		})
	} else if !errors.Is(err, ErrPortInUse) {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { dev.Close() })
	return x
}

// poll drains the CQ, copying receives and reposting their buffers.
func (x *ep) poll() {
	for {
		n, err := x.cq.Poll(x.wcs[:])
		if err != nil {
			x.t.Error(err)
			return
		}
		for _, wc := range x.wcs[:n] {
			if wc.Kind == ib.WorkSend {
				x.sends = append(x.sends, wc)
				continue
			}
			r := rx{wc: wc}
			if wc.Status == ib.StatusSuccess {
				r.grh = append([]byte(nil), wc.Buf[:ib.GRHSize]...)
				r.payload = append([]byte(nil), wc.Payload()...)
			}
			x.recv = append(x.recv, r)
			if wc.Status != ib.StatusFlushed {
				if err := x.qp.RepostRecv(wc.ID); err != nil {
					x.t.Error(err)
				}
			}
		}
		if n < len(x.wcs) {
			return
		}
	}
}

// attr returns the current attributes of port 1.
func (x *ep) attr() ib.PortAttr {
	a, err := x.dev.QueryPort(1)
	if err != nil {
		x.t.Fatal(err)
	}
	return a
}

// gid returns the port's default GID.
func (x *ep) gid() ib.GID { return x.attr().GIDs[0] }

// send posts one datagram to av / qpn with qkey.
func (x *ep) send(av ib.AddressVector, qpn ib.QPN, qkey ib.QKey, payload ...[]byte) {
	x.t.Helper()
	ah, err := x.dev.CreateAH(av)
	if err != nil {
		x.t.Fatal(err)
	}
	wr := []ib.SendWR{{ID: uint64(len(x.sends)) + 1000, AH: ah, RemoteQPN: qpn, RemoteQKey: qkey, Data: payload}}
	if n, err := x.qp.PostSend(wr); n != 1 || err != nil {
		x.t.Fatalf("PostSend = %d, %v", n, err)
	}
}

// saRequest sends an SA request from x's MAD port to the SM and returns
// the TID; the answer shows up in x.mads after the loop runs.
func (x *ep) saRequest(method ib.Method, attr ib.AttributeID, mask ib.ComponentMask, rec interface{ Encode([]byte) error }) uint64 {
	x.t.Helper()
	x.tid++
	var m ib.SAMAD
	m.InitRequest(method, attr, x.tid, mask)
	if err := rec.Encode(m.Data[:]); err != nil {
		x.t.Fatal(err)
	}
	var b [ib.MADLen]byte
	if err := m.Encode(b[:]); err != nil {
		x.t.Fatal(err)
	}
	a := x.attr()
	if err := x.mad.Send(ib.MADAddress{LID: a.SMLID, QPN: ib.QPNGSI, QKey: ib.QKeyGSI}, b[:]); err != nil {
		x.t.Fatal(err)
	}
	return x.tid
}

// answer returns the decoded answer to tid, failing the test if none came.
func (x *ep) answer(tid uint64) ib.SAMAD {
	x.t.Helper()
	for _, r := range x.mads {
		var m ib.SAMAD
		if err := m.Decode(r.mad); err != nil {
			x.t.Fatalf("SA answer does not decode: %v", err)
		}
		if m.TransactionID == tid {
			return m
		}
	}
	x.t.Fatalf("no SA answer for TID %#x (have %d MADs)", tid, len(x.mads))
	return ib.SAMAD{}
}

// hasAnswer reports whether an answer to tid arrived.
func (x *ep) hasAnswer(tid uint64) bool {
	for _, r := range x.mads {
		var m ib.SAMAD
		if m.Decode(r.mad) == nil && m.TransactionID == tid {
			return true
		}
	}
	return false
}

// ask sends x's SA request, lets the fabric answer it and returns the
// answer.
func (e *env) ask(x *ep, method ib.Method, attr ib.AttributeID, mask ib.ComponentMask, rec interface{ Encode([]byte) error }) ib.SAMAD {
	e.t.Helper()
	tid := x.saRequest(method, attr, mask, rec)
	e.settle()
	return x.answer(tid)
}

// askRecord is ask for an answer that carries a record of type T: it
// returns the record, decoded, and the answer's status.
func askRecord[T any, P interface {
	*T
	Decode([]byte) error
}](e *env, x *ep, method ib.Method, attr ib.AttributeID, mask ib.ComponentMask, rec interface{ Encode([]byte) error }) (T, ib.MADStatus) {
	e.t.Helper()
	m := e.ask(x, method, attr, mask, rec)
	var r T
	if err := P(&r).Decode(m.Data[:]); err != nil {
		e.t.Fatal(err)
	}
	return r, m.Status
}

// path asks the SA for the path to dgid and returns the record.
func (e *env) path(x *ep, dgid ib.GID) (ib.PathRecord, ib.MADStatus) {
	e.t.Helper()
	q, mask := ib.PathQueryByGID(x.gid(), dgid, ib.PKeyDefault)
	return askRecord[ib.PathRecord](e, x, ib.MethodGet, ib.SAAttrPathRecord, mask, &q)
}

// createJoin is the join IPoIB sends for the broadcast group when it may
// have to create it: every component OpenSM wants for creation.
func createJoin(mgid, port ib.GID, pkey ib.PKey, qkey ib.QKey) (ib.MCMemberRecord, ib.ComponentMask) {
	r := ib.MCMemberRecord{
		MGID: mgid, PortGID: port, QKey: qkey, PKey: pkey,
		MTUSelector: ib.SelectorExactly, MTU: ib.MTU2048,
		RateSelector: ib.SelectorExactly, Rate: ib.Rate10Gbps,
		JoinState: ib.JoinFullMember, Scope: ib.MGIDScopeLinkLocal,
	}
	return r, ib.MCMemberCompMGID | ib.MCMemberCompPortGID | ib.MCMemberCompQKey |
		ib.MCMemberCompPKey | ib.MCMemberCompMTUSelector | ib.MCMemberCompMTU |
		ib.MCMemberCompRateSelector | ib.MCMemberCompRate | ib.MCMemberCompSL |
		ib.MCMemberCompFlowLabel | ib.MCMemberCompTClass | ib.MCMemberCompJoinState
}

// join sends an MCMemberRecord Set and returns the answer.
func (e *env) join(x *ep, r ib.MCMemberRecord, mask ib.ComponentMask) (ib.MCMemberRecord, ib.MADStatus) {
	e.t.Helper()
	return askRecord[ib.MCMemberRecord](e, x, ib.MethodSet, ib.SAAttrMCMemberRecord, mask, &r)
}

// broadcastMGID is IPoIB's IPv4 broadcast group on the default partition
// (RFC 4391 section 4): ff12:401b:ffff::ffff:ffff.
var broadcastMGID = mustGID("ff12:401b:ffff::ffff:ffff")

func mustGID(s string) ib.GID {
	g, err := ib.ParseGID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// inject puts a raw frame on the wire at port num of h, as if h had sent
// it.
func (e *env) inject(h *Host, num int, frame []byte) {
	fr := e.f.dp.get()
	fr.buf = append(fr.buf[:0], frame...)
	fr.src = h.ports[num]
	e.f.dp.queue(fr)
	e.settle()
}

// unicastAV addresses a host by LID, without a GRH.
func unicastAV(lid ib.LID) ib.AddressVector {
	return ib.AddressVector{Port: 1, DLID: lid}
}

// mcastAV addresses a group.
func mcastAV(mgid ib.GID, mlid ib.LID) ib.AddressVector {
	return ib.AddressVector{Port: 1, DLID: mlid, GlobalRoute: true, DGID: mgid}
}

// captureHosts builds, on e's empty fabric, the subnet of the real-HCA
// capture (../shared/captures, copied to testdata): host a at LID 4 with
// the captured port GUID, host b at LID 2 (with port GUID bGUID, or a
// generated one when zero), both cabled to a switch at LID 1; then starts
// the SM.
func captureHosts(t *testing.T, e *env, bGUID ib.GUID) (a, b *Host) {
	t.Helper()
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{LID: 1})
	a, _ = e.f.AddHost("a", HostConfig{PortGUIDs: []ib.GUID{0x0002c9020024f636}, LIDs: []ib.LID{4}})
	bcfg := HostConfig{LIDs: []ib.LID{2}}
	if bGUID != 0 {
		bcfg.PortGUIDs = []ib.GUID{bGUID}
	}
	b, _ = e.f.AddHost("b", bcfg)
	for _, h := range []*Host{a, b} {
		if _, err := e.f.Connect(h, sw, CableConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	return a, b
}
