package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/stack"
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
	// demoStartSpread is the gap between two clients' first DISCOVERs.
	demoStartSpread = 2 * time.Millisecond
)

// demoSeq keeps fabric and interface names unique when one process runs
// several demos (the tests do).
var demoSeq atomic.Uint64

// serverPrefix is the DHCP server's address; clients lease from the rest
// of the /16.
var serverPrefix = netip.MustParsePrefix("10.77.0.1/16")

// demo is one run.
type demo struct {
	opt   simOptions
	loop  *aio.Context
	f     *sim.Fabric
	hosts []*demoHost
	start time.Time

	allJoined time.Duration
	allLeased time.Duration
	srv       *dhcp.Server
}

// demoHost is one host of the demo.
type demoHost struct {
	name   string
	sim    *sim.Host
	dev    ib.Device
	link   *ipoib.Link
	st     *stack.Stack
	client *dhcp.Client
	attr   ib.PortAttr
	pcap   *os.File
	// extra are more files to close with the demo (the fabric capture).
	extra []*os.File

	joined   time.Duration
	lease    dhcp.Lease
	leasedAt time.Duration
	rttSrv   time.Duration
	rttNext  time.Duration
	err      error
}

func (h *demoHost) fail(err error) {
	if h.err == nil {
		h.err = err
	}
}

// onLoop runs fn on the demo's loop and waits for it.
func (d *demo) onLoop(fn func()) {
	done := make(chan struct{})
	d.loop.ScheduleOneshot("demo", func() { fn(); close(done) })
	<-done
}

// runDemo builds the fabric, brings every host up, leases, pings and
// reports.
func runDemo(opt simOptions, stderr io.Writer) (*simReport, error) {
	loop, err := aio.New(aio.WithName("ipoibd-sim"))
	if err != nil {
		return nil, err
	}
	defer loop.Close()
	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan error, 1)
	go func() { loopDone <- loop.Run(loopCtx) }()
	defer func() { stopLoop(); <-loopDone }()

	ctx, cancel := context.WithTimeout(context.Background(), opt.timeout)
	defer cancel()
	d := &demo{opt: opt, loop: loop, start: time.Now()}
	defer d.close()
	if err := d.build(); err != nil {
		return nil, err
	}
	d.up(ctx)
	d.serve()
	d.leaseAll(ctx)
	d.pingAll(ctx)
	return d.report(), nil
}

// build creates the fabric, opens every host's IPoIB link and starts the
// joins.
func (d *demo) build() error {
	cfg := sim.Config{
		Name:  fmt.Sprintf("demo%d-%d", os.Getpid(), demoSeq.Add(1)),
		Seed:  d.opt.seed,
		MTU:   ib.MTU4096,
		Group: sim.GroupDefaults{MTU: d.opt.mtu},
	}
	var fabricPcap *os.File
	if d.opt.pcapDir != "" {
		if err := os.MkdirAll(d.opt.pcapDir, 0o755); err != nil {
			return fmt.Errorf("pcap directory: %w", err)
		}
		var err error
		if fabricPcap, err = os.Create(filepath.Join(d.opt.pcapDir, "fabric-ib.pcap")); err != nil {
			return fmt.Errorf("pcap: %w", err)
		}
		cfg.Capture = fabricPcap
	}
	var err error
	d.onLoop(func() {
		var hosts []*sim.Host
		if d.f, hosts, err = buildDemoFabric(d.loop, cfg, d.opt, d.opt.hosts+1); err != nil {
			return
		}
		if err = d.f.SetFaults(d.opt.faults); err != nil {
			return
		}
		for i, sh := range hosts {
			h := &demoHost{sim: sh, name: sh.Name()}
			if i == 0 {
				h.name = "server"
			}
			d.hosts = append(d.hosts, h)
			if h.dev, err = sh.Open(d.loop); err != nil {
				return
			}
			if h.attr, err = h.dev.QueryPort(1); err != nil {
				return
			}
			lc := ipoib.Config{
				Name: cfg.Name + "-" + h.name, PKey: d.opt.pkey, BroadcastMTU: d.opt.mtu,
				SendDepth: demoSendDepth, RecvDepth: demoRecvDepth,
			}
			h.link, err = ipoib.New(d.loop, h.dev, lc)
			if err != nil {
				return
			}
			if err = h.link.NetDev().Open(); err != nil {
				return
			}
		}
	})
	if err != nil {
		if fabricPcap != nil {
			fabricPcap.Close()
		}
		return fmt.Errorf("build fabric: %w", err)
	}
	if fabricPcap != nil {
		d.hosts[0].pcapCloser(fabricPcap)
	}
	return nil
}

