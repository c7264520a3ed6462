package ipoibd

// The Interface's control plane: New, Up, WaitLink and Close build and take
// down a host (device, IPoIB link, IP stack, address). They run on the
// caller's goroutine and reach the event loop only through aio's Call;
// none may be called from the loop itself.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/stack"
	"github.com/ipoibd/ipoibd/stack/dhcp"
	"gvisor.dev/gvisor/pkg/tcpip"

	// The drivers register themselves in ib's table; an Interface names
	// them only through Config.Device.
	_ "github.com/ipoibd/ipoibd/ib/udp"
	_ "github.com/ipoibd/ipoibd/ib/verbs"
	_ "github.com/ipoibd/ipoibd/sim"
)

// Config says which port an Interface runs on and how its address is set.
// Device and one of Addr or DHCP are required; the rest has defaults.
type Config struct {
	// Device is the RDMA device, as `ipoibd devices` lists it: DRIVER:NAME
	// ("verbs:mlx5_0", "udp:eth0", "sim:demo/host1") or a NAME that only
	// one driver has.
	Device string
	// Port is the port number on the device; 0 means 1.
	Port int
	// PKey is the partition of the link (full membership implied); 0
	// means the default partition, 0xFFFF.
	PKey uint16
	// GIDIndex selects the port GID the interface's hardware address
	// carries (on RoCE, the entry of the IPv4-mapped address).
	GIDIndex int
	// Name names the interface ("ib0" when empty); it must be unique in
	// the process.
	Name string

	// Addr is the static IPv4 address and prefix, e.g. 10.66.0.1/24.
	Addr netip.Prefix
	// Gateway, with Addr, is the default route's next hop.
	Gateway netip.Addr
	// DHCP configures the address by DHCP over IPoIB (RFC 4390) instead;
	// Open returns once a lease is held, and the lease is renewed until
	// Close, which releases it.
	DHCP bool
	// DHCPLeaseFile, with DHCP, keeps the lease across restarts: a
	// restarted interface asks for it back (INIT-REBOOT, RFC 2131
	// section 3.2) instead of starting over.
	DHCPLeaseFile string
	// DHCPProbe, with DHCP, has the client probe an acknowledged address
	// with ARP (RFC 5227 address probes, from 0.0.0.0) before it uses
	// it, and decline it when some host answers.
	DHCPProbe bool
	// DHCPServer, with Addr, also serves DHCP leases on the link.
	DHCPServer *DHCPServer

	// PcapPath, if set, is a file the interface's IPoIB traffic is
	// written to (pcap, link type 242); Pcap is the same to a writer.
	PcapPath string
	Pcap     io.Writer

	// JoinTimeout bounds the wait for the broadcast group; 0 waits as
	// long as the context Open or Up is given allows.
	JoinTimeout time.Duration
	// Logger receives the control plane's messages (joins, flushes, lease
	// changes); nil discards them.
	Logger *slog.Logger
	// OnEvent, if set, is told of each step of bringing the interface up
	// and of lease changes afterwards. It is called on the goroutine
	// that takes the step and must not block.
	OnEvent func(Event)

	// Tuning holds settings most programs leave alone.
	Tuning Tuning
}

// Tuning holds the settings of Config that tests, benchmarks and programs
// running many interfaces in one process want; the zero value is right for
// one interface.
type Tuning struct {
	// Loop, if set, is the event loop the interface runs on, shared
	// with other interfaces (and a simulated fabric) instead of a loop
	// of its own. The caller runs it and keeps it running until Close
	// returns.
	Loop *aio.Context
	// SendDepth and RecvDepth are the UD queue pair's depths, and
	// BroadcastMTU the MTU asked for when this port creates the
	// broadcast group; zero means package ipoib's defaults.
	SendDepth, RecvDepth int
	BroadcastMTU         ib.MTU
	// NoGSO turns off gVisor's software segmentation.
	NoGSO bool
	// NoGRO turns off receive coalescing of TCP segments
	// (stack.EndpointOptions.NoGRO).
	NoGRO bool
	// DHCPBackoff paces the DHCP client's retransmissions (RFC 2131's
	// 4 s doubling to 64 s when zero); DHCPSeed, if non-zero, makes its
	// transaction IDs and jitter reproducible.
	DHCPBackoff dhcp.Backoff
	DHCPSeed    uint64
	// DHCPStartDelay bounds the DHCP client's random wait before its
	// first DISCOVER (dhcp.ClientConfig.StartDelay; none when zero).
	DHCPStartDelay time.Duration
	// NoAddress builds the IP stack without an address and runs no DHCP
	// client, for a program that configures the stack itself (Stack):
	// the project's tests run their own DHCP clients on manual clocks.
	NoAddress bool
}

