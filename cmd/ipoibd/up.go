package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/ib"
)

func init() {
	register(command{
		name:    "up",
		summary: "attach to a port, join the IPoIB link, configure IP and serve until stopped",
		run:     runUp,
	})
}

// upContext is the context `up` serves under: SIGINT or SIGTERM ends it
// (see upSignals). Tests replace it to stop a daemon without signals.
var upContext = func() (context.Context, context.CancelFunc) { return upSignals(os.Stderr) }

// upOptions are up's flags after validation.
type upOptions struct {
	driver, device string
	port           int
	pkey           ib.PKey
	gidIndex       int
	addr           netip.Prefix
	gateway        netip.Addr
	dhcp           bool
	dhcpServer     string
	pcap           string
	name           string
	socket         string
	socketDir      bool // socket is in the default directory, to be checked
	leaseFile      string
	joinTimeout    time.Duration
	// linkDownTimeout, if not zero, ends the daemon once its link has
	// been down that long (see watchLink).
	linkDownTimeout time.Duration
	log             *slog.Logger
	ways            waysOptions
}

func runUp(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("up", "--device NAME [--port N] [--pkey P] [--gid-index I] (--dhcp | --addr CIDR) [--dhcp-server RANGE] [--pcap FILE] [--forward SPEC]... [--serve SPEC]... [--socks5 ADDR] [--tun NAME] [--log-level L]", stderr)
	device := fs.String("device", "", "RDMA device, as NAME or DRIVER:NAME (see 'ipoibd devices')")
	port := fs.Int("port", 1, "port number on the device")
	pkey := fs.String("pkey", "0xffff", "partition key of the IPoIB link (full membership is implied)")
	gidIndex := fs.Int("gid-index", 0, "index of the port GID the interface uses")
	addr := fs.String("addr", "", "static IPv4 address and prefix, e.g. 10.0.0.1/24")
	gateway := fs.String("gateway", "", "default gateway (with --addr)")
	dhcp := fs.Bool("dhcp", false, "configure the interface by DHCP (RFC 4390)")
	dhcpServer := fs.String("dhcp-server", "", "also serve DHCP on the link, handing out FIRST-LAST (needs --addr)")
	pcap := fs.String("pcap", "", "write the interface's IPoIB traffic to this pcap file")
	name := fs.String("name", "ib0", "interface name, also the control socket's name")
	leaseFile := fs.String("lease-file", "", "DHCP lease file: the lease with --dhcp, the bindings with --dhcp-server (default "+defaultStateDir()+"/NAME.lease or NAME.leases)")
	socket := fs.String("socket", "", "control socket path (default "+defaultSocketDir()+"/NAME.sock)")
	joinTimeout := fs.Duration("join-timeout", 0, "give up if the link is not up by then (0: keep trying)")
	var ways waysOptions
	ways.register(fs)
	linkDownTimeout := fs.Duration("link-down-timeout", 0, "exit (status 1) once the link has been down this long, the port gone or a failed device not opened again, for a service manager to restart the daemon (0: wait)")
	logLevel := fs.String("log-level", "info", "least severe log messages printed on stderr: debug, info, warn or error")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "ipoibd up: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return exitUsage
	}
	opt, err := checkUpFlags(*device, *port, *pkey, *gidIndex, *addr, *gateway, *dhcp, *dhcpServer)
	if err != nil {
		fmt.Fprintf(stderr, "ipoibd up: %v\n", err)
		return exitUsage
	}
	opt.pcap, opt.name, opt.joinTimeout, opt.linkDownTimeout = *pcap, *name, *joinTimeout, *linkDownTimeout
	if opt.linkDownTimeout < 0 {
		fmt.Fprintln(stderr, "ipoibd up: --link-down-timeout must not be negative")
		return exitUsage
	}
	if err := checkIfName(opt.name); err != nil {
		fmt.Fprintf(stderr, "ipoibd up: %v\n", err)
		return exitUsage
	}
	opt.leaseFile = *leaseFile
	if opt.leaseFile != "" && !opt.dhcp && opt.dhcpServer == "" {
		fmt.Fprintln(stderr, "ipoibd up: --lease-file is for --dhcp or --dhcp-server")
		return exitUsage
	}
	opt.socket = *socket
	opt.ways = ways
	if opt.socket == "" {
		opt.socket, opt.socketDir = filepath.Join(defaultSocketDir(), opt.name+".sock"), true
	}
	raiseProcs()
	ctx, stop := upContext()
	defer stop()
	// The driver's control-plane messages (joins, flushes, failures) go
	// to stderr; progress goes to stdout.
	opt.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serveUp(ctx, opt, stdout); err != nil {
		fmt.Fprintf(stderr, "ipoibd up: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func checkUpFlags(device string, port int, pkey string, gidIndex int, addr, gateway string, dhcp bool, dhcpServer string) (upOptions, error) {
	var opt upOptions
	if device == "" {
		return opt, errors.New("--device is required (see 'ipoibd devices')")
	}
	if drv, name, ok := strings.Cut(device, ":"); ok {
		opt.driver, opt.device = drv, name
	} else {
		opt.device = device
	}
	if port < 1 || port > 254 {
		return opt, fmt.Errorf("--port %d: ports are numbered 1 to 254", port)
	}
	opt.port = port
	pk, err := parsePKey(pkey)
	if err != nil {
		return opt, err
	}
	opt.pkey = pk
	if gidIndex < 0 || gidIndex > 255 {
		return opt, fmt.Errorf("--gid-index %d: must be 0 to 255", gidIndex)
	}
	opt.gidIndex = gidIndex
	switch {
	case dhcp && addr != "":
		return opt, errors.New("--dhcp and --addr exclude each other")
	case !dhcp && addr == "":
		return opt, errors.New("one of --dhcp or --addr CIDR is required")
	}
	opt.dhcp = dhcp
	if addr != "" {
		if opt.addr, err = netip.ParsePrefix(addr); err != nil || !opt.addr.Addr().Is4() {
			return opt, fmt.Errorf("--addr %q: not an IPv4 address with a prefix length, e.g. 10.0.0.1/24", addr)
		}
		if opt.addr.Bits() > 30 {
			return opt, fmt.Errorf("--addr %q: a /%d leaves no room for peers", addr, opt.addr.Bits())
		}
	}
	if gateway != "" {
		if opt.gateway, err = netip.ParseAddr(gateway); err != nil || !opt.gateway.Is4() {
			return opt, fmt.Errorf("--gateway %q: not an IPv4 address", gateway)
		}
		if !opt.addr.IsValid() || !opt.addr.Masked().Contains(opt.gateway) {
			return opt, fmt.Errorf("--gateway %s: outside the --addr subnet", gateway)
		}
	}
	if dhcpServer != "" {
		if !opt.addr.IsValid() {
			return opt, errors.New("--dhcp-server needs a static --addr")
		}
		if _, _, err := parseRange(dhcpServer, opt.addr); err != nil {
			return opt, err
		}
		opt.dhcpServer = dhcpServer
	}
	return opt, nil
}

// parseRange reads FIRST-LAST (or a CIDR) for --dhcp-server and checks it
// lies in subnet and excludes the server's own address.
func parseRange(s string, subnet netip.Prefix) (netip.Addr, netip.Addr, error) {
	bad := func(why string) (netip.Addr, netip.Addr, error) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("--dhcp-server %q: %s", s, why)
	}
	var first, last netip.Addr
	var err error
	if a, b, ok := strings.Cut(s, "-"); ok {
		if first, err = netip.ParseAddr(a); err != nil {
			return bad("first address: " + err.Error())
		}
		if last, err = netip.ParseAddr(b); err != nil {
			return bad("last address: " + err.Error())
		}
	} else {
		return bad("want FIRST-LAST, e.g. 10.0.0.100-10.0.0.199")
	}
	switch {
	case !first.Is4() || !last.Is4():
		return bad("IPv4 addresses only")
	case last.Less(first):
		return bad("last address before the first")
	case !subnet.Masked().Contains(first) || !subnet.Masked().Contains(last):
		return bad("range outside " + subnet.Masked().String())
	case !subnet.Addr().Less(first) && !last.Less(subnet.Addr()):
		return bad("range includes the server's own address " + subnet.Addr().String())
	}
	return first, last, nil
}