// pcapCloser hands a file to the host so it is closed with the demo.
func (h *demoHost) pcapCloser(f *os.File) { h.extra = append(h.extra, f) }

// up waits for every link to come up and builds the stacks: the server's
// with its static address, the clients' without.
func (d *demo) up(ctx context.Context) {
	for _, h := range d.hosts {
		for {
			if up, _ := h.link.NetDev().LinkState(); up {
				if g := h.link.Group(); !g.JoinedAt.IsZero() {
					h.joined = g.JoinedAt.Sub(d.start)
				} else {
					h.joined = time.Since(d.start)
				}
				d.allJoined = max(d.allJoined, h.joined)
				break
			}
			if ctx.Err() != nil {
				_, reason := h.link.NetDev().LinkState()
				h.fail(fmt.Errorf("broadcast join: %v", reason))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i, h := range d.hosts {
		if h.err != nil {
			continue
		}
		opts := stack.Options{Groups: h.link}
		if i == 0 {
			opts.Addr = serverPrefix
		}
		if d.opt.pcapDir != "" {
			f, err := os.Create(filepath.Join(d.opt.pcapDir, h.name+".pcap"))
			if err != nil {
				h.fail(err)
				continue
			}
			h.pcap = f
			opts.Pcap = f
		}
		var err error
		if h.st, err = stack.NewStack(h.link.NetDev(), opts); err != nil {
			h.fail(err)
		}
	}
}

// serve starts the DHCP server on host 0.
func (d *demo) serve() {
	s := d.hosts[0]
	if s.err != nil {
		return
	}
	srv, err := dhcp.NewServer(dhcp.ServerConfig{
		Stack: s.st.S, NIC: s.st.NIC, ServerID: serverPrefix.Addr(), Subnet: serverPrefix.Masked(),
		PoolStart: netip.MustParseAddr("10.77.1.1"), PoolEnd: netip.MustParseAddr("10.77.255.254"),
		Router: serverPrefix.Addr(), DNS: []netip.Addr{serverPrefix.Addr()}, LeaseTime: time.Hour,
	})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		s.fail(fmt.Errorf("DHCP server: %w", err))
		return
	}
	d.srv = srv
	s.lease = dhcp.Lease{Addr: serverPrefix}
}

// leaseAll runs every client's DHCP exchange at once.
func (d *demo) leaseAll(ctx context.Context) {
	if d.srv == nil {
		for _, h := range d.hosts[1:] {
			h.fail(errors.New("no DHCP server"))
		}
		return
	}
	var wg sync.WaitGroup
	for i, h := range d.hosts[1:] {
		if h.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// RFC 2131 section 4.4.1 has clients wait a random moment
			// before the first DISCOVER so a fabric booting at once does
			// not answer in one storm; the demo spreads its starts over
			// demoStartSpread per client.
			select {
			case <-time.After(time.Duration(i) * demoStartSpread):
			case <-ctx.Done():
			}
			c, err := dhcp.NewClient(dhcp.ClientConfig{
				Stack: h.st.S, NIC: h.st.NIC, GUID: h.attr.GUID(), Seed: d.opt.seed + uint64(i),
				// The demo's fabric answers in microseconds: retry after
				// half a second rather than RFC 2131's 4 s, still doubling.
				Backoff: dhcp.Backoff{Initial: 500 * time.Millisecond, Max: 8 * time.Second, Jitter: 200 * time.Millisecond},
			})
			if err == nil {
				err = c.Start()
			}
			if err != nil {
				h.fail(err)
				return
			}
			h.client = c
			l, err := c.WaitBound(ctx)
			if err != nil {
				h.fail(fmt.Errorf("DHCP: %w", err))
				return
			}
			h.lease, h.leasedAt = l, time.Since(d.start)
		}()
	}
	wg.Wait()
	for _, h := range d.hosts[1:] {
		d.allLeased = max(d.allLeased, h.leasedAt)
	}
}

// pingAll has every client ping the server and its neighbour.
func (d *demo) pingAll(ctx context.Context) {
	clients := d.hosts[1:]
	width := 64
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i, h := range clients {
		if h.err != nil {
			continue
		}
		next := clients[(i+1)%len(clients)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			if h.rttSrv, err = demoPing(ctx, h, d.hosts[0]); err != nil {
				h.fail(fmt.Errorf("ping server: %w", err))
				return
			}
			if next == h || next.err != nil {
				return
			}
			if h.rttNext, err = demoPing(ctx, h, next); err != nil {
				h.fail(fmt.Errorf("ping %s: %w", next.name, err))
			}
		}()
	}
	wg.Wait()
}

// demoPing pings to from h until one answer comes, up to demoPingTries.
func demoPing(ctx context.Context, h, to *demoHost) (time.Duration, error) {
	dst := to.lease.Addr.Addr()
	for range demoPingTries {
		st, err := stack.Ping(ctx, h.st.S, dst, 1, 0, 56)
		if err != nil {
			return 0, err
		}
		if st.Received > 0 {
			return st.Min, nil
		}
	}
	return 0, fmt.Errorf("%v: no answer to %d pings", dst, demoPingTries)
}

// close releases the leases and tears everything down.
func (d *demo) close() {
	var wg sync.WaitGroup
	for _, h := range d.hosts {
		if h.client != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				h.client.Stop(ctx)
			}()
		}
	}
	wg.Wait()
	if d.srv != nil {
		d.srv.Stop()
	}
	for _, h := range d.hosts {
		if h.st != nil {
			h.st.Close()
		}
	}
	d.onLoop(func() {
		for _, h := range d.hosts {
			if h.link != nil {
				h.link.Close()
			}
			if h.dev != nil {
				h.dev.Close()
			}
		}
		if d.f != nil {
			d.f.Close()
		}
	})
	for _, h := range d.hosts {
		if h.pcap != nil {
			h.pcap.Close()
		}
		for _, f := range h.extra {
			f.Close()
		}
	}
}