// DHCPServer configures the DHCP server an Interface with a static address
// can run (Config.DHCPServer).
type DHCPServer struct {
	// PoolStart and PoolEnd bound the addresses handed out, inclusive;
	// zero means the whole subnet but the interface's own address.
	PoolStart, PoolEnd netip.Addr
	// Router and DNS go out as options 3 and 6.
	Router netip.Addr
	DNS    []netip.Addr
	// LeaseTime is the lease granted; zero means an hour.
	LeaseTime time.Duration
	// LeaseFile, if set, keeps the bindings across restarts.
	LeaseFile string
	// Probe has the server send an ARP request for each address before
	// it first offers it, and skip (and quarantine) one that a host
	// answers for: a server that lost its bindings then still hands out
	// no address a live client holds.
	Probe bool
}

// dhcpProbeWait bounds an ARP probe of the DHCP client or server: silence
// for this long means the address is free. An IPoIB fabric answers in
// microseconds.
const dhcpProbeWait = 500 * time.Millisecond

// leaveWait bounds how long Close waits for the SA to confirm that the
// port has left its groups: the first transmission of the leave and one
// retry at the SA client's default timeouts (1 s, then 2 s). A leave still
// unanswered then is left to the subnet manager, which forgets the member
// when the port goes down.
const leaveWait = ib.DefaultSATimeout * 3

// clientProbe is the DHCP client's probe: none unless on.
func clientProbe(on bool, st *stack.Stack) func(context.Context, netip.Addr) (bool, error) {
	if !on {
		return nil
	}
	return arpProbe(st, netip.IPv4Unspecified())
}

// arpProbe returns a probe of addresses on st's NIC from from (0.0.0.0
// for a client without an address), bounded by dhcpProbeWait.
func arpProbe(st *stack.Stack, from netip.Addr) func(context.Context, netip.Addr) (bool, error) {
	return func(ctx context.Context, a netip.Addr) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, dhcpProbeWait)
		defer cancel()
		return stack.ProbeAddr(ctx, st.S, st.NIC, a, from)
	}
}

// Errors of the package; each error returned wraps one of these or an
// error of the layer that failed.
var (
	// ErrConfig means a Config that cannot work; the message says which
	// field and why.
	ErrConfig = errors.New("ipoibd: invalid configuration")
	// ErrNotUp means the call needs the IP stack, which Up has not built
	// yet (the link is still joining or leasing).
	ErrNotUp = errors.New("ipoibd: the interface is not up yet")
	// ErrClosed means the Interface was closed.
	ErrClosed = errors.New("ipoibd: interface closed")
)

// Step names a stage of bringing an Interface up, as StepError reports it.
type Step string

// The stages of New and Up, in order.
const (
	StepOpen   Step = "open"   // device, link and event loop (New)
	StepJoin   Step = "join"   // the broadcast group (WaitLink)
	StepStack  Step = "stack"  // the IP stack and its pcap tap
	StepDHCP   Step = "dhcp"   // the DHCP lease, or the DHCP server
	StepClosed Step = "closed" // the Interface was closed meanwhile
)

// StepError is the error New, WaitLink and Up return: the stage that failed
// and why.
type StepError struct {
	Step Step
	Err  error
}

func (e *StepError) Error() string { return string(e.Step) + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *StepError) Unwrap() error { return e.Err }