// daemon is a running `ipoibd up`.
type daemon struct {
	// finished closes once the daemon is torn down.
	finished chan struct{}
	opt      upOptions
	// ifc is the interface, from before the join on; after a device
	// failure, the one opened again (see reopen). ready says Up has
	// finished, so requests that need the IP stack can say they wait.
	ifc   atomic.Pointer[ipoibd.Interface]
	ready atomic.Bool
	out   io.Writer
	// statsMu guards statsBase, the counters of the interfaces closed
	// after their device failed, which stats adds to the open one's so
	// that `ipoibd stats` keeps counting across a reopen, and lastStats,
	// what the failed interface had counted, served while it is reopened.
	statsMu   sync.Mutex
	statsBase ipoibd.Stats
	lastStats *ipoibd.Stats
}

// stats returns the interface's counters since the daemon started: the
// open interface's, with those of the interfaces before it added.
func (d *daemon) stats() ipoibd.Stats {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	if d.lastStats != nil {
		return d.lastStats.Plus(d.statsBase)
	}
	return d.ifc.Load().Stats().Plus(d.statsBase)
}

// retire records the counters of ifc, whose device failed, before it is
// closed: stats serves them until replace.
func (d *daemon) retire(ifc *ipoibd.Interface) {
	last := ifc.Stats()
	d.statsMu.Lock()
	d.lastStats = &last
	d.statsMu.Unlock()
}

