package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/stack"
	"github.com/ipoibd/ipoibd/stack/dhcp"
)

func init() {
	register(command{
		name:    "up",
		summary: "attach to a port, join the IPoIB link, configure IP and serve until stopped",
		run:     runUp,
	})
}

// upContext is the context `up` serves under; tests replace it to stop a
// daemon without signals.
var upContext = func() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

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
	joinTimeout    time.Duration
	log            *slog.Logger
}

func runUp(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("up", "--device NAME [--port N] [--pkey P] [--gid-index I] (--dhcp | --addr CIDR) [--dhcp-server RANGE] [--pcap FILE] [--log-level L]", stderr)
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
	socket := fs.String("socket", "", "control socket path (default "+defaultSocketDir()+"/NAME.sock)")
	joinTimeout := fs.Duration("join-timeout", 0, "give up if the link is not up by then (0: keep trying)")
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
	opt.pcap, opt.name, opt.joinTimeout = *pcap, *name, *joinTimeout
	opt.socket = *socket
	if opt.socket == "" {
		opt.socket = defaultSocketDir() + "/" + opt.name + ".sock"
	}
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
	pk, err := strconv.ParseUint(pkey, 0, 16)
	if err != nil {
		return opt, fmt.Errorf("--pkey %q: not a 16-bit number (e.g. 0xffff or 0x8001)", pkey)
	}
	opt.pkey = ib.PKey(pk) | ib.PKeyFullMember
	if !opt.pkey.Valid() {
		return opt, fmt.Errorf("--pkey %q: partition 0 is the invalid P_Key", pkey)
	}
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

// findDevice resolves --device against what the drivers can see. When it
// cannot, the error carries the drivers' own reasons (no RDMA in the
// kernel, libibverbs missing), since "no such device" alone hides them.
func findDevice(opt upOptions) (string, string, error) {
	if opt.driver != "" {
		if _, err := ib.LookupDriver(opt.driver); err != nil {
			return "", "", err
		}
	}
	var names []string
	var why []error
	for _, r := range ib.ProbeAll() {
		if opt.driver != "" && r.Driver != opt.driver {
			continue
		}
		for _, d := range r.Devices {
			if d.Name != opt.device {
				names = append(names, r.Driver+":"+d.Name)
				continue
			}
			if errors.Is(r.Err, ib.ErrUnavailable) {
				return "", "", fmt.Errorf("device %s: %w", d.Name, r.Err)
			}
			return r.Driver, d.Name, nil
		}
		if r.Err != nil {
			why = append(why, r.Err)
		}
	}
	msg := fmt.Sprintf("unknown device %q", opt.device)
	if len(names) > 0 {
		msg += fmt.Sprintf(" (have: %s)", strings.Join(names, ", "))
	} else {
		msg += ": no RDMA devices found"
	}
	if len(why) == 0 {
		return "", "", errors.New(msg)
	}
	return "", "", fmt.Errorf("%s: %w", msg, joinOneLine(why))
}

// logDHCPEvent logs a lease change: bound and renewed at info level, a
// lease lost (expired, refused) at warning level.
func logDHCPEvent(log *slog.Logger, ev dhcp.Event) {
	l := ev.Lease
	args := []any{"event", ev.Kind.String(), "addr", l.Addr.String(), "server", l.ServerID.String(), "lease_s", l.Duration.Seconds()}
	switch ev.Kind {
	case dhcp.EventBound:
		log.Info("DHCP lease bound", args...)
	case dhcp.EventRenewed:
		log.Info("DHCP lease renewed", args...)
	case dhcp.EventExpired, dhcp.EventNak:
		log.Warn("DHCP lease lost", args...)
	case dhcp.EventDeclined:
		log.Warn("DHCP address declined: already in use", args...)
	case dhcp.EventReleased:
		log.Info("DHCP lease released", args...)
	}
}

// watchDHCPState logs the client's moves to RENEWING and REBINDING (RFC
// 2131 section 4.4.5), which it reports as states rather than events.
func watchDHCPState(ctx context.Context, log *slog.Logger, c *dhcp.Client) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := c.State()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := c.State()
		if s == last {
			continue
		}
		last = s
		switch s {
		case dhcp.StateRenewing:
			log.Info("DHCP lease renewing", "state", s.String())
		case dhcp.StateRebinding:
			log.Warn("DHCP lease rebinding: the server did not answer the renewal", "state", s.String())
		}
	}
}

