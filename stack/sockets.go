package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// ErrBadAddress means a network or address given to Dial, Listen or
// ListenPacket is not one the stack serves: the stack speaks IPv4 TCP and
// UDP, and resolves no host names (there is no resolver on the link).
var ErrBadAddress = errors.New("stack: unusable network address")

// Dial connects to address ("10.0.0.2:22") over network "tcp", "tcp4",
// "udp" or "udp4", returning gVisor's net.Conn. Safe from any goroutine
// but the device's loop.
func (s *Stack) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	proto, err := transport(network)
	if err != nil {
		return nil, fmt.Errorf("stack: dial %s %s: %w", network, address, err)
	}
	ap, err := parseAddrPort(address, false)
	if err != nil {
		return nil, fmt.Errorf("stack: dial %s %s: %w", network, address, err)
	}
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return nil, fmt.Errorf("stack: dial %s %s: a destination needs an address and a port: %w", network, address, ErrBadAddress)
	}
	if proto == "tcp" {
		return s.DialTCP(ctx, ap)
	}
	remote := fullAddr(s.NIC, ap)
	c, err := gonet.DialUDP(s.S, nil, &remote, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack: dial %s %s: %w", network, address, err)
	}
	return c, nil
}

// Listen listens for TCP connections on address (":80", "0.0.0.0:80" or the
// interface address with a port) over network "tcp" or "tcp4".
func (s *Stack) Listen(network, address string) (net.Listener, error) {
	local, err := s.bindAddr(network, address, "tcp", "Listen", "ListenPacket")
	if err != nil {
		return nil, err
	}
	l, err := gonet.ListenTCP(s.S, local, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack: listen %s %s: %w", network, address, err)
	}
	return l, nil
}

// ListenPacket opens a UDP socket bound to address over network "udp" or
// "udp4" (port 0 picks a free one).
func (s *Stack) ListenPacket(network, address string) (net.PacketConn, error) {
	local, err := s.bindAddr(network, address, "udp", "ListenPacket", "Listen")
	if err != nil {
		return nil, err
	}
	c, err := gonet.DialUDP(s.S, &local, nil, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stack: listen %s %s: %w", network, address, err)
	}
	return c, nil
}

// bindAddr checks Listen's or ListenPacket's arguments (call, which
// serves proto; other serves the other one) and returns the address to
// bind.
func (s *Stack) bindAddr(network, address, proto, call, other string) (tcpip.FullAddress, error) {
	p, err := transport(network)
	if err == nil && p != proto {
		err = fmt.Errorf("%w: %s is for %s; use %s for %s", ErrBadAddress, call, proto, other, p)
	}
	var ap netip.AddrPort
	if err == nil {
		ap, err = parseAddrPort(address, true)
	}
	if err != nil {
		return tcpip.FullAddress{}, fmt.Errorf("stack: listen %s %s: %w", network, address, err)
	}
	return s.local(ap), nil
}

// local is the bind address for ap: the unspecified address binds to the
// NIC as a whole, so a DHCP-leased address that changes later still
// receives.
func (s *Stack) local(ap netip.AddrPort) tcpip.FullAddress {
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		return tcpip.FullAddress{NIC: s.NIC, Port: ap.Port()}
	}
	return fullAddr(s.NIC, ap)
}

// transport reduces network to "tcp" or "udp".
func transport(network string) (string, error) {
	switch network {
	case "tcp", "tcp4":
		return "tcp", nil
	case "udp", "udp4":
		return "udp", nil
	}
	return "", fmt.Errorf("%w: network %q (want tcp, tcp4, udp or udp4: the link carries IPv4)", ErrBadAddress, network)
}

// parseAddrPort parses "a.b.c.d:port", or for a local address also ":port"
// and "port"-less forms with an empty host.
func parseAddrPort(address string, local bool) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %v", ErrBadAddress, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: port %q is not a number from 0 to 65535", ErrBadAddress, port)
	}
	if host == "" && local {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p)), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q is not an IPv4 address (host names are not resolved on the link)", ErrBadAddress, host)
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: %v is not an IPv4 address (the link carries IPv4)", ErrBadAddress, a)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}
