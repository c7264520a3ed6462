package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/stack/dhcp"
)

// The demo is the whole product on a simulated fabric: a subnet manager,
// one host serving DHCP with a static address and N client hosts, each
// running the IPoIB driver under a gVisor stack. Every host joins the
// broadcast group; the clients lease addresses (RFC 4390), then ping the
// server and their neighbour.

// Demo sizing: small queues, because a thousand hosts share one process.
const (
	demoSendDepth = 32
	demoRecvDepth = 64
	// demoPingTries bounds how often a host pings before it gives up;
	// the first ping may wait for ARP and a path record.
	demoPingTries = 10
	// demoStartSpread is the longest random wait of a client before its
	// first DISCOVER (RFC 2131 section 4.4.1 asks for one to ten
	// seconds) in a demo of demoSpreadHosts clients; see startDelay.
	demoStartSpread = 10 * time.Second
	demoSpreadHosts = 1024
	// demoLeaseShare is each host's share of the lease step's time limit,
	// on top of --step-timeout. Every DHCP message of every client is a
	// broadcast (RFC 4390) that all hosts of the one process receive, so
	// the time to lease grows with the subnet: 1024 clients took about
	// 45 s on a quiet 2-core machine, past a flat 30 s limit.
	demoLeaseShare = 50 * time.Millisecond
)

// The steps a host goes through, as failures name them.
const (
	stepJoin  = "join"
	stepStack = "stack"
	stepDHCP  = "dhcp"
	stepPing  = "ping"
)

// demoSeq keeps fabric and interface names unique when one process runs
// several demos (the tests do).
var demoSeq atomic.Uint64

// serverPrefix is the DHCP server's address; clients lease from the rest
// of the /16.
var serverPrefix = netip.MustParsePrefix("10.77.0.1/16")

// demo is one run.
type demo struct {
	opt    simOptions
	fabric *ipoibd.SimFabric
	hosts  []*demoHost
	start  time.Time

	allJoined time.Duration
	allLeased time.Duration

	// stop ends the run early: the first host to fail a step calls it,
	// because the demo succeeds only if every host does.
	stop     context.CancelFunc
	stopOnce sync.Once
	stopped  atomic.Bool
	// Progress counters for the terminal line.
	nJoined, nLeased, nPinged atomic.Int64
}

// demoHost is one host of the demo.
type demoHost struct {
	name string
	ifc  *ipoibd.Interface
	attr ib.PortAttr
	// files are closed with the demo: the host's capture, and on the
	// server the fabric's.
	files []*os.File

	joined   time.Duration
	lease    dhcp.Lease
	leasedAt time.Duration
	rttSrv   time.Duration
	rttNext  time.Duration
	// err is why the host failed, step the step it failed at; halted
	// says it was stopped unfinished because another host failed.
	err    error
	step   string
	halted bool
}

// fail records that h failed step with err and stops the run. An error
// that only says the run was stopped marks h unfinished instead.
func (d *demo) fail(h *demoHost, step string, err error) {
	if h.err != nil || h.halted {
		return
	}
	if d.stopped.Load() && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		h.halted = true
		return
	}
	h.err, h.step = err, step
	d.stopOnce.Do(func() {
		d.stopped.Store(true)
		if d.stop != nil {
			d.stop()
		}
	})
}

// failUp records a failure of Up at the step it names.
func (d *demo) failUp(h *demoHost, err error) {
	step := stepDHCP
	var se *ipoibd.StepError
	if errors.As(err, &se) {
		switch se.Step {
		case ipoibd.StepJoin:
			step = stepJoin
		case ipoibd.StepStack:
			step = stepStack
		}
		err = se.Err
	}
	d.fail(h, step, err)
}

// runDemo builds the fabric, brings every host up, leases, pings and
// reports.
func runDemo(opt simOptions, stderr io.Writer) (*simReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opt.timeout)
	defer cancel()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	d := &demo{opt: opt, start: time.Now(), stop: stop}
	defer d.close()
	if err := d.build(); err != nil {
		return nil, err
	}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		done := d.progress(f)
		defer done()
	}
	d.join(ctx)
	d.serve(ctx)
	d.leaseAll(ctx)
	d.pingAll(ctx)
	return d.report(), nil
}