// Interface is a program's end of an IPoIB link: a port, its IPoIB link
// layer and an IP stack on it. Its methods are safe from any goroutine but
// the event loop's (a function run by Tuning.Loop must not call them).
type Interface struct {
	cfg     Config
	log     *slog.Logger
	loop    *aio.Context
	ownLoop func() // stops and closes a loop of our own; nil when lent
	dev     ib.Device
	link    *ipoib.Link
	drv     string
	devName string

	// upMu serialises Up and Close; st is published for the other
	// methods once the stack exists.
	upMu   sync.Mutex
	up     bool
	closed bool
	// isClosed is set as Close starts, before it waits for upMu: Up's
	// waits (WaitLink, the lease) poll it without upMu and give up, so
	// that Close ends an Up still waiting instead of waiting for it.
	isClosed  atomic.Bool
	st        atomic.Pointer[stack.Stack]
	client    *dhcp.Client
	server    *dhcp.Server
	pcapFile  *os.File
	stopWatch context.CancelFunc
}

// Open brings an Interface up on cfg.Device, returning once it has its
// address (a DHCP lease, when cfg.DHCP) or ctx ends. It is New followed by
// Up.
func Open(ctx context.Context, cfg Config) (*Interface, error) {
	i, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := i.Up(ctx); err != nil {
		i.Close()
		return nil, err
	}
	return i, nil
}

// New opens the device and its IPoIB link and starts joining the broadcast
// group, without waiting: counters, the group and the link state can be
// read at once (a daemon shows them while it waits for an SM). Up finishes
// the job.
func New(cfg Config) (*Interface, error) {
	if err := cfg.check(); err != nil {
		return nil, &StepError{StepOpen, err}
	}
	i := &Interface{cfg: cfg, log: cfg.Logger}
	if i.log == nil {
		i.log = slog.New(slog.DiscardHandler)
	}
	drv, name, err := findDevice(cfg.Device)
	if err != nil {
		return nil, &StepError{StepOpen, err}
	}
	i.drv, i.devName = drv, name
	i.loop = cfg.Tuning.Loop
	if i.loop == nil {
		if i.loop, i.ownLoop, err = startLoop("ipoibd-" + cfg.Name); err != nil {
			return nil, &StepError{StepOpen, err}
		}
	}
	lc := ipoib.Config{
		Name: cfg.Name, Port: cfg.Port, PKey: ib.PKey(cfg.PKey), GIDIndex: cfg.GIDIndex,
		BroadcastMTU: cfg.Tuning.BroadcastMTU, SendDepth: cfg.Tuning.SendDepth, RecvDepth: cfg.Tuning.RecvDepth,
		Logger: i.log,
	}
	cerr := i.loop.Call("ipoibd open", func() {
		if i.dev, err = ib.Open(i.loop, drv, name); err != nil {
			return
		}
		if i.link, err = ipoib.New(i.loop, i.dev, lc); err != nil {
			i.dev.Close()
			return
		}
		if err = i.link.NetDev().Open(); err != nil {
			i.link.Close()
			i.dev.Close()
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		if i.ownLoop != nil {
			i.ownLoop()
		}
		return nil, &StepError{StepOpen, fmt.Errorf("%s:%s port %d: %w", drv, name, i.Port(), err)}
	}
	i.event(Event{Kind: EventJoining, Text: fmt.Sprintf("%s:%s port %d, P_Key %v: joining the broadcast group %s",
		drv, name, i.Port(), i.link.PKey(), ipoib.BroadcastGID(i.link.PKey()))})
	return i, nil
}

// check validates c and fills its defaults.
func (c *Config) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrConfig)
	}
	if c.Name == "" {
		c.Name = "ib0"
	}
	if c.Port == 0 {
		c.Port = 1
	}
	if c.PKey == 0 {
		c.PKey = uint16(ib.PKeyDefault)
	}
	static := c.Addr != netip.Prefix{}
	switch {
	case c.Device == "":
		return bad("no Device (see 'ipoibd devices')")
	case c.Port < 1 || c.Port > 254:
		return bad("port %d: ports are numbered 1 to 254", c.Port)
	case c.GIDIndex < 0:
		return bad("GID index %d is negative", c.GIDIndex)
	case static && c.DHCP:
		return bad("both a static address %v and DHCP; choose one", c.Addr)
	case !static && !c.DHCP && !c.Tuning.NoAddress:
		return bad("no address: set Addr, or DHCP")
	case c.Tuning.NoAddress && (static || c.DHCP):
		return bad("NoAddress with an address or DHCP")
	case static && (!c.Addr.Addr().Is4() || c.Addr.Bits() < 1 || c.Addr.Bits() > 30):
		return bad("address %v is not an IPv4 address with a prefix of /1 to /30", c.Addr)
	case static && (c.Addr.Addr() == c.Addr.Masked().Addr()):
		return bad("address %v is the subnet's own address", c.Addr)
	case c.Gateway.IsValid() && (!static || !c.Addr.Masked().Contains(c.Gateway)):
		return bad("gateway %v is not inside the address's subnet %v", c.Gateway, c.Addr.Masked())
	case c.DHCPServer != nil && !static:
		return bad("a DHCP server needs a static address")
	case (c.DHCPLeaseFile != "" || c.DHCPProbe) && !c.DHCP:
		return bad("DHCPLeaseFile and DHCPProbe are the DHCP client's; set DHCP")
	case c.PcapPath != "" && c.Pcap != nil:
		return bad("both PcapPath and Pcap; choose one")
	}
	if s := c.DHCPServer; s != nil {
		subnet := c.Addr.Masked()
		if s.PoolStart.IsValid() != s.PoolEnd.IsValid() {
			return bad("DHCP pool needs both ends")
		}
		if s.PoolStart.IsValid() && (!subnet.Contains(s.PoolStart) || !subnet.Contains(s.PoolEnd) || s.PoolEnd.Less(s.PoolStart)) {
			return bad("DHCP pool %v-%v is not an ascending range inside %v", s.PoolStart, s.PoolEnd, subnet)
		}
	}
	return nil
}

