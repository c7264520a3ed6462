package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/drivertest"
)

func TestDriver(t *testing.T) {
	e := newEnv(t, Config{Name: "drvtest"})
	e.star(2, HostConfig{})
	d, err := ib.LookupDriver(DriverName)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := d.Probe()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, dv := range devs {
		if dv.Driver != DriverName {
			t.Errorf("%s reported by driver %q", dv.Name, dv.Driver)
		}
		names = append(names, dv.Name)
	}
	for _, want := range []string{"drvtest/host0", "drvtest/host1"} {
		i := slices.Index(names, want)
		if i < 0 {
			t.Fatalf("probe lists %v, missing %s", names, want)
		}
		if p := devs[i].Ports; len(p) != 1 || p[0].State != ib.PortActive || p[0].LID == 0 {
			t.Errorf("%s ports %+v", want, p)
		}
	}
	dev, err := ib.Open(e.loop, DriverName, "drvtest/host1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.Name() != "drvtest/host1" || dev.Driver() != DriverName || dev.NumPorts() != 1 || dev.Loop() != e.loop {
		t.Errorf("device %s driver %s ports %d", dev.Name(), dev.Driver(), dev.NumPorts())
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); !errors.Is(err, ib.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	for _, bad := range []string{"drvtest/nohost", "nofabric/host0", "host0", "/"} {
		if _, err := ib.Open(e.loop, DriverName, bad); !errors.Is(err, ib.ErrNoDevice) {
			t.Errorf("open %q: %v, want ErrNoDevice", bad, err)
		}
	}
	if _, err := New(e.loop, Config{Name: "drvtest"}); !errors.Is(err, ErrExists) {
		t.Errorf("second fabric of the same name: %v", err)
	}
	e.f.Close()
	devs, _ = d.Probe()
	for _, dv := range devs {
		if dv.Name == "drvtest/host0" {
			t.Error("closed fabric still probed")
		}
	}
}

func TestTreeRouting(t *testing.T) {
	clock := aio.NewManualClock(testEpoch)
	loop, _ := aio.New(aio.WithClock(clock))
	t.Cleanup(func() { loop.Close() })
	t.Cleanup(loop.Acquire())
	f, hosts, err := Tree(loop, Config{Name: fmt.Sprintf("tree%d", fabricSeq.Add(1))}, TreeConfig{Leaves: 4, HostsPerLeaf: 3, Spines: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	e := &env{t: t, loop: loop, clock: clock, f: f}
	for _, a := range hosts {
		for _, b := range hosts {
			dst, mtu, _, ok := f.route(a.ports[1], b.ports[1].lid)
			if !ok || dst != b.ports[1] || mtu != DefaultMTU {
				t.Fatalf("route %s -> %s: %v %v %v", a.name, b.name, dst, mtu, ok)
			}
		}
	}
	// Routes between leaves go up one spine and down: three switches.
	hops := 0
	at := hosts[0].ports[1]
	for {
		q := at.peer()
		if !q.node.isSwitch {
			break
		}
		hops++
		at = q.node.ports[q.node.lft[hosts[11].ports[1].lid]]
	}
	if hops != 3 {
		t.Errorf("host0 to host11 crosses %d switches, want 3", hops)
	}
	eps := make([]*ep, len(hosts))
	var mlid ib.LID
	for i, h := range hosts {
		eps[i] = e.open(h, 9)
		r, m := createJoin(broadcastMGID, eps[i].gid(), ib.PKeyDefault, 9)
		g, st := e.join(eps[i], r, m)
		if st != 0 {
			t.Fatal(st)
		}
		mlid = g.MLID
		eps[i].qp.AttachMcast(broadcastMGID, mlid)
	}
	eps[5].send(mcastAV(broadcastMGID, mlid), ib.QPNMulticast, 9, []byte("fan out"))
	e.settle()
	for i, x := range eps {
		if len(x.recv) != 1 || string(x.recv[0].payload) != "fan out" || x.recv[0].wc.SrcQPN != eps[5].qp.QPN() {
			t.Errorf("host%d received %d copies", i, len(x.recv))
		}
	}
	if c := f.Counters(); c.TotalDrops() != 0 {
		t.Errorf("drops %v", c)
	}
}

// onLoop runs fn on loop and waits for it.
func onLoop(loop *aio.Context, fn func()) {
	if err := loop.Call("test", fn); err != nil {
		panic(err) // a test that calls into a closed loop is broken
	}
}

// TestCrossLoop runs the fabric and two devices on three loops, each on its
// own goroutine, and plays ping-pong through the SA and the data path.
// Under -race it checks the locking between the loops.
func TestCrossLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	loops := make([]*aio.Context, 3)
	for i := range loops {
		l, err := aio.New(aio.WithName(fmt.Sprintf("loop%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		loops[i] = l
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx) }()
	}
	defer func() {
		cancel()
		wg.Wait()
		for _, l := range loops {
			l.Close()
		}
	}()
	fl, la, lb := loops[0], loops[1], loops[2]
	var f *Fabric
	var hosts []*Host
	var err error
	onLoop(fl, func() { f, hosts, err = Star(fl, Config{Name: fmt.Sprintf("cross%d", fabricSeq.Add(1))}, 2) })
	if err != nil {
		t.Fatal(err)
	}
	defer onLoop(fl, func() { f.Close() })

	const rounds = 200
	type side struct {
		dev  ib.Device
		cq   ib.CompletionQueue
		qp   ib.QueuePair
		ah   ib.AddressHandle
		peer ib.QPN
		wcs  [8]ib.Completion
	}
	var a, b side
	var pongs atomic.Int32
	done := make(chan struct{})
	open := func(loop *aio.Context, h *Host, s *side, onRecv func(s *side, wc *ib.Completion)) {
		onLoop(loop, func() {
			dev, err := h.Open(loop)
			if err != nil {
				t.Error(err)
				return
			}
			s.dev = dev
			s.cq, _ = dev.CreateCQ(64)
			s.qp, err = dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: 5, SendCQ: s.cq, RecvCQ: s.cq, SendDepth: 16, RecvDepth: 16, RecvBufSize: 256})
			if err != nil {
				t.Error(err)
				return
			}
			s.cq.SetHandler(func() {
				for {
					n, _ := s.cq.Poll(s.wcs[:])
					for i := range s.wcs[:n] {
						if wc := &s.wcs[i]; wc.Kind == ib.WorkRecv {
							onRecv(s, wc)
							s.qp.RepostRecv(wc.ID)
						}
					}
					if n < len(s.wcs) {
						return
					}
				}
			})
		})
	}
	send := func(s *side, payload []byte) {
		if _, err := s.qp.PostSend([]ib.SendWR{{AH: s.ah, RemoteQPN: s.peer, RemoteQKey: 5, Data: [][]byte{payload}}}); err != nil {
			t.Error(err)
		}
	}
	open(la, hosts[0], &a, func(s *side, wc *ib.Completion) {
		if n := pongs.Add(1); n == rounds {
			close(done)
		} else if n < rounds {
			send(s, wc.Payload())
		}
	})
	open(lb, hosts[1], &b, func(s *side, wc *ib.Completion) { send(s, wc.Payload()) })

	// a resolves b's LID through the SA from its own loop.
	var path ib.PathRecord
	pathDone := make(chan error, 1)
	onLoop(la, func() {
		mp, err := a.dev.OpenMADPort(1)
		if err != nil {
			pathDone <- err
			return
		}
		attr, _ := a.dev.QueryPort(1)
		c, err := ib.NewSAClient(la, mp, attr, ib.SAClientConfig{})
		if err != nil {
			pathDone <- err
			return
		}
		peer, _ := hosts[1].Port(1)
		q, m := ib.PathQueryByGID(attr.GIDs[0], peer.GIDs[0], ib.PKeyDefault)
		c.GetPathRecord(q, m, func(r ib.PathRecord, err error) { path = r; pathDone <- err })
	})
	select {
	case err := <-pathDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no path answer")
	}
	onLoop(la, func() {
		a.peer = b.qp.QPN()
		a.ah, _ = a.dev.CreateAH(ib.AddressVector{Port: 1, DLID: path.DLID})
	})
	onLoop(lb, func() {
		b.peer = a.qp.QPN()
		b.ah, _ = b.dev.CreateAH(ib.AddressVector{Port: 1, DLID: path.SLID})
	})
	onLoop(la, func() { send(&a, []byte("ping")) })
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%d of %d round trips", pongs.Load(), rounds)
	}
	onLoop(la, func() { a.dev.Close() })
	onLoop(lb, func() { b.dev.Close() })
	if c := f.Counters(); c.TotalDrops() != 0 || c.Delivered < 2*rounds {
		t.Errorf("counters %v", c)
	}
}

