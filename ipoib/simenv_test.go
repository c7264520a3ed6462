package ipoib

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/looptest"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// The driver tests run on the real simulator: the fabric, every host's
// device and every Link share one loop on a manual clock that the test
// goroutine holds, so a test is a deterministic sequence of "do, settle,
// check", with time moving only when the test advances it.

// simEpoch is where the tests' manual clocks start.
var simEpoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// envSeq keeps fabric and netdev names unique across the tests of a run.
var envSeq atomic.Uint64

// env is a fabric on a manually clocked loop held by the test goroutine.
type env struct {
	t     testing.TB
	id    uint64
	loop  *aio.Context
	clock *aio.ManualClock
	f     *sim.Fabric
	hosts []*sim.Host
	// release gives up the hold the creating goroutine took on the loop.
	release func()
}

// fastSA makes the SA client give up quickly, so failure paths take
// little simulated time.
var fastSA = ib.SAClientConfig{Timeout: 100 * time.Millisecond, MaxTimeout: 200 * time.Millisecond, Tries: 2}

// newEnv makes the loop and an empty fabric; build it with star, tree or
// the sim API, then Start it.
func newEnv(t testing.TB, cfg sim.Config) *env {
	t.Helper()
	return buildEnv(t, cfg, "sim", func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error) {
		f, err := sim.New(loop, cfg)
		return f, nil, err
	})
}

// newTreeEnv is newEnv for a two-level tree built and started by
// sim.Tree.
func newTreeEnv(t testing.TB, cfg sim.Config, tc sim.TreeConfig) *env {
	t.Helper()
	e := buildEnv(t, cfg, "tree", func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error) {
		return sim.Tree(loop, cfg, tc)
	})
	e.settle()
	return e
}

// buildEnv makes the manually clocked loop, held by the test goroutine,
// and the fabric (with its hosts, if any) that build makes on it; kind
// goes into the loop's and the fabric's names.
func buildEnv(t testing.TB, cfg sim.Config, kind string, build func(*aio.Context, sim.Config) (*sim.Fabric, []*sim.Host, error)) *env {
	t.Helper()
	e := &env{t: t, id: envSeq.Add(1), clock: aio.NewManualClock(simEpoch)}
	loop, err := aio.New(aio.WithClock(e.clock), aio.WithName(fmt.Sprintf("ipoib-%s-%d", kind, e.id)))
	if err != nil {
		t.Fatal(err)
	}
	e.loop = loop
	release := loop.Acquire()
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("ipoib%s%d", kind, e.id)
	}
	f, hosts, err := build(loop, cfg)
	if err != nil {
		release()
		_ = loop.Close()
		t.Fatal(err)
	}
	e.f, e.hosts, e.release = f, hosts, release
	t.Cleanup(e.cleanup)
	return e
}

// cleanup closes the fabric and the loop, from whichever goroutine the
// test ends on: the loop may have been handed off (see handOff).
func (e *env) cleanup() {
	r := e.loop.Acquire() // nests when still home
	_ = e.f.Close()
	r()
	e.release()
	_ = e.loop.Close()
}

// handOff gives up the test goroutine's hold on the loop, for tests whose
// work runs on other goroutines (fuzz targets run each input on its
// own); they Acquire the loop for each piece of work.
func (e *env) handOff() { e.release() }

// star builds n hosts on one switch with host config hc and starts the
// fabric.
func (e *env) star(n int, hc sim.HostConfig) []*sim.Host {
	e.t.Helper()
	sw, err := e.f.AddSwitch("sw0", sim.SwitchConfig{Ports: max(n, sim.DefaultSwitchPorts)})
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range n {
		h, err := e.f.AddHost(fmt.Sprintf("host%d", i), hc)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.f.Connect(h, sw, sim.CableConfig{}); err != nil {
			e.t.Fatal(err)
		}
		e.hosts = append(e.hosts, h)
	}
	if err := e.f.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.settle()
	return e.hosts
}

// settle runs the loop until nothing is left to do at the current time.
func (e *env) settle() {
	e.t.Helper()
	looptest.Settle(e.t, e.loop)
}

// advance moves the clock in steps no longer than 50ms and settles after
// each, so timers fire in order.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	looptest.Advance(e.t, e.loop, e.clock, d, 50*time.Millisecond)
}

// rxFrame is one frame a node's netdev delivered, copied.
type rxFrame struct {
	proto    uint16
	dst, src []byte
	data     []byte
}

// node is an IPoIB link on one simulated host, with a receiver that
// keeps what arrives.
type node struct {
	e   *env
	h   *sim.Host
	dev ib.Device
	l   *Link
	nd  *netdev.Device
	rx  []rxFrame
	ups []bool // link transitions seen by a listener
}

