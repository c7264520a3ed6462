package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
)

// pair is two hosts on a star with their endpoints, b reachable from a.
type pair struct {
	e    *env
	a, b *ep
}

func newPair(t *testing.T, cfg Config, ha, hb HostConfig) *pair {
	e := newEnv(t, cfg)
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{})
	a, _ := e.f.AddHost("a", ha)
	b, _ := e.f.AddHost("b", hb)
	for _, h := range []*Host{a, b} {
		if _, err := e.f.Connect(h, sw, CableConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	return &pair{e: e, a: e.open(a, 7), b: e.open(b, 7)}
}

// seqs sends n numbered datagrams from a to b.
func (p *pair) seqs(n int) {
	lid := p.b.attr().LID
	for i := range n {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(i))
		p.a.send(unicastAV(lid), p.b.qp.QPN(), 7, b[:])
	}
}

// got returns the sequence numbers b received, in order.
func (p *pair) got() []int {
	var out []int
	for _, r := range p.b.recv {
		if len(r.payload) == 4 {
			out = append(out, int(binary.BigEndian.Uint32(r.payload)))
		}
	}
	return out
}

func TestDrops(t *testing.T) {
	big := make([]byte, 3000)
	tests := []struct {
		name   string
		ha, hb HostConfig
		link   ib.MTU // MTU of b's link, 0 for the default
		act    func(p *pair)
		reason DropReason
		// status is what a's send completes with.
		status ib.Status
		// recvStatus, if set, is the error completion b gets.
		recvStatus ib.Status
	}{
		{name: "wrong Q_Key", reason: DropQKey, act: func(p *pair) {
			p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 8, []byte("x"))
		}},
		{name: "controlled Q_Key is replaced by the QP's", reason: DropQKey, act: func(p *pair) {
			p.b.qp.SetQKey(ib.QKeyGSI)
			p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), ib.QKeyGSI, []byte("x"))
		}},
		{name: "P_Key not in the table", ha: HostConfig{PKeys: []ib.PKey{0x8001, ib.PKeyDefault}}, reason: DropPKey,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 7, []byte("x")) }},
		{name: "P_Key not the QP's partition", hb: HostConfig{PKeys: []ib.PKey{0x8001, ib.PKeyDefault}}, reason: DropPKey,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 7, []byte("x")) }},
		{name: "two limited members", ha: HostConfig{PKeys: []ib.PKey{0x7FFF}}, hb: HostConfig{PKeys: []ib.PKey{0x7FFF}}, reason: DropPKey,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 7, []byte("x")) }},
		{name: "no such QP", reason: DropNoQP,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN()+100, 7, []byte("x")) }},
		{name: "no route", reason: DropNoRoute,
			act: func(p *pair) { p.a.send(unicastAV(0x999), 0x500, 7, []byte("x")) }},
		{name: "payload above the port MTU", ha: HostConfig{MTU: ib.MTU2048}, reason: DropSendLength, status: ib.StatusLocalLength,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 7, big) }},
		{name: "payload above a link MTU", link: ib.MTU2048, reason: DropOversize,
			act: func(p *pair) { p.a.send(unicastAV(p.b.attr().LID), p.b.qp.QPN(), 7, big) }},
		{name: "receive buffer too small", reason: DropRecvLength, recvStatus: ib.StatusLocalLength,
			act: func(p *pair) {
				x := p.e.openQP(p.b.h, ib.QPConfig{Port: 1, QKey: 7, SendDepth: 1, RecvDepth: 1, RecvBufSize: ib.GRHSize + 8})
				p.b = x
				p.a.send(unicastAV(p.b.attr().LID), x.qp.QPN(), 7, []byte("more than eight bytes"))
			}},
		{name: "no receive buffer", reason: DropNoRecvBuffer,
			act: func(p *pair) {
				x := p.e.openQP(p.b.h, ib.QPConfig{Port: 1, QKey: 7, SendDepth: 1, RecvDepth: 1, RecvBufSize: 64})
				x.cq.SetHandler(nil) // nobody reposts
				p.a.send(unicastAV(p.b.attr().LID), x.qp.QPN(), 7, []byte("1"))
				p.a.send(unicastAV(p.b.attr().LID), x.qp.QPN(), 7, []byte("2"))
			}},
		{name: "bad ICRC", reason: DropBadCRC, status: ib.Status(255),
			act: func(p *pair) {
				var pkt ib.Packet
				pkt.LRH.DLID, pkt.LRH.SLID = p.b.attr().LID, p.a.attr().LID
				pkt.BTH = ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: p.b.qp.QPN()}
				pkt.DETH = ib.DETH{QKey: 7, SrcQP: p.a.qp.QPN()}
				pkt.Payload = []byte("corrupt me")
				frame, _ := pkt.AppendTo(nil)
				frame[len(frame)-10] ^= 1
				// Fix the VCRC so only the ICRC is wrong.
				n := len(frame) - ib.VCRCLen
				binary.LittleEndian.PutUint16(frame[n:], ib.VCRC(frame[:n]))
				p.e.inject(p.a.h, 1, frame)
			}},
		{name: "multicast to an unattached port", reason: DropNoQP,
			act: func(p *pair) {
				r, m := createJoin(broadcastMGID, p.a.gid(), ib.PKeyDefault, 7)
				g, _ := p.e.join(p.a, r, m)
				r.PortGID = p.b.gid()
				p.e.join(p.b, r, m)
				p.a.send(mcastAV(broadcastMGID, g.MLID), ib.QPNMulticast, 7, []byte("x"))
			}},
	}
	for _, tc := range tests {
		func() {
			t := &prefixT{t, tc.name}
			p := newPair(t.T, Config{}, tc.ha, tc.hb)
			if tc.link != 0 {
				p.e.f.SetLinkUp(p.b.h.Cable(1), false)
				p.b.h.ports[1].link.mtu = tc.link
				p.e.f.SetLinkUp(p.b.h.Cable(1), true)
			}
			tc.act(p)
			p.e.settle()
			c := p.e.f.Counters()
			if c.Dropped(tc.reason) != 1 || c.TotalDrops() != 1 {
				t.Errorf("counters %v, want exactly one %v", c, tc.reason)
			}
			hc := p.b.h.Counters()
			if tc.reason == DropSendLength || tc.reason == DropOversize || tc.reason == DropNoRoute {
				hc = p.a.h.Counters()
			}
			if hc.Dropped(tc.reason) != 1 {
				t.Errorf("host counters %v, want one %v", hc, tc.reason)
			}
			if tc.status != 255 {
				if len(p.a.sends) == 0 || slices.ContainsFunc(p.a.sends, func(c ib.Completion) bool { return c.Status != tc.status }) {
					t.Errorf("send completions %+v, want %v", p.a.sends, tc.status)
				}
			}
			if tc.recvStatus != 0 {
				if len(p.b.recv) != 1 || p.b.recv[0].wc.Status != tc.recvStatus {
					t.Errorf("receive completions %+v, want one %v", p.b.recv, tc.recvStatus)
				}
			} else if tc.reason != DropNoRecvBuffer && len(p.b.recv) != 0 {
				t.Errorf("b received %d datagrams, want none", len(p.b.recv))
			}
		}()
	}
}

