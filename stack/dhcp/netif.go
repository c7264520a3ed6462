// The two things the client and server need from a gVisor stack: a UDP
// socket on one NIC, and (for the client) changing the NIC's address and
// routes. Both sit behind small interfaces so the protocol logic can be
// driven without a stack by unit and fuzz tests. Everything here is safe
// from any goroutine: gVisor locks its own state.

package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxDatagram bounds a received DHCP message: the largest UDP payload
// an IPoIB link carries unfragmented (the 4092-byte IP MTU of a 4096-byte
// IB MTU, less the IPv4 and UDP headers). Messages are at least 300 bytes
// and rarely above 576, but a server with many options may send more than
// an Ethernet-sized buffer holds, and a message cut short loses its last
// options. A longer datagram is dropped whole (and counted malformed),
// never read in part.
const maxDatagram = 4092 - 20 - 8

// transport sends DHCP messages; the receive side is a goroutine that
// feeds the owner's handler.
type transport interface {
	send(b []byte, dst netip.AddrPort) error
}

// socket is a UDP endpoint bound to one port on one NIC, with broadcast
// sends enabled.
type socket struct {
	conn *gonet.UDPConn
	desc string
}

// openSocket binds port on every address of NIC nic (including the
// limited broadcast address, which gVisor's IPv4 keeps on every enabled
// NIC), so broadcasts arrive before the NIC has an address of its own.
func openSocket(s *gvstack.Stack, nic tcpip.NICID, port uint16) (*socket, error) {
	desc := fmt.Sprintf("UDP port %d on NIC %d", port, nic)
	var wq waiter.Queue
	ep, e := s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if e != nil {
		return nil, fmt.Errorf("dhcp: open %s: %w: %s", desc, ErrGVisor, e)
	}
	ep.SocketOptions().SetBroadcast(true)
	if e := ep.Bind(tcpip.FullAddress{NIC: nic, Port: port}); e != nil {
		ep.Close()
		return nil, fmt.Errorf("dhcp: bind %s: %w: %s", desc, ErrGVisor, e)
	}
	return &socket{conn: gonet.NewUDPConn(&wq, ep), desc: desc}, nil
}

// send writes b to dst. gVisor picks the source: the NIC's primary
// address, or 0.0.0.0 while the client holds no lease (see
// stackConfig.ensureSource).
func (k *socket) send(b []byte, dst netip.AddrPort) error {
	if _, err := k.conn.WriteTo(b, &net.UDPAddr{IP: ip4(dst.Addr()), Port: int(dst.Port())}); err != nil {
		return fmt.Errorf("dhcp: send %d bytes to %v from %s: %w", len(b), dst, k.desc, err)
	}
	return nil
}

// recvLoop reads datagrams and hands each to handle until the socket is
// closed. handle must not keep buf.
func (k *socket) recvLoop(handle func(b []byte, from netip.AddrPort)) {
	buf := make([]byte, maxDatagram+1)
	for {
		n, from, err := k.conn.ReadFrom(buf)
		if err != nil {
			return // closed, or close() set a deadline in the past
		}
		if n > maxDatagram {
			n = 0 // too long to be whole: handed on empty, to be counted
		}
		var src netip.AddrPort
		if ua, ok := from.(*net.UDPAddr); ok {
			src = ua.AddrPort()
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		}
		handle(buf[:n], src)
	}
}

// close stops recvLoop and frees the endpoint.
func (k *socket) close() {
	_ = k.conn.SetReadDeadline(time.Unix(1, 0))
	_ = k.conn.Close()
}

// netConfig changes the client's NIC: stackConfig on a gVisor stack, a
// recorder in tests.
type netConfig interface {
	// ensureSource makes sure datagrams can leave the NIC before it has
	// a lease: see stackConfig.ensureSource.
	ensureSource() error
	// dropSource undoes ensureSource.
	dropSource() error
	// configure installs l's address, subnet route and default route.
	configure(l *Lease) error
	// deconfigure removes what configure installed.
	deconfigure(l *Lease) error
}

// stackConfig is netConfig on a gVisor NIC.
type stackConfig struct {
	s   *gvstack.Stack
	nic tcpip.NICID
	// anyAdded says the 0.0.0.0 placeholder is on the NIC.
	anyAdded bool
}