// progress prints a line on the terminal, rewritten as hosts join, lease
// and ping, until the returned function is called.
func (d *demo) progress(w io.Writer) func() {
	n := int64(len(d.hosts))
	clients := n - 1
	pings := 2 * clients
	if clients < 2 {
		pings = clients
	}
	line := func() {
		fmt.Fprintf(w, "\rjoined %d/%d, leased %d/%d, pinged %d/%d ", d.nJoined.Load(), n, d.nLeased.Load(), clients, d.nPinged.Load(), pings)
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line()
			case <-quit:
				line()
				fmt.Fprintln(w)
				return
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// build creates the fabric and every host's interface, which starts the
// joins. All hosts share the fabric's loop: a thousand loops of their
// own would cost a thousand epoll sets for no gain in one process.
func (d *demo) build() error {
	name := fmt.Sprintf("demo%d-%d", os.Getpid(), demoSeq.Add(1))
	var fabricPcap *os.File
	if d.opt.pcapDir != "" {
		if err := os.MkdirAll(d.opt.pcapDir, 0o755); err != nil {
			return fmt.Errorf("pcap directory: %w", err)
		}
		var err error
		if fabricPcap, err = os.Create(filepath.Join(d.opt.pcapDir, "fabric-ib.pcap")); err != nil {
			return fmt.Errorf("pcap: %w", err)
		}
	}
	sc := ipoibd.SimConfig{Name: name, Hosts: d.opt.hosts + 1, Seed: d.opt.seed, BroadcastMTU: d.opt.mtu}
	if fabricPcap != nil {
		sc.Capture = fabricPcap
	}
	if d.opt.pkey != ib.PKeyDefault {
		sc.PKeys = []uint16{uint16(d.opt.pkey)}
	}
	var err error
	if d.fabric, err = ipoibd.NewSimFabric(sc); err != nil {
		if fabricPcap != nil {
			fabricPcap.Close()
		}
		return fmt.Errorf("build fabric: %w", err)
	}
	if err := d.fabric.Do(func(f *sim.Fabric) error { return f.SetFaults(d.opt.faults) }); err != nil {
		return fmt.Errorf("build fabric: %w", err)
	}
	for i := range sc.Hosts {
		h := &demoHost{name: fmt.Sprintf("host%d", i)}
		if i == 0 {
			h.name = "server"
			if fabricPcap != nil {
				h.files = append(h.files, fabricPcap)
			}
		}
		d.hosts = append(d.hosts, h)
		cfg := ipoibd.Config{
			Device: d.fabric.Device(i), Name: name + "-" + h.name, PKey: uint16(d.opt.pkey),
			Tuning: ipoibd.Tuning{
				Loop: d.fabric.Loop(), SendDepth: demoSendDepth, RecvDepth: demoRecvDepth, BroadcastMTU: d.opt.mtu,
				DHCPSeed: d.opt.seed + uint64(i),
			},
		}
		if d.serial() {
			// One exchange at a time on an idle fabric, answered in
			// microseconds: retry after half a second rather than RFC
			// 2131's 4 s, still doubling, so lost packets cost little.
			cfg.Tuning.DHCPBackoff = dhcp.Backoff{Initial: 500 * time.Millisecond, Max: 8 * time.Second, Jitter: 200 * time.Millisecond}
		} else {
			// All clients at once share the loop with every other host,
			// and under that load a reply can take longer than half a
			// second: a shorter retransmission timer than RFC 2131's
			// 4 s would multiply the load it is waiting out.
			cfg.Tuning.DHCPStartDelay = d.startDelay()
		}
		if i == 0 {
			cfg.Addr = serverPrefix
			cfg.DHCPServer = &ipoibd.DHCPServer{
				PoolStart: netip.MustParseAddr("10.77.1.1"), PoolEnd: netip.MustParseAddr("10.77.255.254"),
				Router: serverPrefix.Addr(), DNS: []netip.Addr{serverPrefix.Addr()}, LeaseTime: time.Hour,
			}
		} else {
			cfg.DHCP = true
		}
		if d.opt.pcapDir != "" {
			f, err := os.Create(filepath.Join(d.opt.pcapDir, h.name+".pcap"))
			if err != nil {
				return fmt.Errorf("pcap: %w", err)
			}
			h.files = append(h.files, f)
			cfg.Pcap = f
		}
		if h.ifc, err = ipoibd.New(cfg); err != nil {
			return fmt.Errorf("build fabric: %s: %w", h.name, err)
		}
		if h.attr, err = h.ifc.PortAttr(); err != nil {
			return fmt.Errorf("build fabric: %s: %w", h.name, err)
		}
	}
	return nil
}

// join waits for every link to come up.
func (d *demo) join(ctx context.Context) {
	// --step-timeout bounds each step of one host, plus a share per host
	// for large fabrics: a host that has not finished a step by then has
	// failed it, and the run stops, since it cannot succeed.
	joinLimit := d.opt.stepTimeout + time.Duration(len(d.hosts))*time.Millisecond
	jctx, cancel := context.WithTimeout(ctx, joinLimit)
	defer cancel()
	for _, h := range d.hosts {
		if err := h.ifc.WaitLink(jctx); err != nil {
			if ctx.Err() == nil {
				_, reason := h.ifc.LinkState()
				err = fmt.Errorf("not in the broadcast group after %v: %v", joinLimit, reason)
			}
			d.fail(h, stepJoin, err)
			continue
		}
		d.nJoined.Add(1)
		if g := h.ifc.Group(); !g.JoinedAt.IsZero() {
			h.joined = g.JoinedAt.Sub(d.start)
		} else {
			h.joined = time.Since(d.start)
		}
		d.allJoined = max(d.allJoined, h.joined)
	}
}

// serve brings the server up: its stack, static address and DHCP server.
func (d *demo) serve(ctx context.Context) {
	s := d.hosts[0]
	if s.err != nil {
		return
	}
	if err := s.ifc.Up(ctx); err != nil {
		d.failUp(s, err)
		return
	}
	s.lease = dhcp.Lease{Addr: serverPrefix}
}

// leaseAll brings every client up at once, each leasing its address.
func (d *demo) leaseAll(ctx context.Context) {
	if d.hosts[0].err != nil {
		for _, h := range d.hosts[1:] {
			d.fail(h, stepDHCP, errors.New("no DHCP server"))
		}
		return
	}
	var wg sync.WaitGroup
	serial := d.serial()
	for _, h := range d.hosts[1:] {
		if h.err != nil || h.halted || ctx.Err() != nil {
			h.halted = h.halted || (h.err == nil && ctx.Err() != nil)
			continue
		}
		wg.Add(1)
		lease := func() {
			defer wg.Done()
			limit := d.opt.stepTimeout + time.Duration(len(d.hosts))*demoLeaseShare
			lctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			if err := h.ifc.Up(lctx); err != nil {
				var se *ipoibd.StepError
				if errors.As(err, &se) && se.Step == ipoibd.StepDHCP && ctx.Err() == nil {
					err = &ipoibd.StepError{Step: ipoibd.StepDHCP, Err: fmt.Errorf("no lease after %v", limit)}
				}
				d.failUp(h, err)
				return
			}
			h.lease, _ = h.ifc.Lease()
			h.leasedAt = time.Since(d.start)
			d.nLeased.Add(1)
		}
		if serial {
			lease()
		} else {
			go lease()
		}
	}
	wg.Wait()
	for _, h := range d.hosts[1:] {
		d.allLeased = max(d.allLeased, h.leasedAt)
	}
}

// startDelay bounds each client's random wait before its first DISCOVER
// when all lease at once. RFC 2131 section 4.4.1 has clients wait one to
// ten seconds so that those powered on together do not answer in one
// storm. Here every host runs on one loop and each broadcast costs all of
// them, so what the loop can take per second falls with the square of the
// subnet: the wait scales the same way, reaching the RFC's ten seconds at
// 1024 clients (0.6 s at 256, under a millisecond at 4). Started within
// two seconds instead, the 1024 clients' broadcasts came in faster than
// the loop could deliver them, and their retransmissions tripled them.
func (d *demo) startDelay() time.Duration {
	n := time.Duration(d.opt.hosts)
	return demoStartSpread * n * n / (demoSpreadHosts * demoSpreadHosts)
}

// serial says whether the demo runs its DHCP exchanges and pings one host
// at a time: it does under faults. The fabric draws each flow's faults
// from its own generator, so a host's own packets meet the same fates
// whatever the others do, but the server's answers form one flow, whose
// order would follow the clients' race; one exchange at a time makes that
// order, and so the run's outcome, the same for a seed.
func (d *demo) serial() bool { return d.opt.faults != (sim.Faults{}) }

// pingAll has every client ping the server and its neighbour.
func (d *demo) pingAll(ctx context.Context) {
	clients := d.hosts[1:]
	width := 64
	if d.serial() {
		width = 1
	}
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i, h := range clients {
		if h.err != nil || h.halted || ctx.Err() != nil {
			h.halted = h.halted || (h.err == nil && ctx.Err() != nil)
			continue
		}
		next := clients[(i+1)%len(clients)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			if h.rttSrv, err = demoPing(ctx, h, d.hosts[0]); err != nil {
				d.fail(h, stepPing, fmt.Errorf("server: %w", err))
				return
			}
			d.nPinged.Add(1)
			if next == h || next.err != nil {
				return
			}
			if h.rttNext, err = demoPing(ctx, h, next); err != nil {
				d.fail(h, stepPing, fmt.Errorf("%s: %w", next.name, err))
				return
			}
			d.nPinged.Add(1)
		}()
	}
	wg.Wait()
}

// demoPing pings to from h until one answer comes, up to demoPingTries.
func demoPing(ctx context.Context, h, to *demoHost) (time.Duration, error) {
	dst := to.lease.Addr.Addr()
	for range demoPingTries {
		st, err := h.ifc.Ping(ctx, dst, ipoibd.PingOptions{Size: 56})
		if err != nil {
			return 0, err
		}
		if st.Received > 0 {
			return st.Min, nil
		}
	}
	return 0, fmt.Errorf("%v: no answer to %d pings", dst, demoPingTries)
}

// close releases the leases and tears everything down: the interfaces at
// once (each release waits for the server's loop), then the fabric.
func (d *demo) close() {
	var wg sync.WaitGroup
	for _, h := range d.hosts[min(1, len(d.hosts)):] {
		if h.ifc != nil {
			wg.Add(1)
			go func() { defer wg.Done(); h.ifc.Close() }()
		}
	}
	wg.Wait()
	if len(d.hosts) > 0 && d.hosts[0].ifc != nil {
		d.hosts[0].ifc.Close()
	}
	if d.fabric != nil {
		d.fabric.Close()
	}
	for _, h := range d.hosts {
		for _, f := range h.files {
			f.Close()
		}
	}
}
