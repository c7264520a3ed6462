// Package gvtest builds the reference a link endpoint is measured against:
// two gVisor stacks joined by gVisor's own channel endpoints. It is test
// support only; nothing outside _test.go files imports it.
package gvtest

import (
	"context"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// ChannelPair returns two stacks with IPv4, ICMP and TCP (SACK on), NIC 1 holding
// addresses a and b, joined by channel endpoints of the given MTU. Each
// packet is copied once on its way across, as a real link copies it. The
// stacks are destroyed when tb ends.
func ChannelPair(tb testing.TB, mtu uint32, a, b netip.Prefix) (*gvstack.Stack, *gvstack.Stack) {
	tb.Helper()
	mk := func(p netip.Prefix) (*gvstack.Stack, *channel.Endpoint) {
		s := gvstack.New(gvstack.Options{
			NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol},
			TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol4},
		})
		sack := tcpip.TCPSACKEnabled(true)
		if e := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); e != nil {
			tb.Fatal(e)
		}
		ep := channel.New(1024, mtu, "")
		if e := s.CreateNIC(1, ep); e != nil {
			tb.Fatal(e)
		}
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFrom4(p.Addr().As4()), PrefixLen: p.Bits()}}
		if e := s.AddProtocolAddress(1, pa, gvstack.AddressProperties{}); e != nil {
			tb.Fatal(e)
		}
		s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
		return s, ep
	}
	sa, ea := mk(a)
	sb, eb := mk(b)
	ctx, cancel := context.WithCancel(context.Background())
	pump := func(from, to *channel.Endpoint) {
		for {
			pkt := from.ReadContext(ctx)
			if pkt == nil {
				return
			}
			in := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithView(pkt.ToView())})
			proto := pkt.NetworkProtocolNumber
			pkt.DecRef()
			to.InjectInbound(proto, in)
			in.DecRef()
		}
	}
	go pump(ea, eb)
	go pump(eb, ea)
	tb.Cleanup(func() {
		cancel()
		sa.Destroy()
		sb.Destroy()
	})
	return sa, sb
}