// daemon is a running `ipoibd up`.
type daemon struct {
	// finished closes once the daemon is torn down.
	finished chan struct{}
	opt      upOptions
	loop     *aio.Context
	link     *ipoib.Link
	// st is the configured stack: nil until the link is up and addressed,
	// so control requests that need it can say so while joining.
	st  atomic.Pointer[stack.Stack]
	out io.Writer
}

// onLoop runs fn on the daemon's loop and waits for it.
func (d *daemon) onLoop(fn func()) {
	done := make(chan struct{})
	d.loop.ScheduleOneshot("ipoibd", func() { fn(); close(done) })
	<-done
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
		}
	}()
	notify(opt.log, "STATUS=starting")
	drv, name, err := findDevice(opt)
	if err != nil {
		return err
	}
	loop, err := aio.New(aio.WithName("ipoibd-" + opt.name))
	if err != nil {
		return err
	}
	defer loop.Close()
	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan error, 1)
	go func() { loopDone <- loop.Run(loopCtx) }()
	defer func() { stopLoop(); <-loopDone }()

	d := &daemon{opt: opt, loop: loop, out: out, finished: finished}
	var dev ib.Device
	d.onLoop(func() {
		if dev, err = ib.Open(loop, drv, name); err != nil {
			return
		}
		d.link, err = ipoib.New(loop, dev, ipoib.Config{Name: opt.name, Port: opt.port, PKey: opt.pkey, GIDIndex: opt.gidIndex, Logger: opt.log})
		if err != nil {
			dev.Close()
			return
		}
		err = d.link.NetDev().Open()
	})
	if err != nil {
		return fmt.Errorf("%s:%s port %d: %w", drv, name, opt.port, err)
	}
	// Closing the link leaves the groups; the device is ours to close.
	defer d.onLoop(func() { d.link.Close(); dev.Close() })
	// The control socket opens before the join, so `ipoibd stats` can
	// show the join retries of a daemon stuck without an SM, and `ipoibd
	// down` can stop it.
	ctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	srv, err := listenControl(opt.socket, d, stopRun)
	if err != nil {
		return err
	}
	ctl = srv
	defer srv.close()
	fmt.Fprintf(out, "%s: control socket %s\n", opt.name, opt.socket)
	fmt.Fprintf(out, "%s: %s:%s port %d, P_Key %s: joining the broadcast group %s\n",
		opt.name, drv, name, opt.port, opt.pkey, ib.IPoIBBroadcastGID(opt.pkey))
	if err := d.waitLinkUp(ctx); err != nil {
		return err
	}
	g := d.link.Group()
	fmt.Fprintf(out, "%s: link up: hw %s, MTU %d (group MLID %v, Q_Key %v)\n",
		opt.name, d.link.AddrString(d.link.NetDev().HWAddr()), d.link.NetDev().MTU(), g.MLID, g.QKey)

	var pcapFile *os.File
	if opt.pcap != "" {
		if pcapFile, err = os.Create(opt.pcap); err != nil {
			return fmt.Errorf("pcap: %w", err)
		}
		defer pcapFile.Close()
	}
	sopt := stack.Options{Addr: opt.addr, Gateway: opt.gateway, Groups: d.link}
	if pcapFile != nil {
		sopt.Pcap = pcapFile
	}
	st, err := stack.NewStack(d.link.NetDev(), sopt)
	if err != nil {
		return err
	}
	defer st.Close()
	if opt.dhcp {
		client, err := d.lease(ctx, st, dev)
		if err != nil {
			return err
		}
		// Release the lease on the way out (RFC 2131 section 4.4.6).
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			client.Stop(rctx)
		}()
	} else {
		fmt.Fprintf(out, "%s: address %s\n", opt.name, opt.addr)
	}
	if opt.dhcpServer != "" {
		first, last, _ := parseRange(opt.dhcpServer, opt.addr)
		srv, err := dhcp.NewServer(dhcp.ServerConfig{
			Stack: st.S, NIC: st.NIC, ServerID: opt.addr.Addr(), Subnet: opt.addr.Masked(),
			PoolStart: first, PoolEnd: last, Router: opt.gateway,
		})
		if err == nil {
			err = srv.Start()
		}
		if err != nil {
			return fmt.Errorf("DHCP server: %w", err)
		}
		defer srv.Stop()
		fmt.Fprintf(out, "%s: serving DHCP leases %s-%s\n", opt.name, first, last)
	}

	d.st.Store(st)
	defer d.st.Store(nil)
	fmt.Fprintf(out, "%s: ready\n", opt.name)
	notify(opt.log, "READY=1\nSTATUS=serving on "+opt.socket)
	<-ctx.Done()
	fmt.Fprintf(out, "%s: leaving\n", opt.name)
	notify(opt.log, "STOPPING=1\nSTATUS=leaving")
	return nil
}

