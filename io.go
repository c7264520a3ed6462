package ipoibd

// The Interface's I/O and read-only methods. All are safe from any
// goroutine but the event loop's; those that need the IP stack return
// ErrNotUp before Up has built it.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/stack"
	"github.com/ipoibd/ipoibd/stack/dhcp"
)

// Dial connects to address ("10.66.0.1:22") on network "tcp" or "udp"
// (also "tcp4", "udp4"): the link carries IPv4 and resolves no names. A
// TCP Conn also has CloseWrite and CloseRead, as *net.TCPConn does.
func (i *Interface) Dial(network, address string) (net.Conn, error) {
	return i.DialContext(context.Background(), network, address)
}

// DialContext is Dial with a context bounding the connection's set-up.
func (i *Interface) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	st, err := i.stack("dial")
	if err != nil {
		return nil, err
	}
	return st.Dial(ctx, network, address)
}

// Listen listens for TCP connections on address (":80" for every address
// of the interface, or the interface's address and a port).
func (i *Interface) Listen(network, address string) (net.Listener, error) {
	st, err := i.stack("listen")
	if err != nil {
		return nil, err
	}
	return st.Listen(network, address)
}

// ListenPacket opens a UDP socket on address (":5000"; port 0 picks one).
func (i *Interface) ListenPacket(network, address string) (net.PacketConn, error) {
	st, err := i.stack("listen")
	if err != nil {
		return nil, err
	}
	return st.ListenPacket(network, address)
}

// PingStats is the outcome of Ping, as ping(8) summarises it.
type PingStats = stack.PingStats

// PingReply is one answered echo request.
type PingReply = stack.PingReply

// PingOptions shapes Ping; the zero value sends one request with no
// payload. ping(8)'s defaults are Count 1 per second and Size 56.
type PingOptions struct {
	// Count is how many requests to send; 0 means 1.
	Count int
	// Interval separates the requests.
	Interval time.Duration
	// Size is the payload size in bytes, up to stack.PingMaxSize.
	Size int
	// Linger is how long to wait for replies after the last request; 0
	// means stack.PingLinger.
	Linger time.Duration
	// OnReply, if set, is called for each reply as it comes.
	OnReply func(PingReply)
}

// Ping sends ICMP echo requests to dst and collects the replies until all
// have come, Linger after the last request, or ctx ends.
func (i *Interface) Ping(ctx context.Context, dst netip.Addr, opt PingOptions) (PingStats, error) {
	st, err := i.stack("ping")
	if err != nil {
		return PingStats{}, err
	}
	if opt.Count == 0 {
		opt.Count = 1
	}
	return stack.PingWith(ctx, st.S, dst, opt.Count, opt.Interval, opt.Size, stack.PingOptions{Linger: opt.Linger, OnReply: opt.OnReply})
}

// Addr returns the interface's address and prefix: the static one, or the
// DHCP lease's; the zero Prefix before Up has set one.
func (i *Interface) Addr() netip.Prefix {
	i.upMu.Lock()
	c := i.client
	i.upMu.Unlock()
	if c != nil {
		if l, ok := c.Lease(); ok {
			return l.Addr
		}
		return netip.Prefix{}
	}
	if i.st.Load() == nil {
		return netip.Prefix{}
	}
	return i.cfg.Addr
}

// Stack returns the IP stack under the interface (nil before Up), for
// what this package does not cover: gVisor's whole API is reachable
// through it. What a program does there is its own affair; the
// Interface's methods keep working.
func (i *Interface) Stack() *stack.Stack { return i.st.Load() }

// Name returns the interface's name (Config.Name).
func (i *Interface) Name() string { return i.cfg.Name }

// Device returns the driver and device the interface runs on, as
// "DRIVER:NAME".
func (i *Interface) Device() string { return i.drv + ":" + i.devName }

// Port returns the port number the interface runs on.
func (i *Interface) Port() int { return i.cfg.Port }

// HWAddr returns the interface's 20-byte IPoIB hardware address (QPN and
// port GID, RFC 4391 section 9.1.1) in the form ip(8) prints.
func (i *Interface) HWAddr() string {
	return i.link.AddrString(i.link.NetDev().HWAddr())
}

// MTU returns the IP MTU of the link, which follows the broadcast group's.
func (i *Interface) MTU() int { return i.link.NetDev().MTU() }

// LinkState reports whether the link is up and, when it is not, why.
func (i *Interface) LinkState() (up bool, reason error) { return i.link.NetDev().LinkState() }

// Group returns the broadcast group as joined (zero until it is).
func (i *Interface) Group() ipoib.GroupInfo { return i.link.Group() }

// LinkAddr returns the interface's 20-byte IPoIB hardware address.
func (i *Interface) LinkAddr() []byte { return i.link.NetDev().HWAddr() }

// Lease returns the DHCP lease the interface holds, if it was configured
// by DHCP and holds one now.
func (i *Interface) Lease() (dhcp.Lease, bool) {
	i.upMu.Lock()
	c := i.client
	i.upMu.Unlock()
	if c == nil {
		return dhcp.Lease{}, false
	}
	return c.Lease()
}