func TestFaultLoss(t *testing.T) {
	run := func(seed uint64, loss float64) ([]int, Counters) {
		p := newPair(t, Config{Seed: seed}, HostConfig{}, HostConfig{})
		if err := p.e.f.SetFaults(Faults{Loss: loss}); err != nil {
			t.Fatal(err)
		}
		p.seqs(50)
		p.e.settle()
		return p.got(), p.e.f.Counters()
	}
	all, c := run(1, 1)
	if len(all) != 0 || c.Dropped(DropLoss) != 50 {
		t.Errorf("loss 1: received %v, counters %v", all, c)
	}
	x, c := run(42, 0.5)
	y, _ := run(42, 0.5)
	z, _ := run(43, 0.5)
	if !slices.Equal(x, y) {
		t.Errorf("same seed, different losses:\n%v\n%v", x, y)
	}
	if slices.Equal(x, z) {
		t.Errorf("seeds 42 and 43 lost the same packets: %v", x)
	}
	if n := len(x); n < 10 || n > 40 || c.Dropped(DropLoss) != uint64(50-n) {
		t.Errorf("loss 0.5 delivered %d of 50, counters %v", n, c)
	}
}

func TestFaultDuplicate(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	p.e.f.SetFaults(Faults{Duplicate: 1})
	p.seqs(3)
	p.e.settle()
	if got := p.got(); !slices.Equal(got, []int{0, 0, 1, 1, 2, 2}) {
		t.Errorf("received %v", got)
	}
	if c := p.e.f.Counters(); c.Duplicated != 3 || c.Sent != 3 {
		t.Errorf("counters %v", c)
	}
}