// open puts a Link on host h with cfg (name and fast SA filled in) and
// opens its netdev.
func (e *env) open(h *sim.Host, cfg Config) *node {
	e.t.Helper()
	n := e.create(h, cfg)
	if err := n.nd.Open(); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// create is open without opening the netdev.
func (e *env) create(h *sim.Host, cfg Config) *node {
	e.t.Helper()
	dev, err := h.Open(e.loop)
	if err != nil {
		e.t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("t%d-%s", e.id, h.Name())
	}
	if cfg.SA == (ib.SAClientConfig{}) {
		cfg.SA = fastSA
	}
	l, err := New(e.loop, dev, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	n := &node{e: e, h: h, dev: dev, l: l, nd: l.NetDev()}
	n.nd.SetReceiver(netdev.ReceiverFunc(func(_ *netdev.Device, b *netdev.Buffer, proto uint16, dst, src []byte) {
		n.rx = append(n.rx, rxFrame{proto: proto, dst: bytes.Clone(dst), src: bytes.Clone(src), data: bytes.Clone(b.Bytes())})
		b.Free()
	}))
	n.nd.AddLinkListener(func(_ *netdev.Device, up bool, _ error) { n.ups = append(n.ups, up) })
	e.t.Cleanup(func() {
		r := e.loop.Acquire()
		defer r()
		if !n.l.d.closed {
			if err := n.l.Close(); err != nil {
				e.t.Errorf("close %s: %v", n.nd.Name(), err)
			}
		}
		_ = dev.Close()
	})
	return n
}

// addr returns the node's IPoIB address.
func (n *node) addr() []byte { return bytes.Clone(n.nd.HWAddr()) }

// send transmits payload to dst as IPv4.
func (n *node) send(dst, payload []byte) error {
	n.e.t.Helper()
	b, err := n.nd.AllocBuffer()
	if err != nil {
		n.e.t.Fatalf("%s: AllocBuffer: %v", n.nd.Name(), err)
	}
	if err := b.Append(payload); err != nil {
		n.e.t.Fatal(err)
	}
	return n.nd.Transmit(b, dst, EtherTypeIPv4)
}

// mustSend is send that fails the test on a refusal.
func (n *node) mustSend(dst, payload []byte) {
	n.e.t.Helper()
	if err := n.send(dst, payload); err != nil {
		n.e.t.Fatalf("%s: transmit to %x: %v", n.nd.Name(), dst, err)
	}
}

// stat reads one of the node's counters.
func (n *node) stat(c netdev.Counter) uint64 { return n.nd.Stats().Load(c) }

// up reports whether the node's link is up.
func (n *node) up() bool {
	up, _ := n.nd.LinkState()
	return up
}

// received returns the payloads the node got from src (any source when
// src is nil), in order.
func (n *node) received(src []byte) []string {
	var out []string
	for _, f := range n.rx {
		if src == nil || bytes.Equal(f.src, src) {
			out = append(out, string(f.data))
		}
	}
	return out
}

// hostDrops returns a sim drop count at host h.
func hostDrops(h *sim.Host, r sim.DropReason) uint64 { return h.Counters().Dropped(r) }

// rawQP is a bare UD queue pair on a host, for sending what an IPoIB
// link would not: other Q_Keys, datagrams without a GRH.
type rawQP struct {
	t   testing.TB
	dev ib.Device
	cq  ib.CompletionQueue
	qp  ib.QueuePair
	wcs [16]ib.Completion
	rx  [][]byte // payloads received, copied
}

// raw opens h again and makes a QP with qkey on P_Key index 0.
func (e *env) raw(h *sim.Host, qkey ib.QKey) *rawQP {
	e.t.Helper()
	dev, err := h.Open(e.loop)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		r := e.loop.Acquire()
		defer r()
		_ = dev.Close()
	})
	r := &rawQP{t: e.t, dev: dev}
	if r.cq, err = dev.CreateCQ(64); err != nil {
		e.t.Fatal(err)
	}
	if r.qp, err = dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: qkey, SendCQ: r.cq, RecvCQ: r.cq,
		SendDepth: 8, RecvDepth: 8, RecvBufSize: recvBufSize}); err != nil {
		e.t.Fatal(err)
	}
	r.cq.SetHandler(r.drain)
	return r
}

// drain empties the CQ, reposting receive buffers.
func (r *rawQP) drain() {
	for {
		n, _ := r.cq.Poll(r.wcs[:])
		for _, wc := range r.wcs[:n] {
			if wc.Kind == ib.WorkRecv && wc.Status != ib.StatusFlushed {
				if wc.Status == ib.StatusSuccess {
					r.rx = append(r.rx, bytes.Clone(wc.Payload()))
				}
				_ = r.qp.RepostRecv(wc.ID)
			}
		}
		if n < len(r.wcs) {
			return
		}
	}
}

// addr is the raw QP's address as an IPoIB peer would name it.
func (r *rawQP) addr() []byte {
	attr, _ := r.dev.QueryPort(1)
	var b [AddrLen]byte
	_ = Addr{QPN: r.qp.QPN(), GID: attr.GIDs[0]}.Encode(b[:])
	return b[:]
}

// send posts payload to (dlid, qpn) with qkey, without a GRH.
func (r *rawQP) send(dlid ib.LID, qpn ib.QPN, qkey ib.QKey, payload []byte) {
	r.t.Helper()
	ah, err := r.dev.CreateAH(ib.AddressVector{Port: 1, DLID: dlid})
	if err != nil {
		r.t.Fatal(err)
	}
	wr := []ib.SendWR{{ID: 1, AH: ah, RemoteQPN: qpn, RemoteQKey: qkey, Data: [][]byte{payload}}}
	if n, err := r.qp.PostSend(wr); n != 1 {
		r.t.Fatal(err)
	}
}

// lid returns the node's port LID.
func (n *node) lid() ib.LID {
	a, _ := n.dev.QueryPort(1)
	return a.LID
}

// newTrio is the three-host star many tests start from: links opened with
// the default Config on a fresh fabric, joined and settled.
func newTrio(t *testing.T) (e *env, a, b, c *node) {
	t.Helper()
	e = newEnv(t, sim.Config{})
	hs := e.star(3, sim.HostConfig{})
	a, b, c = e.open(hs[0], Config{}), e.open(hs[1], Config{}), e.open(hs[2], Config{})
	e.settle()
	return e, a, b, c
}

// newPair is newTrio with two hosts, and their sim hosts for tests that
// change a port.
func newPair(t *testing.T) (e *env, hs []*sim.Host, a, b *node) {
	t.Helper()
	e = newEnv(t, sim.Config{})
	hs = e.star(2, sim.HostConfig{})
	a, b = e.open(hs[0], Config{}), e.open(hs[1], Config{})
	e.settle()
	return e, hs, a, b
}