// simReport is what the demo prints, as a table or as JSON.
type simReport struct {
	OK      bool            `json:"ok"`
	Hosts   []simHostReport `json:"hosts"`
	Totals  simTotals       `json:"totals"`
	Fabric  simFabricReport `json:"fabric"`
	Pcap    string          `json:"pcap_dir,omitempty"`
	Elapsed string          `json:"elapsed"`
}

type simHostReport struct {
	Host      string  `json:"host"`
	GID       string  `json:"gid"`
	LID       uint16  `json:"lid"`
	QPN       uint32  `json:"qpn"`
	IP        string  `json:"ip,omitempty"`
	Lease     string  `json:"lease,omitempty"`
	JoinMs    float64 `json:"join_ms"`
	LeaseMs   float64 `json:"lease_ms,omitempty"`
	Neighbour string  `json:"neighbour,omitempty"`
	RTTServer float64 `json:"rtt_server_us,omitempty"`
	RTTNext   float64 `json:"rtt_neighbour_us,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type simTotals struct {
	Hosts        int     `json:"hosts"`
	OK           int     `json:"ok"`
	Joined       int     `json:"joined"`
	Leased       int     `json:"leased"`
	PingsOK      int     `json:"pings_ok"`
	PingsWanted  int     `json:"pings_wanted"`
	RTTP50Micros float64 `json:"rtt_p50_us"`
	RTTP99Micros float64 `json:"rtt_p99_us"`
	AllJoinedMs  float64 `json:"all_joined_ms"`
	AllLeasedMs  float64 `json:"all_leased_ms"`
}

type simFabricReport struct {
	Sent       uint64            `json:"sent"`
	Delivered  uint64            `json:"delivered"`
	Duplicated uint64            `json:"duplicated"`
	Reordered  uint64            `json:"reordered"`
	Drops      map[string]uint64 `json:"drops"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func (d *demo) report() *simReport {
	rep := &simReport{OK: true, Pcap: d.opt.pcapDir, Elapsed: time.Since(d.start).Round(time.Millisecond).String()}
	var rtts []time.Duration
	clients := d.hosts[1:]
	for i, h := range d.hosts {
		hr := simHostReport{Host: h.name, GID: h.attr.GIDs[0].String(), LID: uint16(h.attr.LID), JoinMs: ms(h.joined)}
		if h.link != nil {
			var a ib.IPoIBAddr
			if a.Decode(h.link.NetDev().HWAddr()) == nil {
				hr.QPN = uint32(a.QPN)
			}
		}
		if up, _ := h.link.NetDev().LinkState(); up && h.joined > 0 {
			rep.Totals.Joined++
		}
		if h.lease.Addr.IsValid() {
			hr.IP = h.lease.Addr.String()
			if i > 0 {
				rep.Totals.Leased++
				hr.Lease, hr.LeaseMs = h.lease.Duration.String(), ms(h.leasedAt)
			} else {
				hr.Lease = "static"
			}
		}
		if i > 0 {
			rep.Totals.PingsWanted++
			if len(clients) > 1 {
				hr.Neighbour = clients[i%len(clients)].name
				rep.Totals.PingsWanted++
			}
			for _, r := range []time.Duration{h.rttSrv, h.rttNext} {
				if r > 0 {
					rep.Totals.PingsOK++
					rtts = append(rtts, r)
				}
			}
			hr.RTTServer, hr.RTTNext = us(h.rttSrv), us(h.rttNext)
		}
		if h.err != nil {
			hr.Error = h.err.Error()
			rep.OK = false
		} else {
			rep.Totals.OK++
		}
		rep.Hosts = append(rep.Hosts, hr)
	}
	rep.Totals.Hosts = len(d.hosts)
	if rep.Totals.PingsOK != rep.Totals.PingsWanted || rep.Totals.Leased != len(clients) {
		rep.OK = false
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		rep.Totals.RTTP50Micros = us(rtts[len(rtts)/2])
		rep.Totals.RTTP99Micros = us(rtts[(len(rtts)*99)/100])
	}
	rep.Totals.AllJoinedMs, rep.Totals.AllLeasedMs = ms(d.allJoined), ms(d.allLeased)
	var c sim.Counters
	d.onLoop(func() { c = d.f.Counters() })
	rep.Fabric = simFabricReport{Sent: c.Sent, Delivered: c.Delivered, Duplicated: c.Duplicated, Reordered: c.Reordered, Drops: map[string]uint64{}}
	for r := sim.DropReason(0); r < sim.NumDropReasons; r++ {
		if n := c.Dropped(r); n > 0 {
			rep.Fabric.Drops[r.String()] = n
		}
	}
	return rep
}

func (r *simReport) printTable(w io.Writer) {
	fmt.Fprintf(w, "%-8s %-26s %6s %8s %-16s %7s %9s %-8s %10s %10s %s\n",
		"HOST", "GID", "LID", "QPN", "IP", "LEASE", "JOIN", "PEER", "RTT-SRV", "RTT-PEER", "STATUS")
	for _, h := range r.Hosts {
		status := "ok"
		if h.Error != "" {
			status = h.Error
		}
		fmt.Fprintf(w, "%-8s %-26s %#6x %#8x %-16s %7s %8.1fms %-8s %10s %10s %s\n",
			h.Host, h.GID, h.LID, h.QPN, h.IP, h.Lease, h.JoinMs, h.Neighbour, rttString(h.RTTServer), rttString(h.RTTNext), status)
	}
	t := r.Totals
	fmt.Fprintf(w, "\n%d/%d hosts ok: %d joined the broadcast group (all by %.1fms), %d leased (all by %.1fms), %d/%d pings answered (RTT p50 %.1fus, p99 %.1fus); took %s\n",
		t.OK, t.Hosts, t.Joined, t.AllJoinedMs, t.Leased, t.AllLeasedMs, t.PingsOK, t.PingsWanted, t.RTTP50Micros, t.RTTP99Micros, r.Elapsed)
	fmt.Fprintf(w, "fabric: %d packets sent, %d delivered", r.Fabric.Sent, r.Fabric.Delivered)
	if len(r.Fabric.Drops) > 0 {
		fmt.Fprintf(w, ", drops %v", r.Fabric.Drops)
	}
	fmt.Fprintln(w)
	if r.Pcap != "" {
		fmt.Fprintf(w, "captures in %s: fabric-ib.pcap (raw InfiniBand, ERF) and one IPoIB capture per host; open them in Wireshark\n", r.Pcap)
	}
}

func rttString(us float64) string {
	if us <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fus", us)
}