// startLoop starts an event loop of the Interface's own.
func startLoop(name string) (*aio.Context, func(), error) {
	loop, err := aio.New(aio.WithName(name))
	if err != nil {
		return nil, nil, err
	}
	stop := loop.Start()
	return loop, func() { _ = stop() }, nil
}

// findDevice resolves a Config.Device to a driver and a device name. A
// DRIVER:NAME is opened as given (probing every driver costs, and a
// simulated fabric of a thousand hosts is opened a thousand times); a bare
// NAME, or a device the open cannot find, is looked up in what the drivers
// can see, so the error names what exists and the drivers' own reasons
// (no RDMA in the kernel, libibverbs missing).
func findDevice(device string) (string, string, error) {
	drv, name, qualified := strings.Cut(device, ":")
	if !qualified {
		drv, name = "", device
	} else if _, err := ib.LookupDriver(drv); err != nil {
		return "", "", err
	}
	if qualified {
		return drv, name, nil
	}
	var names []string
	var found [][2]string
	var why []error
	for _, r := range ib.ProbeAll() {
		for _, d := range r.Devices {
			names = append(names, r.Driver+":"+d.Name)
			if d.Name == name {
				if errors.Is(r.Err, ib.ErrUnavailable) {
					return "", "", fmt.Errorf("device %s: %w", d.Name, r.Err)
				}
				found = append(found, [2]string{r.Driver, d.Name})
			}
		}
		if r.Err != nil {
			why = append(why, r.Err)
		}
	}
	switch len(found) {
	case 1:
		return found[0][0], found[0][1], nil
	case 0:
	default:
		return "", "", fmt.Errorf("device %q: %d drivers have it; say which, as DRIVER:%s: %w", name, len(found), name, ErrConfig)
	}
	msg := fmt.Sprintf("unknown device %q", name)
	if len(names) > 0 {
		msg += fmt.Sprintf(" (have: %s)", strings.Join(names, ", "))
	} else {
		msg += ": no RDMA devices found"
	}
	if len(why) == 0 {
		return "", "", errors.New(msg)
	}
	return "", "", fmt.Errorf("%s: %w", msg, errors.Join(why...))
}

