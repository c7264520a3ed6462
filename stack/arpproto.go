package stack

import (
	"errors"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ipoib/arp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ARPProtocolNumber is the gVisor network protocol number ARPProtocol
// registers: the ARP ethertype, so the NIC hands it the frames whose
// IPoIB header says ARP.
const ARPProtocolNumber tcpip.NetworkProtocolNumber = tcpip.NetworkProtocolNumber(arp.EtherType)

// ARPProtocol is ARP over IPoIB as a gVisor network protocol. Its
// endpoints are gVisor LinkAddressResolvers for IPv4, so gVisor's
// neighbour cache, NUD state machine and queues of packets waiting for
// resolution do the bookkeeping; the packet and the rules of RFC 4391
// section 9.1 are package ipoib/arp's, and ARPProtocol applies them.
// It replaces gVisor's own arp package, which knows only 6-byte Ethernet
// addresses and must not be registered on IPoIB NICs.
//
// Register it with NewARPProtocol in stack.Options.NetworkProtocols,
// next to ipv4.NewProtocol. It works on NICs whose link endpoint is an
// *Endpoint; on others it drops what it receives and resolves nothing.
type ARPProtocol struct {
	stack *gvstack.Stack
	c     counter.Block[ARPStats]
}

// ARPStats counts what the ARP protocol of one stack did, over all its
// NICs.
type ARPStats struct {
	// Received counts ARP frames handed to the protocol.
	Received uint64 `json:"received"`
	// Disabled counts frames that arrived while the endpoint was disabled.
	Disabled uint64 `json:"disabled"`
	// Malformed counts truncated frames, wrong address lengths and
	// sender addresses no host may use (multicast hardware address,
	// multicast or broadcast IPv4).
	Malformed uint64 `json:"malformed"`
	// WrongType counts frames of another hardware or protocol type (an
	// Ethernet ARP, say).
	WrongType uint64 `json:"wrong_type"`
	// Requests counts well-formed requests.
	Requests uint64 `json:"requests"`
	// Replies counts well-formed replies.
	Replies uint64 `json:"replies"`
	// NotForUs counts requests for addresses this NIC does not hold; they
	// are not answered.
	NotForUs uint64 `json:"not_for_us"`
	// Looped counts our own frames that came back to us.
	Looped uint64 `json:"looped"`
	// UnknownOp counts frames with opcodes other than request and reply.
	UnknownOp uint64 `json:"unknown_op"`
	// NoLink counts frames and requests on a NIC that is not over an
	// Endpoint.
	NoLink uint64 `json:"no_link"`
	// RequestsSent counts requests sent for gVisor's neighbour cache.
	RequestsSent uint64 `json:"requests_sent"`
	// RepliesSent counts answers to requests for local addresses.
	RepliesSent uint64 `json:"replies_sent"`
	// SendErrors counts requests and replies the NIC refused to send.
	SendErrors uint64 `json:"send_errors"`
}

var _ gvstack.NetworkProtocol = (*ARPProtocol)(nil)

// NewARPProtocol is a stack.NetworkProtocolFactory for ARPProtocol.
func NewARPProtocol(s *gvstack.Stack) gvstack.NetworkProtocol {
	return &ARPProtocol{stack: s}
}

// ARPProtocolOf returns the ARPProtocol registered with s, or nil.
func ARPProtocolOf(s *gvstack.Stack) *ARPProtocol {
	p, _ := s.NetworkProtocolInstance(ARPProtocolNumber).(*ARPProtocol)
	return p
}

// Stats returns a snapshot of the protocol's counters. Safe from any
// goroutine.
func (p *ARPProtocol) Stats() ARPStats {
	return p.c.Load()
}

// Snapshot returns the counters by name, for output.
func (p *ARPProtocol) Snapshot() counter.Snapshot { return p.c.Snapshot() }

// Number implements stack.NetworkProtocol.
func (p *ARPProtocol) Number() tcpip.NetworkProtocolNumber { return ARPProtocolNumber }

// MinimumPacketSize implements stack.NetworkProtocol. HandlePacket
// checks lengths itself, so that a short or foreign frame is counted.
func (p *ARPProtocol) MinimumPacketSize() int { return arp.Len }

// ParseAddresses implements stack.NetworkProtocol. ARP has no network
// addresses in the IP sense.
func (p *ARPProtocol) ParseAddresses([]byte) (src, dst tcpip.Address) {
	return tcpip.Address{}, tcpip.Address{}
}

// NewEndpoint implements stack.NetworkProtocol.
func (p *ARPProtocol) NewEndpoint(nic gvstack.NetworkInterface, _ gvstack.TransportDispatcher) gvstack.NetworkEndpoint {
	return &arpEndpoint{proto: p, nic: nic}
}

// SetOption implements stack.NetworkProtocol; there are no options.
func (p *ARPProtocol) SetOption(tcpip.SettableNetworkProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// Option implements stack.NetworkProtocol; there are no options.
func (p *ARPProtocol) Option(tcpip.GettableNetworkProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// Close implements stack.NetworkProtocol; there are no goroutines.
func (p *ARPProtocol) Close() {}

// Wait implements stack.NetworkProtocol; there are no goroutines.
func (p *ARPProtocol) Wait() {}

// Parse implements stack.NetworkProtocol: the whole ARP packet is the
// network header, and nothing follows it.
func (p *ARPProtocol) Parse(pkt *gvstack.PacketBuffer) (tcpip.TransportProtocolNumber, bool, bool) {
	_, ok := pkt.NetworkHeader().Consume(arp.Len)
	return 0, false, ok
}

// arpEndpoint is ARPProtocol on one NIC.
type arpEndpoint struct {
	proto   *ARPProtocol
	nic     gvstack.NetworkInterface
	enabled atomic.Bool
	link    atomic.Pointer[Endpoint] // found on first use; see ep
}

var (
	_ gvstack.NetworkEndpoint     = (*arpEndpoint)(nil)
	_ gvstack.LinkAddressResolver = (*arpEndpoint)(nil)
)

// arpEndpointStats satisfies stack.NetworkEndpointStats; the counters
// live in ARPProtocol.
type arpEndpointStats struct{}

// IsNetworkEndpointStats implements stack.NetworkEndpointStats.
func (arpEndpointStats) IsNetworkEndpointStats() {}

// ep returns the Endpoint under the NIC, or nil when the NIC is over
// another kind of link. gVisor hands a network protocol only a
// NetworkInterface, which hides the link endpoint, yet ARP over IPoIB
// needs the link's broadcast address and multicast mapping; the stack
// knows the NIC's link endpoint by NIC number. The look-up takes the
// stack's lock, so it is done once: NewStack makes it right after it
// creates the NIC (see bindLink), before gVisor can call in holding
// that lock.
func (e *arpEndpoint) ep() *Endpoint {
	if l := e.link.Load(); l != nil {
		return l
	}
	n, err := e.proto.stack.GetNICByID(e.nic.ID())
	if err != nil {
		return nil
	}
	l, _ := n.NetworkLinkEndpoint.(*Endpoint)
	if l != nil {
		e.link.Store(l)
	}
	return l
}

// bindLink has the ARP endpoint of NIC id in s find its link now, outside
// gVisor's locks (see arpEndpoint.ep).
func bindLink(s *gvstack.Stack, id tcpip.NICID) {
	if nep, err := s.GetNetworkEndpoint(id, ARPProtocolNumber); err == nil {
		if e, ok := nep.(*arpEndpoint); ok {
			e.ep()
		}
	}
}

// Enable implements stack.NetworkEndpoint; only an enabled NIC's
// endpoint may be enabled.
func (e *arpEndpoint) Enable() tcpip.Error {
	if !e.nic.Enabled() {
		return &tcpip.ErrNotPermitted{}
	}
	e.enabled.Store(true)
	return nil
}

// Enabled implements stack.NetworkEndpoint.
func (e *arpEndpoint) Enabled() bool { return e.nic.Enabled() && e.enabled.Load() }

// Disable implements stack.NetworkEndpoint.
func (e *arpEndpoint) Disable() { e.enabled.Store(false) }

// DefaultTTL is meaningless for ARP.
func (e *arpEndpoint) DefaultTTL() uint8 { return 0 }

// MTU implements stack.NetworkEndpoint: what is left of the link MTU
// after an ARP packet, which nothing uses since ARP carries no payload.
func (e *arpEndpoint) MTU() uint32 {
	return max(e.nic.MTU(), arp.Len) - arp.Len
}

// EndpointHeaderSize implements stack.NetworkEndpoint.
func (e *arpEndpoint) EndpointHeaderSize() uint32 { return arp.Len }

// MaxHeaderLength implements stack.NetworkEndpoint: room for the link
// header in front of the ARP packet.
func (e *arpEndpoint) MaxHeaderLength() uint16 { return e.nic.MaxHeaderLength() + arp.Len }

// WritePacket implements stack.NetworkEndpoint; ARP carries no
// transport packets.
func (e *arpEndpoint) WritePacket(*gvstack.Route, gvstack.NetworkHeaderParams, *gvstack.PacketBuffer) tcpip.Error {
	return &tcpip.ErrNotSupported{}
}

// WriteHeaderIncludedPacket implements stack.NetworkEndpoint; not
// supported, as for WritePacket.
func (e *arpEndpoint) WriteHeaderIncludedPacket(*gvstack.Route, *gvstack.PacketBuffer) tcpip.Error {
	return &tcpip.ErrNotSupported{}
}

// Close implements stack.NetworkEndpoint and forgets the link.
func (e *arpEndpoint) Close() { e.link.Store(nil) }

// NetworkProtocolNumber implements stack.NetworkEndpoint.
func (e *arpEndpoint) NetworkProtocolNumber() tcpip.NetworkProtocolNumber { return ARPProtocolNumber }

// Stats implements stack.NetworkEndpoint; the counters are the
// protocol's (ARPProtocol.Stats).
func (e *arpEndpoint) Stats() gvstack.NetworkEndpointStats { return arpEndpointStats{} }

// LinkAddressProtocol implements stack.LinkAddressResolver: ARP resolves
// IPv4 addresses.
func (e *arpEndpoint) LinkAddressProtocol() tcpip.NetworkProtocolNumber {
	return header.IPv4ProtocolNumber
}

// ResolveStaticAddress implements stack.LinkAddressResolver: the limited
// broadcast goes to the link broadcast address and an IPv4 group to its
// IPoIB multicast address (MGID ff12:401b:<P_Key>::<low 28 bits>, RFC
// 4391 section 4); nothing else resolves without asking.
func (e *arpEndpoint) ResolveStaticAddress(addr tcpip.Address) (tcpip.LinkAddress, bool) {
	l := e.ep()
	if l == nil || addr.Len() != header.IPv4AddressSize {
		return "", false
	}
	if addr == header.IPv4Broadcast {
		return l.broadcastAddr(), true
	}
	if header.IsV4MulticastAddress(addr) {
		a, err := l.link.Multicast(addrFromTCPIP(addr), nil)
		if err != nil {
			return "", false
		}
		return tcpip.LinkAddress(a), true
	}
	return "", false
}

// LinkAddressRequest implements stack.LinkAddressResolver: gVisor's
// neighbour cache calls it to send a request for target, broadcast when
// remote is empty (a new entry) and unicast to remote when it has one to
// confirm (NUD's probe state). localAddr, when empty, is the NIC's
// primary IPv4 address.
func (e *arpEndpoint) LinkAddressRequest(target, localAddr tcpip.Address, remote tcpip.LinkAddress) tcpip.Error {
	l := e.ep()
	if l == nil {
		counter.Inc(&e.proto.c.V.NoLink)
		return &tcpip.ErrNotSupported{}
	}
	if len(remote) == 0 {
		remote = l.broadcastAddr()
	}
	if localAddr.BitLen() == 0 {
		pa, err := e.nic.PrimaryAddress(header.IPv4ProtocolNumber)
		if err != nil {
			return err
		}
		if pa.Address.BitLen() == 0 {
			return &tcpip.ErrNetworkUnreachable{}
		}
		localAddr = pa.Address
	} else if !e.nic.CheckLocalAddress(header.IPv4ProtocolNumber, localAddr) {
		return &tcpip.ErrBadLocalAddress{}
	}
	if target.Len() != header.IPv4AddressSize || localAddr.Len() != header.IPv4AddressSize {
		return &tcpip.ErrBadAddress{}
	}
	a := arp.NewRequest([]byte(e.nic.LinkAddress()), localAddr.As4(), target.As4())
	if err := e.send(&a, remote); err != nil {
		return err
	}
	counter.Inc(&e.proto.c.V.RequestsSent)
	return nil
}

// send writes a to the link address to through the NIC.
func (e *arpEndpoint) send(a *arp.Packet, to tcpip.LinkAddress) tcpip.Error {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: int(e.MaxHeaderLength()),
	})
	defer pkt.DecRef()
	if err := a.Encode(pkt.NetworkHeader().Push(arp.Len)); err != nil {
		counter.Inc(&e.proto.c.V.SendErrors)
		return &tcpip.ErrMessageTooLong{}
	}
	pkt.NetworkProtocolNumber = ARPProtocolNumber
	if err := e.nic.WritePacketToRemote(to, pkt); err != nil {
		counter.Inc(&e.proto.c.V.SendErrors)
		return err
	}
	return nil
}

// HandlePacket implements stack.NetworkEndpoint for received ARP frames.
// Requests for a local address teach the neighbour cache the sender
// (HandleNeighborProbe) and are answered by unicast; replies confirm a
// pending or known entry (HandleNeighborConfirmation), as solicited when
// they came by unicast. Everything dropped is counted.
func (e *arpEndpoint) HandlePacket(pkt *gvstack.PacketBuffer) {
	c := &e.proto.c
	counter.Inc(&c.V.Received)
	if !e.Enabled() {
		counter.Inc(&c.V.Disabled)
		return
	}
	l := e.ep()
	if l == nil {
		counter.Inc(&c.V.NoLink)
		return
	}
	var (
		a   arp.Packet
		err error
	)
	if _, _, ok := e.proto.Parse(pkt); ok {
		err = a.Decode(pkt.NetworkHeader().Slice())
	} else {
		// Too short for ours; decode what there is to tell a foreign
		// ARP from a truncated one.
		raw, _ := pkt.Data().PullUp(pkt.Data().Size())
		err = a.Decode(raw)
	}
	if err != nil {
		if errors.Is(err, arp.ErrHardwareType) || errors.Is(err, arp.ErrProtocolType) {
			counter.Inc(&c.V.WrongType)
		} else {
			counter.Inc(&c.V.Malformed)
		}
		return
	}
	own := []byte(e.nic.LinkAddress())
	if err := a.Check(own); err != nil {
		if errors.Is(err, arp.ErrLooped) {
			counter.Inc(&c.V.Looped)
		} else {
			counter.Inc(&c.V.Malformed)
		}
		return
	}
	sender := tcpip.AddrFrom4(a.SenderIP)
	senderHW := tcpip.LinkAddress(a.SenderHW[:])
	switch a.Op {
	case arp.Request:
		counter.Inc(&c.V.Requests)
		target := tcpip.AddrFrom4(a.TargetIP)
		if !e.nic.CheckLocalAddress(header.IPv4ProtocolNumber, target) {
			counter.Inc(&c.V.NotForUs)
			if a.IsAnnouncement() {
				// A gratuitous ARP announces a (new) address; let it
				// refresh an entry the cache already has, nothing more.
				_ = e.nic.HandleNeighborConfirmation(header.IPv4ProtocolNumber, sender, senderHW,
					gvstack.ReachabilityConfirmationFlags{})
			}
			return
		}
		if !a.IsProbe() {
			_ = e.nic.HandleNeighborProbe(header.IPv4ProtocolNumber, sender, senderHW)
		}
		reply := a.Answer(own)
		if e.send(&reply, senderHW) == nil {
			counter.Inc(&c.V.RepliesSent)
		}
	case arp.Reply:
		counter.Inc(&c.V.Replies)
		_ = e.nic.HandleNeighborConfirmation(header.IPv4ProtocolNumber, sender, senderHW,
			gvstack.ReachabilityConfirmationFlags{
				// A reply sent to us alone answers our request; one sent
				// to the group is an announcement and must not make an
				// entry reachable.
				Solicited: pkt.PktType == tcpip.PacketHost,
			})
	default:
		counter.Inc(&c.V.UnknownOp)
	}
}