// lease runs the DHCP client until it holds a lease, printing progress.
func (d *daemon) lease(ctx context.Context, st *stack.Stack, dev ib.Device) (*dhcp.Client, error) {
	var attr ib.PortAttr
	var err error
	d.onLoop(func() { attr, err = dev.QueryPort(d.opt.port) })
	if err != nil {
		return nil, err
	}
	log := d.opt.log.With("interface", d.opt.name)
	client, err := dhcp.NewClient(dhcp.ClientConfig{
		Stack: st.S, NIC: st.NIC, GUID: attr.GUID(),
		OnEvent: func(ev dhcp.Event) { logDHCPEvent(log, ev) },
		Logf:    func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		return nil, err
	}
	if err := client.Start(); err != nil {
		return nil, err
	}
	go watchDHCPState(ctx, log, client)
	fmt.Fprintf(d.out, "%s: DHCP: asking for a lease (client id %x)\n", d.opt.name, client.ClientID())
	l, err := client.WaitBound(ctx)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		client.Stop(rctx)
		return nil, fmt.Errorf("DHCP: %w", err)
	}
	fmt.Fprintf(d.out, "%s: address %s from DHCP server %s, lease %v", d.opt.name, l.Addr, l.ServerID, l.Duration)
	if l.Router.IsValid() {
		fmt.Fprintf(d.out, ", router %v", l.Router)
	}
	if len(l.DNS) > 0 {
		fmt.Fprintf(d.out, ", DNS %v", l.DNS)
	}
	fmt.Fprintln(d.out)
	return client, nil
}

// waitLinkUp waits for the broadcast join, printing progress.
func (d *daemon) waitLinkUp(ctx context.Context) error {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	report := start.Add(5 * time.Second)
	for {
		up, reason := d.link.NetDev().LinkState()
		if up {
			return nil
		}
		now := time.Now()
		if d.opt.joinTimeout > 0 && now.Sub(start) > d.opt.joinTimeout {
			return fmt.Errorf("link not up after %v: %v", d.opt.joinTimeout, reason)
		}
		if now.After(report) {
			fmt.Fprintf(d.out, "%s: still joining after %v: %v\n", d.opt.name, now.Sub(start).Round(time.Second), reason)
			report = now.Add(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while joining: %v", reason)
		case <-tick.C:
		}
	}
}

// linkGroups lets the gVisor stack join IPv4 groups on the IPoIB link.
type linkGroups struct{ l *ipoib.Link }

func (g linkGroups) JoinLinkGroup(group netip.Addr, _ []byte) error { return g.l.JoinMulticast(group) }
func (g linkGroups) LeaveLinkGroup(group netip.Addr, _ []byte) error {
	return g.l.LeaveMulticast(group)
}

// defaultSocketDir is where control sockets live unless --socket says.
func defaultSocketDir() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return dir + "/ipoibd"
	}
	return fmt.Sprintf("%s/ipoibd-%d", os.TempDir(), os.Getuid())
}
