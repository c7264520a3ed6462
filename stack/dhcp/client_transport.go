// The client's traffic: datagrams in from the socket goroutine, and the
// messages of RFC 2131 section 4.3.2 and 4.4 out.

package dhcp

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/ipoibd/ipoibd/counter"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// serverBroadcast is where a client sends when it does not know (or may
// not use) its server: the limited broadcast address, server port.
var serverBroadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ServerPort)

// deliver queues a received datagram for the client's goroutine. It
// copies b (the socket reuses it) and drops the datagram when the queue
// is full: DHCP retransmits, and a flood must not stall the receiver.
//
// Replies to the server broadcast reach every client on the link, so on
// a busy fabric most of what arrives is other clients' OFFERs and ACKs.
// Those are recognised by their transaction ID (bytes 4 to 7, RFC 2131
// section 2) before anything is copied or queued, lest they crowd out
// the client's own reply.
func (c *Client) deliver(b []byte, _ netip.AddrPort) {
	if c.othersReply(b) {
		counter.Inc(&c.stats.V.Ignored)
		return
	}
	select {
	case c.events <- event{kind: evRx, data: bytes.Clone(b)}:
	default:
		counter.Inc(&c.stats.V.Ignored)
	}
}

// wants is the client's receive filter (ClientConfig.AttachFilter): the
// transaction-ID test of deliver, made on the IPv4 packet before gVisor
// parses it, queues it on the socket and wakes the socket goroutine. It
// refuses only an unfragmented-or-first-fragment UDP datagram to the
// client port whose message carries another transaction's ID; anything
// else, malformed included, it leaves to gVisor. It runs on the NIC's
// loop for every received packet.
func (c *Client) wants(proto tcpip.NetworkProtocolNumber, pkt []byte) bool {
	if proto != header.IPv4ProtocolNumber || len(pkt) < header.IPv4MinimumSize {
		return true
	}
	ip := header.IPv4(pkt)
	hl := int(ip.HeaderLength())
	if ip.Protocol() != uint8(header.UDPProtocolNumber) || ip.FragmentOffset() != 0 ||
		hl < header.IPv4MinimumSize || len(pkt) < hl+header.UDPMinimumSize+8 {
		return true
	}
	if header.UDP(pkt[hl:]).DestinationPort() != ClientPort {
		return true
	}
	if !c.othersReply(pkt[hl+header.UDPMinimumSize:]) {
		return true
	}
	counter.Inc(&c.stats.V.Ignored)
	return false
}

// othersReply says whether msg, a DHCP message, carries another
// transaction's ID (bytes 4 to 7, RFC 2131 section 2); a message too
// short to hold one is left to the parser.
func (c *Client) othersReply(msg []byte) bool {
	return len(msg) >= 8 && binary.BigEndian.Uint32(msg[4:8]) != c.curXID.Load()
}

// post queues ev, waiting for room unless the client is stopping.
func (c *Client) post(ev event) {
	select {
	case c.events <- ev:
	case <-c.stopReq:
	}
}

// sendDiscover broadcasts a DISCOVER (RFC 2131 section 4.4.1).
func (c *Client) sendDiscover() {
	m := c.message(dhcpv4.MessageTypeDiscover)
	c.withParams(m)
	if c.prevAddr.IsValid() {
		m.UpdateOption(dhcpv4.OptRequestedIPAddress(ip4(c.prevAddr)))
	}
	counter.Inc(&c.stats.V.Discovers)
	c.transmit(m, serverBroadcast)
}

// sendSelectingRequest broadcasts the REQUEST that accepts c.offer:
// ciaddr zero, the offered address in option 50 and the chosen server in
// option 54, so the other servers learn they were not chosen (RFC 2131
// section 4.3.2, SELECTING).
func (c *Client) sendSelectingRequest() {
	m := c.message(dhcpv4.MessageTypeRequest)
	c.withParams(m)
	m.UpdateOption(dhcpv4.OptRequestedIPAddress(c.offer.YourIPAddr))
	m.UpdateOption(dhcpv4.OptServerIdentifier(c.offer.ServerIdentifier()))
	counter.Inc(&c.stats.V.Requests)
	c.transmit(m, serverBroadcast)
}

// sendRebootRequest broadcasts the REQUEST of INIT-REBOOT: ciaddr zero,
// the remembered address in option 50, no option 54 (RFC 2131 section
// 4.3.2).
func (c *Client) sendRebootRequest() {
	m := c.message(dhcpv4.MessageTypeRequest)
	c.withParams(m)
	m.UpdateOption(dhcpv4.OptRequestedIPAddress(ip4(c.reboot.Addr.Addr())))
	counter.Inc(&c.stats.V.Requests)
	c.transmit(m, serverBroadcast)
}

// sendLeaseRequest sends the REQUEST of RENEWING (unicast to the server)
// or REBINDING (broadcast): ciaddr set, neither option 50 nor 54 (RFC
// 2131 section 4.3.2).
func (c *Client) sendLeaseRequest(dst netip.AddrPort) {
	m := c.message(dhcpv4.MessageTypeRequest)
	c.withParams(m)
	m.ClientIPAddr = ip4(c.lease.Addr.Addr())
	counter.Inc(&c.stats.V.Requests)
	c.transmit(m, dst)
}

// sendDecline broadcasts a DECLINE of l (RFC 2131 section 4.4.4):
// ciaddr zero, the address in option 50, a fresh xid.
func (c *Client) sendDecline(l *Lease) {
	c.newXID()
	m := c.message(dhcpv4.MessageTypeDecline)
	m.UpdateOption(dhcpv4.OptRequestedIPAddress(ip4(l.Addr.Addr())))
	m.UpdateOption(dhcpv4.OptServerIdentifier(ip4(l.ServerID)))
	counter.Inc(&c.stats.V.Declines)
	c.transmit(m, serverBroadcast)
}

// sendRelease unicasts a RELEASE of the lease to its server (RFC 2131
// section 4.4.6).
func (c *Client) sendRelease() {
	c.newXID()
	m := c.message(dhcpv4.MessageTypeRelease)
	m.ClientIPAddr = ip4(c.lease.Addr.Addr())
	m.UpdateOption(dhcpv4.OptServerIdentifier(ip4(c.lease.ServerID)))
	counter.Inc(&c.stats.V.Releases)
	c.transmit(m, netip.AddrPortFrom(c.lease.ServerID, ServerPort))
}

// transmit encodes and sends m; a failure is counted and logged, and the
// retransmission timer tries again.
func (c *Client) transmit(m *dhcpv4.DHCPv4, dst netip.AddrPort) {
	if err := c.tr.send(m.ToBytes(), dst); err != nil {
		counter.Inc(&c.stats.V.SendErrors)
		c.logf("%v", err)
	}
}