// TestNoAllocs checks that a warmed-up data path allocates nothing per
// packet: PostSend, the fabric's bottom half, delivery, the CQ bottom half
// and Poll.
func TestNoAllocs(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(2, HostConfig{})
	send, sendAH, recv := leanQP(t, e, hosts[0]), ib.AddressHandle(nil), leanQP(t, e, hosts[1])
	attr, _ := hosts[1].Port(1)
	sendAH, _ = send.dev.CreateAH(ib.AddressVector{Port: 1, DLID: attr.LID})
	wr := []ib.SendWR{{AH: sendAH, RemoteQPN: recv.qp.QPN(), RemoteQKey: 3, Data: [][]byte{make([]byte, 1024)}}}
	step := func() {
		if _, err := send.qp.PostSend(wr); err != nil {
			t.Fatal(err)
		}
		for e.loop.Poll(false) {
		}
	}
	for range 10 {
		step()
	}
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
	if recv.got.Load() < 210 || send.sent.Load() < 210 {
		t.Errorf("received %d, sent %d", recv.got.Load(), send.sent.Load())
	}
}

// lean is an endpoint whose handler only counts, so it allocates nothing.
type lean struct {
	dev        ib.Device
	cq         ib.CompletionQueue
	qp         ib.QueuePair
	wcs        [16]ib.Completion
	ids        [16]uint64
	got, sent  atomic.Int64
	lastStatus ib.Status
}

