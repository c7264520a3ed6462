package stack

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/netdev"
)

// The test wire stands in for the IPoIB driver and the fabric: each port
// is a netdev device with the real ipoib link protocol on its own aio
// loop, and a frame one port transmits is copied, as the HCA would, into
// a receive buffer of every port its destination names (the matching
// QPN and GID, or all others for a multicast QPN) and received there on
// that port's loop.

const (
	testMTU        = 2044 // IB MTU 2048 less the IPoIB header
	testPKey       = ib.PKey(0xffff)
	testRxQueueLen = 4096
)

var testDevSeq atomic.Uint64

// testPollWindow is the loops' adaptive busy-polling bound (0: off).
var testPollWindow time.Duration

type testWire struct {
	mu    sync.Mutex
	ports []*testPort

	// oneLoop puts every port on one loop, as one process serving several
	// devices from one data-plane thread would.
	oneLoop bool
	shared  *sharedLoop
}

// sharedLoop is a running loop and its users.
type sharedLoop struct {
	loop  *aio.Context
	users int
	stop  context.CancelFunc
	done  chan struct{}
}

// loopFor returns a running loop for a new port.
func (w *testWire) loopFor(tb testing.TB, n int) *sharedLoop {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.oneLoop && w.shared != nil {
		w.shared.users++
		return w.shared
	}
	loop, err := aio.New(aio.WithName(fmt.Sprintf("wire%d", n)), aio.WithPolling(testPollWindow, 2, 2))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sl := &sharedLoop{loop: loop, users: 1, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(sl.done)
		_ = loop.Run(ctx)
	}()
	if w.oneLoop {
		w.shared = sl
	}
	return sl
}

// release stops the loop when its last port is gone.
func (w *testWire) release(sl *sharedLoop) {
	w.mu.Lock()
	sl.users--
	last := sl.users == 0
	if last && w.shared == sl {
		w.shared = nil
	}
	w.mu.Unlock()
	if last {
		sl.stop()
		<-sl.done
		_ = sl.loop.Close()
	}
}

type rxFrame struct {
	b        *netdev.Buffer
	src, dst ipoib.Addr
}

type testPort struct {
	w    *testWire
	loop *aio.Context
	dev  *netdev.Device
	link *ipoib.Link
	addr ipoib.Addr
	raw  []byte

	inMu    sync.Mutex
	inq     []rxFrame
	scratch []rxFrame
	rxBH    *aio.BH
	rxDrops atomic.Uint64

	txMu  sync.Mutex
	txDst [][]byte // destinations transmitted to, when recording
	txEnd [][]byte // the last 4 bytes of each frame transmitted, when recording

	recording atomic.Bool
	drop      atomic.Bool // lose everything this port sends

	gmu    sync.Mutex
	joined map[netip.Addr][]byte

	sl *sharedLoop
}

// newTestPort makes a device on a running loop, opened with its link up.
func newTestPort(tb testing.TB, w *testWire, n int) *testPort {
	tb.Helper()
	sl := w.loopFor(tb, n)
	loop := sl.loop
	cache := ipoib.NewPeerCache(loop)
	link, err := ipoib.NewProtocol(cache, testPKey)
	if err != nil {
		tb.Fatal(err)
	}
	p := &testPort{
		w:      w,
		loop:   loop,
		sl:     sl,
		link:   link,
		joined: make(map[netip.Addr][]byte),
		inq:    make([]rxFrame, 0, testRxQueueLen),
	}
	p.scratch = make([]rxFrame, 0, testRxQueueLen)
	p.addr = ipoib.Addr{QPN: ib.QPN(0x48 + n), GID: ib.GID{0xfe, 0x80, 14: byte(n >> 8), 15: byte(n)}}
	p.raw = make([]byte, ipoib.AddrLen)
	if err := p.addr.Encode(p.raw); err != nil {
		tb.Fatal(err)
	}
	p.dev, err = netdev.New(netdev.Config{
		Name:       fmt.Sprintf("stk%d", testDevSeq.Add(1)),
		Loop:       loop,
		Link:       link,
		HWAddr:     p.raw,
		MTU:        testMTU,
		Ops:        p,
		TxQueueLen: 256,
		Buffers:    testRxQueueLen + 512,
	})
	if err != nil {
		tb.Fatal(err)
	}
	p.rxBH = loop.NewBH("wire-rx", p.receiveAll)
	p.onLoop(tb, func() {
		if err := p.dev.Open(); err != nil {
			tb.Error(err)
		}
		p.dev.SetLinkUp()
	})
	w.mu.Lock()
	w.ports = append(w.ports, p)
	w.mu.Unlock()
	return p
}

// onLoop runs fn on the port's loop and waits for it.
func (p *testPort) onLoop(tb testing.TB, fn func()) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.loop.CallContext(ctx, "test", func() error { fn(); return nil }); err != nil {
		tb.Fatalf("loop did not run the callback: %v", err)
	}
}