// PortAttr returns the port's attributes as the driver reports them now
// (state, LID, GIDs, P_Keys, MTU, rate).
func (i *Interface) PortAttr() (ib.PortAttr, error) {
	var attr ib.PortAttr
	var err error
	if cerr := i.loop.Call("ipoibd query port", func() { attr, err = i.dev.QueryPort(i.cfg.Port) }); cerr != nil {
		return attr, cerr
	}
	return attr, err
}

// FormatHWAddr formats a link address of this interface's kind.
func (i *Interface) FormatHWAddr(addr []byte) string { return i.link.AddrString(addr) }

// Neighbour is one entry of the interface's ARP cache.
type Neighbour struct {
	Addr netip.Addr
	// LinkAddr is the neighbour's IPoIB hardware address as ip(8)
	// prints it.
	LinkAddr string
	// State is the entry's state (Reachable, Stale, ...).
	State string
}

// Peers is the interface's view of its neighbours: the ARP cache, the
// IPoIB peer cache with its path records, and the broadcast group.
type Peers struct {
	Neighbours []Neighbour
	Peers      []ipoib.PeerInfo
	Group      ipoib.GroupInfo
}

// Peers returns the neighbour, peer and path table.
func (i *Interface) Peers() (Peers, error) {
	st, err := i.stack("peers")
	if err != nil {
		return Peers{}, err
	}
	var p Peers
	if cerr := i.loop.Call("ipoibd peers", func() { p.Peers, err = i.link.Peers() }); cerr != nil {
		return p, cerr
	}
	if err != nil {
		return p, err
	}
	neigh, err := st.Neighbors()
	if err != nil {
		return p, err
	}
	for _, n := range neigh {
		p.Neighbours = append(p.Neighbours, Neighbour{Addr: n.Addr, LinkAddr: i.link.AddrString(n.LinkAddr), State: n.State.String()})
	}
	p.Group = i.link.Group()
	return p, nil
}

// Stats are an Interface's counters.
type Stats struct {
	// Interface is the interface's name.
	Interface string `json:"interface"`
	// Netdev holds the link's counters (packets, bytes, drops and their
	// reasons, joins), which exist from New on.
	Netdev counter.Snapshot `json:"netdev"`
	// Driver holds the device driver's own counters, for drivers that
	// keep them (ib.CounterSource: the udp driver's ICRC failures).
	Driver counter.Snapshot `json:"driver,omitempty"`
	// Endpoint (stack.EndpointStats) and ARP (stack.ARPStats) are the IP
	// stack's side, zero before Up.
	Endpoint counter.Snapshot `json:"endpoint"`
	ARP      counter.Snapshot `json:"arp"`
}

// Groups returns the non-empty groups of s in the order `ipoibd stats`
// prints them, each with its name.
func (s Stats) Groups() []StatsGroup {
	var out []StatsGroup
	for _, g := range []StatsGroup{{"netdev", s.Netdev}, {"driver", s.Driver}, {"endpoint", s.Endpoint}, {"arp", s.ARP}} {
		if len(g.Counters) > 0 {
			out = append(out, g)
		}
	}
	return out
}

// Plus returns s with o's counters added, group by group and name by name
// (counter.Snapshot.Plus); the name is s's. A daemon that opens its
// interface again after a device failure adds the closed interface's
// last Stats to the new one's, so its counters keep counting.
func (s Stats) Plus(o Stats) Stats {
	return Stats{
		Interface: s.Interface,
		Netdev:    s.Netdev.Plus(o.Netdev),
		Driver:    s.Driver.Plus(o.Driver),
		Endpoint:  s.Endpoint.Plus(o.Endpoint),
		ARP:       s.ARP.Plus(o.ARP),
	}
}

// StatsGroup is one named group of counters of Stats.
type StatsGroup struct {
	Name     string
	Counters counter.Snapshot
}

// Stats returns the interface's counters. It works from New on, so a
// program can show why a link is slow to come up.
func (i *Interface) Stats() Stats {
	s := Stats{
		Interface: i.cfg.Name,
		Netdev:    i.link.NetDev().Stats().Snapshot(),
		Endpoint:  counter.Of(stack.EndpointStats{}),
		ARP:       counter.Of(stack.ARPStats{}),
	}
	if cs, ok := i.dev.(ib.CounterSource); ok {
		s.Driver = cs.DriverCounters()
	}
	if st := i.st.Load(); st != nil {
		s.Endpoint = st.Endpoint.Snapshot()
		s.ARP = stack.ARPProtocolOf(st.S).Snapshot()
	}
	return s
}

// String names the interface for logs: "ib0 on verbs:mlx5_0 port 1".
func (i *Interface) String() string {
	return fmt.Sprintf("%s on %s port %d", i.cfg.Name, i.Device(), i.cfg.Port)
}