func leanQP(t testing.TB, e *env, h *Host) *lean {
	x := &lean{}
	var err error
	if x.dev, err = h.Open(e.loop); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.dev.Close() })
	x.cq, _ = x.dev.CreateCQ(256)
	x.qp, err = x.dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: 3, SendCQ: x.cq, RecvCQ: x.cq, SendDepth: 64, RecvDepth: 64, RecvBufSize: ib.GRHSize + 4096})
	if err != nil {
		t.Fatal(err)
	}
	x.cq.SetHandler(x.poll)
	return x
}

func (x *lean) poll() {
	for {
		n, _ := x.cq.Poll(x.wcs[:])
		ids := x.ids[:0]
		for i := range x.wcs[:n] {
			wc := &x.wcs[i]
			x.lastStatus = wc.Status
			if wc.Kind == ib.WorkRecv {
				x.got.Add(1)
				ids = append(ids, wc.ID)
			} else {
				x.sent.Add(1)
			}
		}
		// A reused slice: a variadic call through the interface would
		// allocate one per call.
		if len(ids) > 0 {
			x.qp.RepostRecv(ids...)
		}
		if n < len(x.wcs) {
			return
		}
	}
}

// TestPostSendRefusals holds PostSend to drivertest's check, with the
// simulator's own rule besides ib's: a multicast DLID goes to
// ib.QPNMulticast. A handle of another device of the same host is taken:
// the devices share the host's ports.
func TestPostSendRefusals(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(2, HostConfig{Ports: 2})
	a, b := e.open(hosts[0], 7), e.open(hosts[1], 7)
	bLID := b.attr().LID
	mkAH := func(dev ib.Device, av ib.AddressVector) ib.AddressHandle {
		t.Helper()
		ah, err := dev.CreateAH(av)
		if err != nil {
			t.Fatal(err)
		}
		return ah
	}
	sibling, err := hosts[0].Open(e.loop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sibling.Close() })
	destroyed := mkAH(a.dev, unicastAV(bLID))
	if err := destroyed.Destroy(); err != nil {
		t.Fatal(err)
	}
	to := ib.SendWR{ID: 1, AH: mkAH(a.dev, unicastAV(bLID)), RemoteQPN: b.qp.QPN(), RemoteQKey: 7, Data: [][]byte{[]byte("x")}}
	drivertest.PostSendRefusals(t, a.qp, to, []drivertest.Refusal{
		{Name: "handle of another device of this host", AH: mkAH(sibling, unicastAV(bLID)), QPN: to.RemoteQPN},
		{Name: "no handle", QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "handle of another host", AH: mkAH(b.dev, unicastAV(a.attr().LID)), QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "destroyed handle", AH: destroyed, QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "handle for port 2", AH: mkAH(a.dev, ib.AddressVector{Port: 2, DLID: bLID}), QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "QPN past 24 bits", AH: to.AH, QPN: ib.QPNMask + 1, Want: ErrInvalidWR},
		{Name: "multicast DLID to a unicast QPN", AH: mkAH(a.dev, mcastAV(broadcastMGID, 0xC000)), QPN: to.RemoteQPN, Want: ErrInvalidWR},
	}, e.settle)
}
