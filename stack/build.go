package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ipoibd/ipoibd/netdev"
)

// DefaultNICID is the NIC number NewStack gives the device when Options
// leaves it zero.
const DefaultNICID tcpip.NICID = 1

// Errors of the stack helpers.
var (
	// ErrBadOptions means NewStack was given unusable Options.
	ErrBadOptions = errors.New("stack: invalid options")
	// ErrGVisor wraps an error gVisor reported; its text is gVisor's.
	ErrGVisor = errors.New("stack: gVisor refused")
	// ErrNotMember means LeaveGroup was called for a group not joined.
	ErrNotMember = errors.New("stack: not a member of the group")
)

// Options configures NewStack.
type Options struct {
	// Addr is the interface's IPv4 address and subnet, e.g.
	// 10.0.0.1/24. The zero Prefix leaves the NIC without an address, for
	// a DHCP client (package stack/dhcp) to configure.
	Addr netip.Prefix
	// Gateway, when valid, becomes the default route's next hop; it must
	// lie inside Addr's subnet.
	Gateway netip.Addr
	// NICID numbers the NIC; zero means DefaultNICID.
	NICID tcpip.NICID
	// Pcap, TxQueueLen and Groups are passed to NewEndpoint.
	Pcap       io.Writer
	TxQueueLen int
	Groups     LinkGroups
	// NoSACK turns off TCP selective acknowledgements, which NewStack
	// turns on (gVisor's default is off; on a lossy fabric they matter).
	NoSACK bool
	// NoGSO turns off gVisor's software segmentation (see
	// EndpointOptions.NoGSO).
	NoGSO bool
	// NoGRO turns off receive coalescing (see EndpointOptions.NoGRO).
	NoGRO bool
}

// Stack is a gVisor stack with one IPoIB NIC: IPv4, ICMP, TCP, UDP and
// ARPProtocol, a static address and routes. Its methods are safe from any
// goroutine.
type Stack struct {
	// S is the gVisor stack, for anything the helpers do not cover.
	S *gvstack.Stack
	// Endpoint is the link endpoint over the device.
	Endpoint *Endpoint
	// NIC is the NIC's number in S.
	NIC tcpip.NICID
	// Addr is the interface address NewStack configured.
	Addr netip.Prefix
}

// NewStack builds a gVisor stack over dev (see Stack) with opts' address
// and routes: the subnet on the NIC, and a default route through
// opts.Gateway when given. It also records the all-hosts group 224.0.0.1,
// which gVisor's IPv4 joins by itself, with the link driver
// (LinkGroups), without waiting for the join to finish. Safe from any
// goroutine; must not be called on the device's loop (gVisor may send
// from inside these calls, which is fine, but a LinkGroups join is
// waited for).
func NewStack(dev *netdev.Device, opts Options) (*Stack, error) {
	static := opts.Addr != netip.Prefix{}
	if static && (!opts.Addr.IsValid() || !opts.Addr.Addr().Is4()) {
		return nil, fmt.Errorf("stack: new stack: address %v is not an IPv4 prefix: %w", opts.Addr, ErrBadOptions)
	}
	if opts.Gateway.IsValid() && (!static || !opts.Gateway.Is4() || !opts.Addr.Masked().Contains(opts.Gateway)) {
		return nil, fmt.Errorf("stack: new stack: gateway %v outside %v: %w", opts.Gateway, opts.Addr.Masked(), ErrBadOptions)
	}
	ep, err := NewEndpoint(dev, EndpointOptions{TxQueueLen: opts.TxQueueLen, Pcap: opts.Pcap, Groups: opts.Groups, NoGSO: opts.NoGSO, NoGRO: opts.NoGRO})
	if err != nil {
		return nil, err
	}
	nicID := opts.NICID
	if nicID == 0 {
		nicID = DefaultNICID
	}
	s := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, NewARPProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	fail := func(what string, e tcpip.Error) (*Stack, error) {
		_ = s.RemoveNIC(nicID)
		s.Destroy()
		return nil, fmt.Errorf("stack: new stack on %s: %s: %w: %s", dev.Name(), what, ErrGVisor, e)
	}
	if !opts.NoSACK {
		sack := tcpip.TCPSACKEnabled(true)
		if e := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); e != nil {
			return fail("enable SACK", e)
		}
	}
	if e := s.CreateNICWithOptions(nicID, ep, gvstack.NICOptions{Name: dev.Name()}); e != nil {
		ep.Close()
		s.Destroy()
		return nil, fmt.Errorf("stack: new stack on %s: create NIC %d: %w: %s", dev.Name(), nicID, ErrGVisor, e)
	}
	bindLink(s, nicID)
	// One NIC carries everything: the subnet, and the limited broadcast
	// and IPv4 multicast, which would otherwise have no route (a DHCP
	// client needs the broadcast one before it has an address).
	routes := []tcpip.Route{
		{Destination: mustSubnet(header.IPv4Broadcast, 32), NIC: nicID},
		{Destination: mustSubnet(tcpip.AddrFrom4([4]byte{224}), 4), NIC: nicID},
	}
	if static {
		pa := tcpip.ProtocolAddress{
			Protocol: ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   addrToTCPIP(opts.Addr.Addr()),
				PrefixLen: opts.Addr.Bits(),
			},
		}
		if e := s.AddProtocolAddress(nicID, pa, gvstack.AddressProperties{}); e != nil {
			return fail("add address "+opts.Addr.String(), e)
		}
		routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: nicID})
	}
	if opts.Gateway.IsValid() {
		routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, Gateway: addrToTCPIP(opts.Gateway), NIC: nicID})
	}
	s.SetRouteTable(routes)
	st := &Stack{S: s, Endpoint: ep, NIC: nicID, Addr: opts.Addr}
	// gVisor joined 224.0.0.1 on the NIC by itself; the fabric must hear
	// of it too. A failed join is counted in the endpoint's GroupErrors.
	ep.joinGroupAsync(netip.AddrFrom4([4]byte{224, 0, 0, 1}))
	return st, nil
}

