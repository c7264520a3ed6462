package integration

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/stack"
)

// seq keeps fabric and netdev names unique across the tests of a run.
var seq atomic.Uint64

// env is a simulated fabric whose hosts each run an IPoIB link and a gVisor
// stack.
type env struct {
	t     testing.TB
	loop  *aio.Context
	stop  func() error // stops and closes the fabric's loop
	f     *sim.Fabric
	name  string // the fabric's, in the hosts' Config.Device
	hosts []*host
	// pcaps, when set before up, gives each host's IPoIB capture writer.
	pcaps func(i int) io.Writer
	// noGSO, when set before up, builds the stacks without gVisor's
	// software segmentation.
	noGSO bool
	// noGRO, when set before up, builds the stacks without receive
	// coalescing.
	noGRO bool
	// hostLoops, when set before up, gives every host a loop of its own,
	// as separate daemons have, instead of running all of them on the
	// fabric's loop.
	hostLoops bool
	stopLoops []func() error // the host loops' stops, for close
}

// host is one simulated machine: its HCA and the interface on it, built
// the one way the project builds hosts (package ipoibd). st is the
// interface's stack, which the tests reach into for what the public API
// does not cover (their own DHCP clients, gVisor's neighbour table).
type host struct {
	loop *aio.Context // the fabric's loop unless env.hostLoops
	sim  *sim.Host
	ifc  *ipoibd.Interface
	st   *stack.Stack
	addr netip.Addr
}

// newEnv starts a loop and builds a fabric on it with build, which runs on
// the loop and returns the hosts to bring up.
func newEnv(t testing.TB, build func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error)) *env {
	t.Helper()
	loop, err := aio.New(aio.WithName("fabric"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, loop: loop, stop: loop.Start()}
	t.Cleanup(e.close)
	var hosts []*sim.Host
	e.name = fmt.Sprintf("it%d", seq.Add(1))
	e.onLoop(func() {
		cfg := sim.Config{Name: e.name, Seed: 1}
		e.f, hosts, err = build(loop, cfg)
	})
	if err != nil {
		t.Fatalf("build fabric: %v", err)
	}
	for _, h := range hosts {
		e.hosts = append(e.hosts, &host{sim: h})
	}
	return e
}

// onLoop runs fn on the fabric's loop and waits for it.
func (e *env) onLoop(fn func()) { runOn(e.loop, fn) }

// runOn runs fn on loop and waits for it.
func runOn(loop *aio.Context, fn func()) {
	if err := loop.Call("test", fn); err != nil {
		panic(err) // a test that calls into a closed loop is broken
	}
}

// hostLoop starts a loop of its own for host i; close stops it last.
func (e *env) hostLoop(i int) *aio.Context {
	loop, err := aio.New(aio.WithName(fmt.Sprintf("host%d", i)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.stopLoops = append(e.stopLoops, loop.Start())
	return loop
}

func (e *env) close() {
	for _, h := range e.hosts {
		if h.ifc != nil {
			h.ifc.Close()
		}
	}
	e.onLoop(func() {
		if e.f != nil {
			e.f.Close()
		}
	})
	if err := e.stop(); err != nil {
		e.t.Errorf("fabric loop: %v", err)
	}
	for _, stop := range e.stopLoops {
		if err := stop(); err != nil {
			e.t.Errorf("host loop: %v", err)
		}
	}
}

// addrOf gives host i the address 10.<i/250>.<i%250+1>... inside 10.0.0.0/8.
func addrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i%250 + 1), 1})
}

// up brings up an interface on every host (cfg says how; Device, Name,
// the loop and the address are filled in) with a static address in
// 10.0.0.0/8.
func (e *env) up(cfg func(i int) ipoibd.Config) {
	e.upWith(cfg, func(i int) netip.Prefix { return netip.PrefixFrom(addrOf(i), 8) })
}