// replace makes ifc, opened after the failure, the daemon's interface,
// carrying the retired one's counters over.
func (d *daemon) replace(ifc *ipoibd.Interface) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	if d.lastStats != nil {
		d.statsBase = d.lastStats.Plus(d.statsBase)
		d.lastStats = nil
	}
	d.ifc.Store(ifc)
}

// config turns up's options into the interface's Config; progress lines
// go to out.
func (opt upOptions) config(out io.Writer) ipoibd.Config {
	cfg := ipoibd.Config{
		Device: opt.device, Port: opt.port, PKey: uint16(opt.pkey), GIDIndex: opt.gidIndex, Name: opt.name,
		Addr: opt.addr, Gateway: opt.gateway, DHCP: opt.dhcp, PcapPath: opt.pcap,
		JoinTimeout: opt.joinTimeout, Logger: opt.log,
		OnEvent: func(ev ipoibd.Event) {
			// Lease changes after start-up are logged by the interface.
			if ev.Kind != ipoibd.EventDHCP {
				fmt.Fprintf(out, "%s: %s\n", ev.Interface, ev.Text)
			}
		},
	}
	if opt.driver != "" {
		cfg.Device = opt.driver + ":" + opt.device
	}
	// The daemon checks addresses on the link before it hands them out
	// or uses them, and keeps leases across restarts (see leaseFilePath).
	if opt.dhcp {
		cfg.DHCPProbe, cfg.DHCPLeaseFile = true, opt.leaseFile
	}
	if opt.dhcpServer != "" {
		first, last, _ := parseRange(opt.dhcpServer, opt.addr)
		cfg.DHCPServer = &ipoibd.DHCPServer{PoolStart: first, PoolEnd: last, Router: opt.gateway,
			LeaseFile: opt.leaseFile, Probe: true}
	}
	return cfg
}