// WaitLink waits until the link is up: the broadcast group joined and the
// port active. It fails when ctx ends, or after Config.JoinTimeout, with
// the link's reason, and at once when the device has failed (an error
// wrapping ib.ErrDeviceFatal: the Interface will not come up; close it and
// make another). Up's wait for a DHCP lease stops the same way. While it
// waits it reports EventStillJoining every five seconds.
func (i *Interface) WaitLink(ctx context.Context) error {
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	report := start.Add(5 * time.Second)
	for {
		if i.isClosed.Load() {
			return &StepError{StepClosed, ErrClosed}
		}
		up, reason := i.link.NetDev().LinkState()
		if up {
			return nil
		}
		if errors.Is(reason, ib.ErrDeviceFatal) {
			// Nothing made from a failed device works again: waiting
			// would only run into JoinTimeout, or forever without one.
			return &StepError{StepJoin, fmt.Errorf("link not up: %w", reason)}
		}
		now := time.Now()
		if i.cfg.JoinTimeout > 0 && now.Sub(start) > i.cfg.JoinTimeout {
			return &StepError{StepJoin, fmt.Errorf("link not up after %v: %v", i.cfg.JoinTimeout, reason)}
		}
		if now.After(report) {
			i.event(Event{Kind: EventStillJoining, Text: fmt.Sprintf("still joining after %v: %v", now.Sub(start).Round(time.Second), reason)})
			report = now.Add(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return &StepError{StepJoin, fmt.Errorf("stopped while joining: %v (%w)", reason, ctx.Err())}
		case <-tick.C:
		}
	}
}

// Up finishes what New started: it waits for the link (WaitLink), builds
// the IP stack, and sets the address, statically or by DHCP (waiting for a
// lease); with Config.DHCPServer it then serves leases. On failure the
// Interface stays as New left it, to be closed.
func (i *Interface) Up(ctx context.Context) error {
	if err := i.WaitLink(ctx); err != nil {
		return err
	}
	i.upMu.Lock()
	defer i.upMu.Unlock()
	if i.closed {
		return &StepError{StepClosed, ErrClosed}
	}
	if i.up {
		return nil
	}
	g := i.link.Group()
	nd := i.link.NetDev()
	i.event(Event{Kind: EventLinkUp, Text: fmt.Sprintf("link up: hw %s, MTU %d (group MLID %v, Q_Key %v)",
		i.link.AddrString(nd.HWAddr()), nd.MTU(), g.MLID, g.QKey)})

	pcap := i.cfg.Pcap
	if i.cfg.PcapPath != "" {
		f, err := os.Create(i.cfg.PcapPath)
		if err != nil {
			return &StepError{StepStack, fmt.Errorf("pcap: %w", err)}
		}
		i.pcapFile, pcap = f, f
	}
	st, err := stack.NewStack(nd, stack.Options{
		Addr: i.cfg.Addr, Gateway: i.cfg.Gateway, Groups: i.link, Pcap: pcap, NoGSO: i.cfg.Tuning.NoGSO, NoGRO: i.cfg.Tuning.NoGRO,
	})
	if err != nil {
		i.closePcap()
		return &StepError{StepStack, err}
	}
	if i.cfg.DHCP {
		if err := i.lease(ctx, st); err != nil {
			st.Close()
			i.closePcap()
			return &StepError{StepDHCP, err}
		}
	} else if !i.cfg.Tuning.NoAddress {
		i.event(Event{Kind: EventAddress, Text: fmt.Sprintf("address %s", i.cfg.Addr), Addr: i.cfg.Addr})
	}
	if s := i.cfg.DHCPServer; s != nil {
		if err := i.serve(st, s); err != nil {
			i.stopClient()
			st.Close()
			i.closePcap()
			return &StepError{StepDHCP, fmt.Errorf("DHCP server: %w", err)}
		}
	}
	i.st.Store(st)
	i.up = true
	return nil
}

// lease runs the DHCP client until it holds a lease.
func (i *Interface) lease(ctx context.Context, st *stack.Stack) error {
	attr, err := i.PortAttr()
	if err != nil {
		return err
	}
	log := i.log.With("interface", i.cfg.Name)
	client, err := dhcp.NewClient(dhcp.ClientConfig{
		Stack: st.S, NIC: st.NIC, GUID: attr.GUID(),
		Backoff: i.cfg.Tuning.DHCPBackoff, Seed: i.cfg.Tuning.DHCPSeed, StartDelay: i.cfg.Tuning.DHCPStartDelay,
		LeaseFile: i.cfg.DHCPLeaseFile, Probe: clientProbe(i.cfg.DHCPProbe, st),
		AttachFilter: func(f func(tcpip.NetworkProtocolNumber, []byte) bool) func() {
			return st.Endpoint.AddFilter(f)
		},
		OnEvent: func(ev dhcp.Event) {
			logDHCPEvent(log, ev)
			i.event(Event{Kind: EventDHCP, Text: "DHCP " + ev.Kind.String() + ": " + ev.Lease.Addr.String(), DHCP: &ev})
		},
		Logf: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		return err
	}
	if err := client.Start(); err != nil {
		return err
	}
	i.event(Event{Kind: EventDHCPAsking, Text: fmt.Sprintf("DHCP: asking for a lease (client id %x)", client.ClientID())})
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go i.cancelWhenHopeless(wctx, cancel)
	l, err := client.WaitBound(wctx)
	if cause := context.Cause(wctx); err != nil && ctx.Err() == nil && (errors.Is(cause, ib.ErrDeviceFatal) || errors.Is(cause, ErrClosed)) {
		err = fmt.Errorf("no lease: %w", cause)
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		client.Stop(rctx)
		return err
	}
	i.client = client
	wctx, stop := context.WithCancel(context.Background())
	i.stopWatch = stop
	go watchDHCPState(wctx, log, client)
	text := fmt.Sprintf("address %s from DHCP server %s, lease %v", l.Addr, l.ServerID, l.Duration)
	if l.Router.IsValid() {
		text += fmt.Sprintf(", router %v", l.Router)
	}
	if len(l.DNS) > 0 {
		text += fmt.Sprintf(", DNS %v", l.DNS)
	}
	i.event(Event{Kind: EventAddress, Text: text, Addr: l.Addr, Lease: &l})
	return nil
}

// hopelessPoll is how often a wait that only a live, open Interface can
// end looks whether the device has failed or Close has begun.
const hopelessPoll = 100 * time.Millisecond

// cancelWhenHopeless cancels ctx once the device has failed (with the
// link's reason, wrapping ib.ErrDeviceFatal, as the cause: nothing can
// arrive through it any more, so a wait for a lease would last for ever)
// or the Interface is being closed (ErrClosed). It returns when ctx ends.
func (i *Interface) cancelWhenHopeless(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(hopelessPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if i.isClosed.Load() {
				cancel(ErrClosed)
				return
			}
			if _, reason := i.link.NetDev().LinkState(); errors.Is(reason, ib.ErrDeviceFatal) {
				cancel(reason)
				return
			}
		}
	}
}

// serve starts the DHCP server of Config.DHCPServer.
func (i *Interface) serve(st *stack.Stack, s *DHCPServer) error {
	lt := s.LeaseTime
	if lt == 0 {
		lt = time.Hour
	}
	log := i.log.With("interface", i.cfg.Name, "dhcp", "server")
	scfg := dhcp.ServerConfig{
		Stack: st.S, NIC: st.NIC, ServerID: i.cfg.Addr.Addr(), Subnet: i.cfg.Addr.Masked(),
		PoolStart: s.PoolStart, PoolEnd: s.PoolEnd, Router: s.Router, DNS: s.DNS, LeaseTime: lt,
		LeaseFile: s.LeaseFile,
		Logf:      func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
	}
	if s.Probe {
		scfg.Probe, scfg.ProbeWait = arpProbe(st, i.cfg.Addr.Addr()), dhcpProbeWait
	}
	srv, err := dhcp.NewServer(scfg)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		return err
	}
	i.server = srv
	first, last := s.PoolStart, s.PoolEnd
	if !first.IsValid() {
		first, last = i.cfg.Addr.Masked().Addr().Next(), lastHost(i.cfg.Addr.Masked())
	}
	i.event(Event{Kind: EventServing, Text: fmt.Sprintf("serving DHCP leases %s-%s", first, last)})
	return nil
}

