package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
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
	stop  context.CancelFunc
	done  chan struct{}
	f     *sim.Fabric
	hosts []*host
	// pcaps, when set before up, gives each host's IPoIB capture writer.
	pcaps func(i int) io.Writer
	// noGSO, when set before up, builds the stacks without gVisor's
	// software segmentation.
	noGSO bool
}

// host is one simulated machine: its HCA, its IPoIB link and its stack.
type host struct {
	sim  *sim.Host
	dev  ib.Device
	link *ipoib.Link
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
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, loop: loop, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		if err := loop.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("loop: %v", err)
		}
	}()
	t.Cleanup(e.close)
	var hosts []*sim.Host
	e.onLoop(func() {
		cfg := sim.Config{Name: fmt.Sprintf("it%d", seq.Add(1)), Seed: 1}
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
func (e *env) onLoop(fn func()) {
	done := make(chan struct{})
	e.loop.ScheduleOneshot("test", func() { fn(); close(done) })
	<-done
}

func (e *env) close() {
	for _, h := range e.hosts {
		if h.st != nil {
			h.st.Close()
		}
	}
	e.onLoop(func() {
		for _, h := range e.hosts {
			if h.link != nil {
				h.link.Close()
			}
			if h.dev != nil {
				h.dev.Close()
			}
		}
		if e.f != nil {
			e.f.Close()
		}
	})
	e.stop()
	<-e.done
	e.loop.Close()
}

// addrOf gives host i the address 10.<i/250>.<i%250+1>... inside 10.0.0.0/8.
func addrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i%250 + 1), 1})
}

// up opens an IPoIB link on every host (cfg says how), waits for all of
// them to come up, and builds a stack on each with a static address.
func (e *env) up(cfg func(i int) ipoib.Config) {
	e.upWith(cfg, func(i int) netip.Prefix { return netip.PrefixFrom(addrOf(i), 8) })
}

// upWith is up with the addresses chosen by addr; a zero Prefix leaves
// that host's stack without one (for DHCP).
func (e *env) upWith(cfg func(i int) ipoib.Config, addr func(i int) netip.Prefix) {
	e.t.Helper()
	var err error
	e.onLoop(func() {
		for i, h := range e.hosts {
			dev, derr := h.sim.Open(e.loop)
			if derr != nil {
				err = derr
				return
			}
			h.dev = dev
			c := cfg(i)
			if c.Name == "" {
				c.Name = fmt.Sprintf("ib%d-%d", seq.Add(1), i)
			}
			if h.link, err = ipoib.New(e.loop, dev, c); err != nil {
				return
			}
			if err = h.link.NetDev().Open(); err != nil {
				return
			}
		}
	})
	if err != nil {
		e.t.Fatalf("open links: %v", err)
	}
	e.waitUp(e.hosts, 30*time.Second)
	for i, h := range e.hosts {
		p := addr(i)
		h.addr = p.Addr()
		h.st, err = stack.NewStack(h.link.NetDev(), stack.Options{
			Addr:   p,
			Groups: h.link,
			Pcap:   e.pcap(i),
			NoGSO:  e.noGSO,
		})
		if err != nil {
			e.t.Fatalf("stack on host %d: %v", i, err)
		}
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
	deadline := time.Now().Add(limit)
	for _, h := range hosts {
		for {
			up, reason := h.link.NetDev().LinkState()
			if up {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("link %s still down after %v: %v", h.link.NetDev().Name(), limit, reason)
			}
			time.Sleep(2 * time.Millisecond)
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
func defaults(int) ipoib.Config { return ipoib.Config{} }

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