func TestFaultReorder(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	p.e.f.SetFaults(Faults{Reorder: 1})
	p.seqs(2)
	p.e.settle()
	if got := p.got(); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("received %v, want the second first", got)
	}
	// A held packet nothing overtakes goes out after ReorderHold.
	p.b.recv = nil
	p.seqs(1)
	p.e.settle()
	if got := p.got(); len(got) != 0 {
		t.Errorf("received %v before the hold ran out", got)
	}
	p.e.advance(ReorderHold)
	if got := p.got(); !slices.Equal(got, []int{0}) {
		t.Errorf("received %v after the hold", got)
	}
}

func TestFaultDelay(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	p.e.f.SetFaults(Faults{Delay: 10 * time.Millisecond})
	p.seqs(2)
	p.e.settle()
	if len(p.a.sends) != 2 || len(p.got()) != 0 {
		t.Fatalf("before the delay: %d sends completed, %d received", len(p.a.sends), len(p.got()))
	}
	p.e.advance(9 * time.Millisecond)
	if len(p.got()) != 0 {
		t.Fatal("delivered early")
	}
	p.e.advance(time.Millisecond)
	if got := p.got(); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("received %v after the delay", got)
	}
}

func TestFaultJitter(t *testing.T) {
	run := func(seed uint64) []int {
		p := newPair(t, Config{Seed: seed}, HostConfig{}, HostConfig{})
		p.e.f.SetFaults(Faults{Delay: time.Millisecond, Jitter: time.Millisecond})
		p.seqs(20)
		p.e.settle()
		p.e.advance(time.Millisecond - 1)
		if n := len(p.got()); n != 0 {
			t.Errorf("%d delivered before the fixed delay", n)
		}
		p.e.advance(time.Millisecond)
		if c := p.e.f.Counters(); c.Delayed != 20 {
			t.Errorf("counters %v", c)
		}
		return p.got()
	}
	x, y := run(7), run(7)
	if len(x) != 20 || !slices.Equal(x, y) {
		t.Errorf("same seed, different orders:\n%v\n%v", x, y)
	}
	if slices.IsSorted(x) {
		t.Errorf("jitter of a whole delay kept 20 packets in order: %v", x)
	}
	if err := (&Fabric{}).fi.cfg.validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []Faults{{Loss: -0.1}, {Duplicate: 1.5}, {Delay: -1}, {Jitter: -1}} {
		if bad.validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestLinkDownUp(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	e := p.e
	r, m := createJoin(broadcastMGID, p.b.gid(), ib.PKeyDefault, 7)
	e.join(p.b, r, m)
	lid := p.b.attr().LID
	if err := p.b.h.SetLinkUp(1, false); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if a := p.b.attr(); a.State != ib.PortDown || !slices.Contains(p.b.events, ib.Event{Type: ib.EventPortDown, Port: 1}) {
		t.Fatalf("after link down: state %v, events %v", a.State, p.b.events)
	}
	if len(e.f.Groups()) != 0 {
		t.Errorf("the SM kept the membership of a port that went down: %+v", e.f.Groups())
	}
	// The SM re-routed: the switch has no entry for b any more.
	p.seqs(1)
	e.settle()
	if c := e.f.Counters(); c.Dropped(DropNoRoute) != 1 {
		t.Errorf("send to a downed host: %v", c)
	}
	// b's own sends go nowhere.
	p.b.send(unicastAV(p.a.attr().LID), p.a.qp.QPN(), 7, []byte("x"))
	e.settle()
	if c := e.f.Counters(); c.Dropped(DropPortNotActive) != 1 {
		t.Errorf("send from a downed port: %v", c)
	}
	p.b.events = nil
	if err := p.b.h.SetLinkUp(1, true); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if a := p.b.attr(); a.State != ib.PortActive || a.LID != lid || !slices.Equal(p.b.events, []ib.Event{{Type: ib.EventPortActive, Port: 1}}) {
		t.Fatalf("after link up: %v LID %v events %v", a.State, a.LID, p.b.events)
	}
	p.seqs(1)
	e.settle()
	if got := p.got(); !slices.Equal(got, []int{0}) {
		t.Errorf("after link up received %v", got)
	}
	// With the SM down nobody re-routes: the packet dies on the link.
	e.f.SetSMUp(false)
	p.b.h.SetLinkUp(1, false)
	p.seqs(1)
	e.settle()
	if c := e.f.Counters(); c.Dropped(DropLinkDown) != 1 {
		t.Errorf("link down with the SM down: %v", c)
	}
	p.b.h.SetLinkUp(1, true)
	e.settle()
	if a := p.b.attr(); a.State != ib.PortInit {
		t.Errorf("link up with no SM: %v, want INIT", a.State)
	}
}

// TestFailDevices: a device failed as a whole raises port-down and then
// device-fatal, sends nothing, receives nothing and refuses control
// calls, yet closes; a device opened on the host afterwards works.
func TestFailDevices(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	e := p.e
	ah, err := p.b.dev.CreateAH(unicastAV(p.a.attr().LID))
	if err != nil {
		t.Fatal(err)
	}
	lidB := p.b.attr().LID
	if n := p.b.h.FailDevices(); n != 1 {
		t.Fatalf("FailDevices = %d, want 1 device", n)
	}
	e.settle()
	want := []ib.Event{{Type: ib.EventPortDown, Port: 1}, {Type: ib.EventDeviceFatal}}
	if !slices.Equal(p.b.events, want) {
		t.Errorf("events %v, want %v", p.b.events, want)
	}
	if _, err := p.b.dev.QueryPort(1); !errors.Is(err, ib.ErrDeviceFatal) {
		t.Errorf("QueryPort on a failed device: %v", err)
	}
	if _, err := p.b.dev.CreateCQ(4); !errors.Is(err, ib.ErrDeviceFatal) {
		t.Errorf("CreateCQ on a failed device: %v", err)
	}
	// Nothing lands on it, and it sends nothing.
	p.a.send(unicastAV(lidB), p.b.qp.QPN(), 7, []byte{0, 0, 0, 0})
	e.settle()
	if got := p.got(); len(got) != 0 {
		t.Errorf("a failed device received %v", got)
	}
	if c := e.f.Counters(); c.Dropped(DropNoQP) != 1 {
		t.Errorf("send to a failed device: %v", c)
	}
	wr := []ib.SendWR{{ID: 1, AH: ah, RemoteQPN: p.a.qp.QPN(), RemoteQKey: 7, Data: [][]byte{[]byte("x")}}}
	if _, err := p.b.qp.PostSend(wr); !errors.Is(err, ib.ErrDeviceFatal) {
		t.Errorf("PostSend on a failed device: %v", err)
	}
	if err := p.b.dev.Close(); err != nil {
		t.Fatalf("Close of a failed device: %v", err)
	}
	// The HCA was reset: a device opened on it again works.
	again := e.open(p.b.h, 7)
	p.b = again
	p.seqs(1)
	e.settle()
	if got := p.got(); !slices.Equal(got, []int{0}) {
		t.Errorf("the reopened device received %v", got)
	}
}

func TestSMDownUp(t *testing.T) {
	for _, keep := range []bool{false, true} {
		func() {
			t := &prefixT{t, fmt.Sprintf("keep groups %v", keep)}
			p := newPair(t.T, Config{KeepGroupsOnSMRestart: keep}, HostConfig{}, HostConfig{})
			e := p.e
			r, m := createJoin(broadcastMGID, p.a.gid(), ib.PKeyDefault, 7)
			g, _ := e.join(p.a, r, m)
			r.PortGID = p.b.gid()
			e.join(p.b, r, m)
			p.b.qp.AttachMcast(broadcastMGID, g.MLID)
			if err := e.f.SetSMUp(false); err != nil {
				t.Fatal(err)
			}
			q, qm := ib.PathQueryByGID(p.a.gid(), p.b.gid(), ib.PKeyDefault)
			tid := p.a.saRequest(ib.MethodGet, ib.SAAttrPathRecord, qm, &q)
			e.settle()
			if p.a.hasAnswer(tid) || e.f.Counters().Dropped(DropSMDown) != 1 {
				t.Errorf("SA answered while the SM was down: %v", e.f.Counters())
			}
			// Routes and groups keep working.
			p.seqs(1)
			p.a.send(mcastAV(broadcastMGID, g.MLID), ib.QPNMulticast, 7, []byte("mc"))
			e.settle()
			if len(p.b.recv) != 2 {
				t.Errorf("with the SM down b received %d datagrams, want 2", len(p.b.recv))
			}
			if err := e.f.SetSMUp(true); err != nil {
				t.Fatal(err)
			}
			e.settle()
			want := []ib.Event{{Type: ib.EventSMChange, Port: 1}, {Type: ib.EventClientReregister, Port: 1}}
			for _, x := range []*ep{p.a, p.b} {
				if !slices.Equal(x.events[len(x.events)-2:], want) {
					t.Errorf("%s events %v", x.h.name, x.events)
				}
			}
			if n := len(e.f.Groups()); keep && n != 1 || !keep && n != 0 {
				t.Errorf("%d groups after the restart", n)
			}
			if _, st := e.path(p.a, p.b.gid()); st != 0 {
				t.Errorf("path after the restart: %v", st)
			}
		}()
	}
}

func TestReassignLID(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	e := p.e
	old := p.b.attr().LID
	lid, err := p.b.h.ReassignLID(1, 0x77)
	if err != nil || lid != 0x77 {
		t.Fatalf("ReassignLID = %v, %v", lid, err)
	}
	e.settle()
	if a := p.b.attr(); a.LID != 0x77 || !slices.Contains(p.b.events, ib.Event{Type: ib.EventLIDChange, Port: 1}) {
		t.Errorf("LID %v events %v", a.LID, p.b.events)
	}
	if pr, st := e.path(p.a, p.b.gid()); st != 0 || pr.DLID != 0x77 {
		t.Errorf("path after the change: %v %+v", st, pr)
	}
	// The stale LID leads nowhere; the new one works.
	p.a.send(unicastAV(old), p.b.qp.QPN(), 7, []byte("stale"))
	p.a.send(unicastAV(0x77), p.b.qp.QPN(), 7, []byte("fresh"))
	e.settle()
	if len(p.b.recv) != 1 || string(p.b.recv[0].payload) != "fresh" || e.f.Counters().Dropped(DropNoRoute) != 1 {
		t.Errorf("received %+v, counters %v", p.b.recv, e.f.Counters())
	}
	if _, err := p.b.h.ReassignLID(1, p.a.attr().LID); err == nil {
		t.Error("took a LID in use")
	}
	if l, err := p.b.h.ReassignLID(1, 0); err != nil || l == 0x77 || l == p.a.attr().LID {
		t.Errorf("automatic reassignment: %v, %v", l, err)
	}
	e.f.SetSMUp(false)
	if _, err := p.b.h.ReassignLID(1, 0x99); err == nil {
		t.Error("reassigned with the SM down")
	}
}

func TestPKeyChange(t *testing.T) {
	p := newPair(t, Config{}, HostConfig{}, HostConfig{})
	if err := p.b.h.SetPKeys(1, []ib.PKey{ib.PKeyDefault, 0x8005}); err != nil {
		t.Fatal(err)
	}
	p.e.settle()
	if a := p.b.attr(); !slices.Equal(a.PKeys, []ib.PKey{ib.PKeyDefault, 0x8005}) ||
		!slices.Contains(p.b.events, ib.Event{Type: ib.EventPKeyChange, Port: 1}) {
		t.Errorf("P_Keys %v events %v", a.PKeys, p.b.events)
	}
}

func TestSMOnHost(t *testing.T) {
	p := newPair(t, Config{SMNode: "a"}, HostConfig{}, HostConfig{})
	e := p.e
	if a := p.b.attr(); a.SMLID != p.a.attr().LID || a.SMLID != 1 {
		t.Fatalf("SM LID %v, a's LID %v", a.SMLID, p.a.attr().LID)
	}
	// The SM's own host asks its own SA: the HCA turns the MAD around.
	if _, st := e.path(p.a, p.b.gid()); st != 0 {
		t.Errorf("path from the SM host: %v", st)
	}
	if _, err := p.a.h.ReassignLID(1, 0x50); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if a := p.b.attr(); a.SMLID != 0x50 || !slices.Contains(p.b.events, ib.Event{Type: ib.EventSMChange, Port: 1}) {
		t.Errorf("after the SM's LID moved: SM LID %v, events %v", a.SMLID, p.b.events)
	}
	if _, st := e.path(p.b, p.a.gid()); st != 0 {
		t.Errorf("path after the SM moved: %v", st)
	}
}

func TestLinkMTU(t *testing.T) {
	e := newEnv(t, Config{})
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{})
	a, _ := e.f.AddHost("a", HostConfig{})
	b, _ := e.f.AddHost("b", HostConfig{})
	e.f.Connect(a, sw, CableConfig{})
	e.f.Connect(b, sw, CableConfig{MTU: ib.MTU2048, Rate: ib.Rate40Gbps})
	e.f.Start()
	xa, xb := e.open(a, 1), e.open(b, 1)
	if m := xb.attr(); m.ActiveMTU != ib.MTU2048 || m.MaxMTU != ib.MTU4096 {
		t.Errorf("b's port: active MTU %v, max %v", m.ActiveMTU, m.MaxMTU)
	}
	pr, st := e.path(xa, xb.gid())
	if st != 0 || pr.MTU != ib.MTU2048 || pr.Rate != ib.Rate40Gbps {
		t.Errorf("path: %v MTU %v rate %v, want the slow link's", st, pr.MTU, pr.Rate)
	}
}

// TestFaultFlowsIndependent: a flow's draws do not depend on what other
// flows send in between, so hosts that interleave differently from run to
// run still see the same faults on each of their flows.
func TestFaultFlowsIndependent(t *testing.T) {
	frameTo := func(src ib.GUID, dlid ib.LID) *frame {
		buf := make([]byte, ib.LRHLen)
		buf[2], buf[3] = byte(dlid>>8), byte(dlid)
		return &frame{buf: buf, src: &port{guid: src}}
	}
	a, b := frameTo(0x11, 0x3), frameTo(0x22, 0x3)
	mcast := frameTo(0x11, 0xc000)
	draws := func(order string) map[string][]float64 {
		fi := &faultState{seed: 7, flows: map[flowKey]*rand.Rand{}}
		out := map[string][]float64{}
		for _, c := range order {
			fr := map[rune]*frame{'a': a, 'b': b, 'm': mcast}[c]
			out[string(c)] = append(out[string(c)], fi.flowRand(fr).Float64())
		}
		return out
	}
	x, y := draws("aaabbbmm"), draws("bmabamba")
	for _, k := range []string{"a", "b", "m"} {
		if !slices.Equal(x[k], y[k]) {
			t.Errorf("flow %s: draws %v alone, %v interleaved", k, x[k], y[k])
		}
	}
	if slices.Equal(x["a"], x["b"]) || slices.Equal(x["a"], x["m"]) {
		t.Errorf("distinct flows drew the same numbers: %v", x)
	}
}
