package arp

import (
	"errors"

	"github.com/ipoibd/ipoibd/ipoib"
)

// The resolver rules of ARP on an IPoIB link: which packets a host may
// learn from, which it answers and how. They are IPoIB's (its addresses
// carry a QPN and a GID, its broadcast is a multicast group), so they
// live here; the stack's glue applies them to gVisor's neighbour cache.

// Errors of Check: a packet that decodes but that no host may learn from.
var (
	// ErrSenderMulticast means ar$sha is a multicast IPoIB address
	// (QPN 0xFFFFFF and a multicast GID): no host sends from a group.
	ErrSenderMulticast = errors.New("arp: sender hardware address is multicast")
	// ErrSenderIP means ar$spa is a multicast or limited-broadcast
	// address, for which RFC 1812 section 5.3.7 forbids ARP entries.
	ErrSenderIP = errors.New("arp: sender protocol address is multicast or broadcast")
	// ErrLooped means the packet is this host's own, come back through
	// the broadcast group (same QPN and GID as the receiving host).
	ErrLooped = errors.New("arp: packet sent by this host")
)

// firstMulticastOctet is the first octet of the IPv4 class D range,
// 224.0.0.0/4 (RFC 5771); everything from it up, 255.255.255.255
// included, is a group or broadcast address.
const firstMulticastOctet = 224

// Check reports whether a host whose IPoIB address is own may learn from
// a: nil, or one of ErrSenderMulticast, ErrSenderIP and ErrLooped. A
// sender IP of 0.0.0.0 passes: it is an address probe (see IsProbe).
func (a *Packet) Check(own []byte) error {
	var sender ipoib.Addr
	if err := sender.Decode(a.SenderHW[:]); err != nil {
		return err // cannot happen: SenderHW is AddrLen bytes
	}
	if sender.IsMulticast() {
		return ErrSenderMulticast
	}
	if a.SenderIP[0] >= firstMulticastOctet {
		return ErrSenderIP
	}
	if SameHost(a.SenderHW[:], own) {
		return ErrLooped
	}
	return nil
}

// IsProbe reports whether a is an address probe (RFC 5227 section
// 2.1.1): a request from 0.0.0.0. It asks whether anyone holds the
// target address and must not create a neighbour entry for its sender.
func (a *Packet) IsProbe() bool {
	return a.Op == Request && a.SenderIP == [ProtocolLen]byte{}
}

// IsAnnouncement reports whether a is a gratuitous ARP (RFC 5227
// section 2.3): sender and target protocol addresses equal. It may
// refresh an entry a host already has and creates none.
func (a *Packet) IsAnnouncement() bool {
	return a.SenderIP == a.TargetIP
}

// NewRequest returns the request a host whose IPoIB address is own and
// whose IPv4 address is sender sends to learn who holds target. The
// target hardware address is left zero (RFC 826).
func NewRequest(own []byte, sender, target [ProtocolLen]byte) Packet {
	a := Packet{Op: Request, SenderIP: sender, TargetIP: target}
	copy(a.SenderHW[:], own)
	return a
}

// Answer returns the reply a host whose IPoIB address is own sends to
// the request a, which asked for one of the host's addresses: the
// sender and target swap, and the sender hardware address is own. It
// goes by unicast to a's sender hardware address.
func (a *Packet) Answer(own []byte) Packet {
	r := Packet{Op: Reply, SenderIP: a.TargetIP, TargetHW: a.SenderHW, TargetIP: a.SenderIP}
	copy(r.SenderHW[:], own)
	return r
}

// SameHost reports whether two IPoIB addresses name the same queue pair:
// QPN and GID equal, whatever the flag octet says (a host may advertise
// connected mode in one packet and not in another).
func SameHost(a, b []byte) bool {
	return len(a) == ipoib.AddrLen && len(b) == ipoib.AddrLen && string(a[1:]) == string(b[1:])
}