// Close removes the NIC, which closes the endpoint, aborts the stack's
// connections and waits for its goroutines. The device stays open; it is
// the caller's.
func (s *Stack) Close() {
	_ = s.S.RemoveNIC(s.NIC)
	s.S.Destroy()
}

// JoinGroup joins IPv4 multicast group on the NIC: in gVisor (which sends
// the IGMP report) and on the link (LinkGroups), waiting for the link
// driver's answer or ctx.
func (s *Stack) JoinGroup(ctx context.Context, group netip.Addr) error {
	if !group.Is4() || !group.IsMulticast() {
		return fmt.Errorf("stack: join %v: %w", group, ErrBadOptions)
	}
	if e := s.S.JoinGroup(ipv4.ProtocolNumber, s.NIC, addrToTCPIP(group)); e != nil {
		return fmt.Errorf("stack: join %v: %w: %s", group, ErrGVisor, e)
	}
	if err := s.Endpoint.JoinGroup(ctx, group); err != nil {
		_ = s.S.LeaveGroup(ipv4.ProtocolNumber, s.NIC, addrToTCPIP(group))
		return err
	}
	return nil
}

// LeaveGroup undoes JoinGroup.
func (s *Stack) LeaveGroup(ctx context.Context, group netip.Addr) error {
	if e := s.S.LeaveGroup(ipv4.ProtocolNumber, s.NIC, addrToTCPIP(group)); e != nil {
		return fmt.Errorf("stack: leave %v: %w: %s", group, ErrGVisor, e)
	}
	return s.Endpoint.LeaveGroup(ctx, group)
}

// Neighbor is one entry of gVisor's IPv4 neighbour cache.
type Neighbor struct {
	Addr     netip.Addr
	LinkAddr []byte
	State    gvstack.NeighborState
}

// Neighbors returns the NIC's IPv4 neighbour cache, which ARPProtocol
// fills.
func (s *Stack) Neighbors() ([]Neighbor, error) {
	ents, e := s.S.Neighbors(s.NIC, ipv4.ProtocolNumber)
	if e != nil {
		return nil, fmt.Errorf("stack: neighbours of NIC %d: %w: %s", s.NIC, ErrGVisor, e)
	}
	out := make([]Neighbor, 0, len(ents))
	for _, n := range ents {
		out = append(out, Neighbor{Addr: addrFromTCPIP(n.Addr), LinkAddr: []byte(n.LinkAddr), State: n.State})
	}
	return out, nil
}

// DialTCP connects to addr over the stack.
func (s *Stack) DialTCP(ctx context.Context, addr netip.AddrPort) (*gonet.TCPConn, error) {
	c, err := gonet.DialContextTCP(ctx, s.S, fullAddr(s.NIC, addr), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack: dial %v: %w", addr, err)
	}
	return c, nil
}

// ListenTCP listens on port of the interface address.
func (s *Stack) ListenTCP(port uint16) (*gonet.TCPListener, error) {
	addr := netip.AddrPortFrom(s.Addr.Addr(), port)
	l, err := gonet.ListenTCP(s.S, fullAddr(s.NIC, addr), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack: listen on %v: %w", addr, err)
	}
	return l, nil
}

// mustSubnet returns the subnet addr/bits; the callers' masks are
// constants that cannot fail.
func mustSubnet(addr tcpip.Address, bits int) tcpip.Subnet {
	return tcpip.AddressWithPrefix{Address: addr, PrefixLen: bits}.Subnet()
}

// fullAddr converts addr to gVisor's form on NIC nic.
func fullAddr(nic tcpip.NICID, addr netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nic, Addr: addrToTCPIP(addr.Addr()), Port: addr.Port()}
}

// addrToTCPIP converts a netip address to gVisor's, IPv4 as 4 bytes.
func addrToTCPIP(a netip.Addr) tcpip.Address {
	if a.Is4() || a.Is4In6() {
		return tcpip.AddrFrom4(a.Unmap().As4())
	}
	if a.Is6() {
		return tcpip.AddrFrom16(a.As16())
	}
	return tcpip.Address{}
}

// addrFromTCPIP converts a gVisor address to netip's; the zero Address
// becomes the invalid Addr.
func addrFromTCPIP(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}