// lastHost is the last address of p before its broadcast address.
func lastHost(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 2
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (i *Interface) stopClient() {
	if i.client == nil {
		return
	}
	i.stopWatch()
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, reason := i.link.NetDev().LinkState(); errors.Is(reason, ib.ErrDeviceFatal) {
		// A failed device sends nothing: keep the lease and its file,
		// so the interface opened again asks for the same address.
		i.client.Abandon(rctx)
	} else {
		// Release the lease on the way out (RFC 2131 section 4.4.6).
		i.client.Stop(rctx)
	}
	i.client = nil
}

func (i *Interface) closePcap() {
	if i.pcapFile != nil {
		i.pcapFile.Close()
		i.pcapFile = nil
	}
}

// Close takes the interface down: it stops the DHCP server, releases the
// lease, removes the stack (aborting its connections), leaves the groups
// and closes the device, and stops the Interface's own loop. It is safe to
// call more than once, and from another goroutine while Up waits: Up's
// waits for the link and for a lease give up (within 100 ms) with an
// error wrapping ErrClosed, and Close goes on once Up has returned. On a
// device that failed (LinkState's reason wraps ib.ErrDeviceFatal) the
// lease is kept, with its lease file, rather than released: see
// dhcp.Client.Abandon.
func (i *Interface) Close() error {
	i.isClosed.Store(true)
	i.upMu.Lock()
	defer i.upMu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	if i.server != nil {
		i.server.Stop()
	}
	i.stopClient()
	if st := i.st.Swap(nil); st != nil {
		st.Close()
	}
	i.closePcap()
	i.leave()
	err := i.loop.Call("ipoibd close", func() {
		i.link.Close()
		i.dev.Close()
	})
	if i.ownLoop != nil {
		i.ownLoop()
	}
	return err
}

// leave takes the link down and waits, at most leaveWait, for the SA to
// confirm the port has left its groups, so that the subnet manager keeps
// no stale member of this port once the device is closed.
func (i *Interface) leave() {
	left := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(left) }) }
	err := i.loop.Call("ipoibd leave", func() {
		if err := i.link.Leave(done); err != nil {
			i.log.Debug("leave", "interface", i.cfg.Name, "err", err)
			done()
		}
	})
	if err != nil {
		return
	}
	t := time.NewTimer(leaveWait)
	defer t.Stop()
	select {
	case <-left:
	case <-t.C:
		i.log.Warn("the SA did not confirm the leave of the IPoIB groups; closing anyway (the subnet manager forgets the member when the port goes down)",
			"interface", i.cfg.Name, "waited", leaveWait)
	}
}

// stack returns the IP stack, or ErrNotUp before Up has built it.
func (i *Interface) stack(op string) (*stack.Stack, error) {
	st := i.st.Load()
	if st == nil {
		i.upMu.Lock()
		closed := i.closed
		i.upMu.Unlock()
		if closed {
			return nil, fmt.Errorf("ipoibd: %s on %s: %w", op, i.cfg.Name, ErrClosed)
		}
		return nil, fmt.Errorf("ipoibd: %s on %s: %w", op, i.cfg.Name, ErrNotUp)
	}
	return st, nil
}

// event hands ev to Config.OnEvent.
func (i *Interface) event(ev Event) {
	if i.cfg.OnEvent != nil {
		ev.Interface = i.cfg.Name
		i.cfg.OnEvent(ev)
	}
}

// OnLoop runs fn on the interface's event loop and waits for it to
// return. It is for a program that changes the IP stack (Stack) where
// gVisor does not synchronise, such as its per-protocol default handlers
// (SetTransportProtocolHandler), which the loop reads for every packet
// it delivers: done on the loop, the change is ordered with every
// delivery. fn must not block, nor call the Interface's methods.
func (i *Interface) OnLoop(fn func()) error {
	return i.loop.Call("ipoibd on loop", fn)
}