// anyAddr is 0.0.0.0/32 as gVisor wants it.
var anyAddr = tcpip.ProtocolAddress{
	Protocol:          ipv4.ProtocolNumber,
	AddressWithPrefix: tcpip.AddressWithPrefix{Address: header.IPv4Any, PrefixLen: 32},
}

// ensureSource implements netConfig. gVisor will not send a datagram
// from a NIC without a primary address, yet a client in INIT must send
// from 0.0.0.0 (RFC 2131 section 4.1); so while there is no lease
// 0.0.0.0 itself is put on the NIC, unless the NIC already has an
// address of its own to send from.
func (c *stackConfig) ensureSource() error {
	if c.anyAdded || c.hasPrimary() {
		return nil
	}
	if e := c.s.AddProtocolAddress(c.nic, anyAddr, gvstack.AddressProperties{}); e != nil {
		return fmt.Errorf("dhcp: add 0.0.0.0 to NIC %d: %w: %s", c.nic, ErrGVisor, e)
	}
	c.anyAdded = true
	return nil
}

// dropSource implements netConfig.
func (c *stackConfig) dropSource() error {
	if !c.anyAdded {
		return nil
	}
	c.anyAdded = false
	if e := c.s.RemoveAddress(c.nic, header.IPv4Any); e != nil {
		return fmt.Errorf("dhcp: remove 0.0.0.0 from NIC %d: %w: %s", c.nic, ErrGVisor, e)
	}
	return nil
}

// deconfigure implements netConfig. An address that is already gone
// (someone else removed it) is not an error.
func (c *stackConfig) deconfigure(l *Lease) error {
	c.s.RemoveRoutes(func(r tcpip.Route) bool {
		return sameRoute(r, subnetRoute(c.nic, l)) || (l.Router.IsValid() && sameRoute(r, defaultRoute(c.nic, l)))
	})
	if e := c.s.RemoveAddress(c.nic, tcpipAddr(l.Addr.Addr())); e != nil {
		if _, gone := e.(*tcpip.ErrBadLocalAddress); !gone {
			return fmt.Errorf("dhcp: remove %v from NIC %d: %w: %s", l.Addr, c.nic, ErrGVisor, e)
		}
	}
	return nil
}

// hasPrimary reports whether the NIC has an IPv4 address to send from.
func (c *stackConfig) hasPrimary() bool {
	a, e := c.s.GetMainNICAddress(c.nic, ipv4.ProtocolNumber)
	return e == nil && a.Address.BitLen() != 0
}

// configure implements netConfig. The lease's address goes on before the
// placeholder comes off, so there is never a moment without a source.
func (c *stackConfig) configure(l *Lease) error {
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpipAddr(l.Addr.Addr()), PrefixLen: l.Addr.Bits()},
	}
	if e := c.s.AddProtocolAddress(c.nic, pa, gvstack.AddressProperties{}); e != nil {
		if _, dup := e.(*tcpip.ErrDuplicateAddress); !dup {
			return fmt.Errorf("dhcp: add %v to NIC %d: %w: %s", l.Addr, c.nic, ErrGVisor, e)
		}
	}
	if err := c.dropSource(); err != nil {
		return err
	}
	c.s.AddRoute(subnetRoute(c.nic, l))
	if l.Router.IsValid() {
		c.s.AddRoute(defaultRoute(c.nic, l))
	}
	return nil
}

// subnetRoute is the on-link route of l's subnet.
func subnetRoute(nic tcpip.NICID, l *Lease) tcpip.Route {
	return tcpip.Route{
		Destination: tcpip.AddressWithPrefix{Address: tcpipAddr(l.Addr.Masked().Addr()), PrefixLen: l.Addr.Bits()}.Subnet(),
		NIC:         nic,
	}
}

// defaultRoute is the default route through l's router.
func defaultRoute(nic tcpip.NICID, l *Lease) tcpip.Route {
	return tcpip.Route{Destination: header.IPv4EmptySubnet, Gateway: tcpipAddr(l.Router), NIC: nic}
}

// sameRoute compares the fields the client sets; a route in gVisor's
// table also carries list links, so == would never match.
func sameRoute(a, b tcpip.Route) bool {
	return a.Destination == b.Destination && a.Gateway == b.Gateway && a.NIC == b.NIC
}

// tcpipAddr converts an IPv4 netip address to gVisor's 4-byte form.
func tcpipAddr(a netip.Addr) tcpip.Address {
	if !a.Is4() {
		return tcpip.Address{}
	}
	return tcpip.AddrFrom4(a.As4())
}