// upWith is up with the addresses chosen by addr; a zero Prefix leaves
// that host's stack without one (for the tests' own DHCP clients). Every
// interface is created first, so the joins run at once, then each is
// waited for and brought up.
func (e *env) upWith(cfg func(i int) ipoibd.Config, addr func(i int) netip.Prefix) {
	e.t.Helper()
	for i, h := range e.hosts {
		h.loop = e.loop
		if e.hostLoops {
			h.loop = e.hostLoop(i)
		}
		c := cfg(i)
		c.Device = fmt.Sprintf("sim:%s/%s", e.name, h.sim.Name())
		if c.Name == "" {
			c.Name = fmt.Sprintf("ib%d-%d", seq.Add(1), i)
		}
		c.Tuning.Loop, c.Tuning.NoGSO, c.Tuning.NoGRO, c.Pcap = h.loop, e.noGSO, e.noGRO, e.pcap(i)
		if p := addr(i); p.IsValid() {
			c.Addr = p
			h.addr = p.Addr()
		} else {
			c.Tuning.NoAddress = true
		}
		var err error
		if h.ifc, err = ipoibd.New(c); err != nil {
			e.t.Fatalf("open host %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, h := range e.hosts {
		if err := h.ifc.Up(ctx); err != nil {
			e.t.Fatalf("host %d: %v", i, err)
		}
		h.st = h.ifc.Stack()
	}
}

// pcap returns the writer host i's IPoIB capture goes to, if the test
// asked for captures.
func (e *env) pcap(i int) io.Writer {
	if e.pcaps == nil {
		return nil
	}
	return e.pcaps(i)
}

// waitUp waits until every host's link reports up.
func (e *env) waitUp(hosts []*host, limit time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for _, h := range hosts {
		if err := h.ifc.WaitLink(ctx); err != nil {
			e.t.Fatalf("%s: %v", h.ifc, err)
		}
	}
}

// ping sends count echo requests from a to b and returns the statistics.
func ping(t testing.TB, a, b *host, count int) stack.PingStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := stack.Ping(ctx, a.st.S, b.addr, count, 10*time.Millisecond, 56)
	if err != nil {
		t.Fatalf("ping %v -> %v: %v", a.addr, b.addr, err)
	}
	return st
}

// pingUntil pings b from a once at a time until an answer comes or limit
// passes, the way an operator retries while ARP and path resolution warm
// up on a busy fabric; it reports whether b answered.
func pingUntil(t testing.TB, a, b *host, limit time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if st := ping(t, a, b, 1); st.Received == 1 {
			return true
		}
	}
	return false
}

// transfer sends n random bytes from a to b over TCP and checks they
// arrive byte-identical (by SHA-256); it returns how long it took.
func transfer(t testing.TB, a, b *host, n int, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	const port = 5001
	ln, err := b.st.ListenTCP(port)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	start := time.Now()
	c, err := a.st.DialTCP(ctx, netip.AddrPortFrom(b.addr, port))
	if err != nil {
		t.Fatalf("dial %v: %v", b.addr, err)
	}
	stopper := context.AfterFunc(ctx, func() { c.Close() })
	defer stopper()
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	select {
	case r := <-got:
		c.Close()
		if r.err != nil {
			t.Fatalf("receive: %v", r.err)
		}
		if r.n != int64(n) || r.sum != want {
			t.Fatalf("received %d bytes, sha256 %x; sent %d, sha256 %x", r.n, r.sum, n, want)
		}
	case <-ctx.Done():
		t.Fatalf("transfer of %d bytes did not finish in %v", n, limit)
	}
	return time.Since(start)
}

// fabricCounters reads the fabric's counters on its loop.
func (e *env) fabricCounters() sim.Counters {
	var c sim.Counters
	e.onLoop(func() { c = e.f.Counters() })
	return c
}

// star builds n hosts on one switch.
func star(n int) func(*aio.Context, sim.Config) (*sim.Fabric, []*sim.Host, error) {
	return func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error) {
		return sim.Star(loop, cfg, n)
	}
}

// defaults is the ipoib configuration of a host that only needs a name.
func defaults(int) ipoibd.Config { return ipoibd.Config{} }

// parallel runs fn(i) for i in [0, n) on up to width goroutines.
func parallel(n, width int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}