func serveUp(ctx context.Context, opt upOptions, out io.Writer) error {
	// finished closes when everything is torn down, for 'ipoibd down',
	// which answers only then; the answer goes out before we return.
	finished := make(chan struct{})
	var ctl *ctlServer
	defer func() {
		close(finished)
		if ctl != nil {
			ctl.waitDown()
			ctl.release()
		}
	}()
	notify(opt.log, "STATUS=starting")
	if opt.dhcp || opt.dhcpServer != "" {
		path, err := leaseFilePath(opt)
		if err != nil {
			return err
		}
		opt.leaseFile = path
	}
	d := &daemon{opt: opt, out: out, finished: finished}
	ifc, err := ipoibd.New(opt.config(out))
	if err != nil {
		var se *ipoibd.StepError
		if errors.As(err, &se) {
			return se.Err
		}
		return err
	}
	d.ifc.Store(ifc)
	// Closing the interface (the one open now: see reopen) releases the
	// lease, leaves the groups and closes the device.
	defer func() {
		teardownHook()
		d.ifc.Load().Close()
	}()
	// The control socket opens before the join, so `ipoibd stats` can
	// show the join retries of a daemon stuck without an SM, and `ipoibd
	// down` can stop it.
	ctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go shutdownWatchdog(ctx, finished, opt.log)
	srv, err := listenControl(opt.socket, opt.socketDir, d, stopRun, opt.log.Warn)
	if err != nil {
		return err
	}
	ctl = srv
	defer srv.close()
	fmt.Fprintf(out, "%s: control socket %s\n", opt.name, opt.socket)
	// A device that fails before the interface is up is opened again as
	// one that fails later is; anything else that stops Up ends the daemon.
	// deviceFailed says err is the device's failure, not the end of ctx.
	deviceFailed := func(err error) bool { return ctx.Err() == nil && errors.Is(err, ib.ErrDeviceFatal) }
	err = ifc.Up(ctx)
	for {
		if err != nil && !deviceFailed(err) {
			return upError(err)
		}
		if err == nil {
			err = d.serve(ctx, ifc)
			if !deviceFailed(err) {
				stopRun()
				fmt.Fprintf(out, "%s: leaving\n", opt.name)
				notify(opt.log, "STOPPING=1\nSTATUS=leaving")
				return err
			}
		}
		// The device failed: nothing made from it works again. Close
		// it (the DHCP client keeps its lease file) and open it anew.
		since := time.Now()
		fmt.Fprintf(out, "%s: the device failed (%v): opening it again\n", opt.name, err)
		opt.log.Error("device failed; opening it again", "device", ifc.Device(), "err", err)
		notify(opt.log, "STATUS=device failed; opening it again")
		d.retire(ifc)
		ifc.Close()
		if ifc, err = d.reopen(ctx, since); err != nil {
			stopRun()
			return err
		}
		if ifc == nil { // stopped while reopening
			fmt.Fprintf(out, "%s: leaving\n", opt.name)
			notify(opt.log, "STOPPING=1\nSTATUS=leaving")
			return nil
		}
		d.replace(ifc)
		err = nil // reopen brought it up
	}
}

// upError turns the error of Interface.Up into the one `up` reports.
func upError(err error) error {
	var se *ipoibd.StepError
	if errors.As(err, &se) {
		switch se.Step {
		case ipoibd.StepDHCP:
			return fmt.Errorf("DHCP: %w", se.Err)
		default:
			return se.Err
		}
	}
	return err
}

// serve runs the ways in and out of ifc, which is up, and says ready; it
// returns nil once ctx ends, an error wrapping ib.ErrDeviceFatal when the
// device fails, or, with --link-down-timeout, the error that ends the
// daemon when the link has been down that long (see watchLink).
func (d *daemon) serve(ctx context.Context, ifc *ipoibd.Interface) error {
	ws, err := startWays(d.opt.ways, ifc, d.out, d.opt.log)
	if err != nil {
		return err
	}
	defer ws.Close()
	d.ready.Store(true)
	defer d.ready.Store(false)
	fmt.Fprintf(d.out, "%s: ready\n", d.opt.name)
	notify(d.opt.log, "READY=1\nSTATUS=serving on "+d.opt.socket)
	return watchLink(ctx, ifc, d.opt.linkDownTimeout)
}

// parsePKey reads a --pkey value: a 16-bit number, decimal or 0x hex, with
// the full-member bit added (a daemon joins as a full member, RFC 4391
// section 5) and partition 0, the invalid P_Key, refused.
func parsePKey(s string) (ib.PKey, error) {
	pk, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0, fmt.Errorf("--pkey %q: not a 16-bit number (e.g. 0xffff or 0x8001)", s)
	}
	p := ib.PKey(pk) | ib.PKeyFullMember
	if !p.Valid() {
		return 0, fmt.Errorf("--pkey %q: partition 0 is the invalid P_Key", s)
	}
	return p, nil
}