// shutdown closes the device, stops the loop and unregisters the device.
func (p *testPort) shutdown(tb testing.TB) {
	p.onLoop(tb, func() { _ = p.dev.Close() })
	p.w.release(p.sl)
	_ = p.dev.Unregister()
	p.w.mu.Lock()
	for i, q := range p.w.ports {
		if q == p {
			p.w.ports = append(p.w.ports[:i], p.w.ports[i+1:]...)
			break
		}
	}
	p.w.mu.Unlock()
}

// Open implements netdev.Ops.
func (p *testPort) Open(*netdev.Device) error { return nil }

// Close implements netdev.Ops.
func (p *testPort) Close(*netdev.Device) error { return nil }

// Transmit implements netdev.Ops: the frame goes on the wire at once.
func (p *testPort) Transmit(d *netdev.Device, b *netdev.Buffer) error {
	peer, err := p.link.Cache().TakeTx(b)
	if err != nil {
		return err
	}
	dst := peer.Addr()
	if p.recording.Load() {
		p.txMu.Lock()
		p.txDst = append(p.txDst, append([]byte(nil), peer.HWAddr()...))
		if f := b.Bytes(); len(f) >= 4 {
			p.txEnd = append(p.txEnd, append([]byte(nil), f[len(f)-4:]...))
		}
		p.txMu.Unlock()
	}
	if !p.drop.Load() {
		p.w.deliver(p.addr, dst, b.Bytes())
	}
	return d.TxComplete(b, nil)
}

// deliver copies frame to the ports dst names.
func (w *testWire) deliver(src, dst ipoib.Addr, frame []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range w.ports {
		if q.addr == src {
			continue
		}
		if dst.IsMulticast() || (dst.QPN == q.addr.QPN && dst.GID == q.addr.GID) {
			q.enqueue(src, dst, frame)
		}
	}
}

// enqueue copies frame into a receive buffer of q and has its loop
// receive it.
func (q *testPort) enqueue(src, dst ipoib.Addr, frame []byte) {
	b, err := q.dev.AllocBuffer()
	if err != nil {
		q.rxDrops.Add(1)
		return
	}
	if b.Reset(0) != nil || b.Append(frame) != nil {
		b.Free()
		q.rxDrops.Add(1)
		return
	}
	q.inMu.Lock()
	if len(q.inq) == cap(q.inq) {
		q.inMu.Unlock()
		b.Free()
		q.rxDrops.Add(1)
		return
	}
	q.inq = append(q.inq, rxFrame{b: b, src: src, dst: dst})
	q.inMu.Unlock()
	q.rxBH.Schedule()
}

// receiveAll is the port's receive bottom half.
func (q *testPort) receiveAll() {
	q.inMu.Lock()
	q.inq, q.scratch = q.scratch[:0], q.inq
	q.inMu.Unlock()
	for i := range q.scratch {
		f := &q.scratch[i]
		if err := q.link.SetRxPeers(f.b, f.dst, f.src); err != nil {
			q.dev.ReceiveError(f.b, err)
		} else {
			_ = q.dev.Receive(f.b)
		}
		f.b = nil
	}
}

// inject delivers a frame to q as if src had sent it to dst.
func (q *testPort) inject(src, dst ipoib.Addr, proto uint16, payload []byte) {
	frame := ipoib.Header{Type: proto}.AppendTo(nil)
	q.enqueue(src, dst, append(frame, payload...))
}

// JoinLinkGroup implements LinkGroups.
func (p *testPort) JoinLinkGroup(group netip.Addr, addr []byte) error {
	p.loop.AssertHome("test join")
	p.gmu.Lock()
	p.joined[group] = append([]byte(nil), addr...)
	p.gmu.Unlock()
	return nil
}

// LeaveLinkGroup implements LinkGroups.
func (p *testPort) LeaveLinkGroup(group netip.Addr, _ []byte) error {
	p.loop.AssertHome("test leave")
	p.gmu.Lock()
	delete(p.joined, group)
	p.gmu.Unlock()
	return nil
}

func (p *testPort) joinedAddr(group netip.Addr) ([]byte, bool) {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	a, ok := p.joined[group]
	return a, ok
}

// testNode is a gVisor stack on a wire port.
type testNode struct {
	*Stack
	port *testPort
}

// newTestNode builds a stack with address addr (a prefix) on a new port
// of w; mod may adjust the options.
func newTestNode(tb testing.TB, w *testWire, n int, addr string, mod func(*Options)) *testNode {
	tb.Helper()
	p := newTestPort(tb, w, n)
	opts := Options{Addr: netip.MustParsePrefix(addr), Groups: p}
	if mod != nil {
		mod(&opts)
	}
	s, err := NewStack(p.dev, opts)
	if err != nil {
		tb.Fatal(err)
	}
	nd := &testNode{Stack: s, port: p}
	tb.Cleanup(func() {
		s.Close()
		p.shutdown(tb)
	})
	return nd
}

// twoNodes returns stacks 10.0.0.1/24 and 10.0.0.2/24 on one wire.
func twoNodes(tb testing.TB) (a, b *testNode) {
	tb.Helper()
	var w testWire
	return newTestNode(tb, &w, 1, "10.0.0.1/24", nil), newTestNode(tb, &w, 2, "10.0.0.2/24", nil)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
