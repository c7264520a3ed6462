package arp

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipoibd/ipoibd/ipoib"
)

// ARP over IPoIB (RFC 4391 section 9.1, packet layout of RFC 826). The
// packet is the classic ARP packet with 20-byte hardware addresses, so it
// is 56 bytes long where Ethernet's is 28.
const (
	// HardwareIPoIB is the ARP hardware type of IPoIB links: 32,
	// "InfiniBand" in IANA's ARP hardware-type registry, required by RFC
	// 4391 section 9.1.1. Linux's ARPHRD_INFINIBAND has the same value.
	HardwareIPoIB uint16 = 32
	// ProtocolIPv4 is the protocol type of an ARP packet resolving
	// IPv4 addresses: the IPv4 ethertype (RFC 826, ar$pro; RFC 4391
	// section 9.1.1).
	ProtocolIPv4 uint16 = 0x0800
	// EtherType is the ethertype that carries ARP in the IPoIB header
	// (and so the gVisor network protocol number stack's ARP registers)
	// (IEEE EtherType registry; RFC 826).
	EtherType uint16 = 0x0806
	// HardwareLen is ar$hln for IPoIB: the 20-byte link address, flags
	// and QPN followed by the port GID (RFC 4391 section 9.1.1).
	HardwareLen = ipoib.AddrLen
	// ProtocolLen is ar$pln for IPv4 (RFC 826).
	ProtocolLen = 4

	// FixedLen is the part of every ARP packet in front of the
	// addresses: hardware type, protocol type, the two lengths and the
	// opcode (RFC 826).
	FixedLen = 8
	// Len is the length of an IPoIB ARP packet: the fixed part, then
	// sender and target hardware and protocol addresses.
	Len = FixedLen + 2*(HardwareLen+ProtocolLen)
)

// ARP opcodes (RFC 826, ar$op; IANA ARP operation codes).
const (
	// Request asks who holds the target protocol address.
	Request uint16 = 1
	// Reply answers a request with the sender's hardware address.
	Reply uint16 = 2
)

// Field offsets within an IPoIB ARP packet (RFC 826 layout with
// hln = 20, pln = 4).
const (
	offHType = 0
	offPType = 2
	offHLen  = 4
	offPLen  = 5
	offOp    = 6
	offSHA   = FixedLen
	offSPA   = offSHA + HardwareLen
	offTHA   = offSPA + ProtocolLen
	offTPA   = offTHA + HardwareLen
)

// Errors of the ARP codec. A receiver counts them apart: a packet of
// another hardware or protocol type is not malformed, merely not ours.
var (
	// ErrShort means the bytes end before the ARP packet does.
	ErrShort = errors.New("arp: packet truncated")
	// ErrHardwareType means ar$hrd is not 32 (InfiniBand): an Ethernet
	// ARP on an IPoIB link, say.
	ErrHardwareType = errors.New("arp: hardware type is not InfiniBand")
	// ErrProtocolType means ar$pro is not IPv4.
	ErrProtocolType = errors.New("arp: protocol type is not IPv4")
	// ErrAddrLen means ar$hln or ar$pln disagree with the hardware and
	// protocol types (20 and 4).
	ErrAddrLen = errors.New("arp: address lengths do not fit IPoIB and IPv4")
	// ErrBuffer means an encode buffer is too small.
	ErrBuffer = errors.New("arp: buffer too small for an ARP packet")
)

// Packet is an IPoIB ARP packet for IPv4 addresses. The types and
// lengths are implied: Encode writes 32, 0x0800, 20 and 4 and Decode
// insists on them.
type Packet struct {
	// Op is the opcode, Request or Reply (others decode too; the
	// protocol ignores them).
	Op uint16
	// SenderHW is the sender's IPoIB address (ar$sha).
	SenderHW [HardwareLen]byte
	// SenderIP is the sender's IPv4 address (ar$spa).
	SenderIP [ProtocolLen]byte
	// TargetHW is the target's IPoIB address (ar$tha); requests carry
	// whatever the sender put there, often zeros.
	TargetHW [HardwareLen]byte
	// TargetIP is the IPv4 address being asked about or answered to
	// (ar$tpa).
	TargetIP [ProtocolLen]byte
}

// Decode fills a from the ARP packet at the start of b. Bytes after the
// packet are ignored. Packets of another hardware or protocol type fail
// with ErrHardwareType or ErrProtocolType as soon as the fixed part
// is read, so a caller can tell them from damaged ones (ErrShort,
// ErrAddrLen). Decode does not allocate unless it fails.
func (a *Packet) Decode(b []byte) error {
	if len(b) < FixedLen {
		return fmt.Errorf("decode: %d bytes, fixed part is %d: %w", len(b), FixedLen, ErrShort)
	}
	if ht := binary.BigEndian.Uint16(b[offHType:]); ht != HardwareIPoIB {
		return fmt.Errorf("decode: hardware type %d, want %d: %w", ht, HardwareIPoIB, ErrHardwareType)
	}
	if pt := binary.BigEndian.Uint16(b[offPType:]); pt != ProtocolIPv4 {
		return fmt.Errorf("decode: protocol type %#04x, want %#04x: %w", pt, ProtocolIPv4, ErrProtocolType)
	}
	if hl, pl := b[offHLen], b[offPLen]; hl != HardwareLen || pl != ProtocolLen {
		return fmt.Errorf("decode: address lengths %d and %d, want %d and %d: %w", hl, pl, HardwareLen, ProtocolLen, ErrAddrLen)
	}
	if len(b) < Len {
		return fmt.Errorf("decode: %d bytes, packet is %d: %w", len(b), Len, ErrShort)
	}
	a.Op = binary.BigEndian.Uint16(b[offOp:])
	copy(a.SenderHW[:], b[offSHA:])
	copy(a.SenderIP[:], b[offSPA:])
	copy(a.TargetHW[:], b[offTHA:])
	copy(a.TargetIP[:], b[offTPA:])
	return nil
}

// Encode writes a into the first Len bytes of b.
func (a *Packet) Encode(b []byte) error {
	if len(b) < Len {
		return fmt.Errorf("encode: %d-byte buffer, packet is %d: %w", len(b), Len, ErrBuffer)
	}
	a.put(b)
	return nil
}

// AppendTo appends the encoded packet to b.
func (a *Packet) AppendTo(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, Len)...)
	a.put(b[n:])
	return b
}

// put writes a into b, which the caller has checked holds Len bytes.
func (a *Packet) put(b []byte) {
	binary.BigEndian.PutUint16(b[offHType:], HardwareIPoIB)
	binary.BigEndian.PutUint16(b[offPType:], ProtocolIPv4)
	b[offHLen] = HardwareLen
	b[offPLen] = ProtocolLen
	binary.BigEndian.PutUint16(b[offOp:], a.Op)
	copy(b[offSHA:], a.SenderHW[:])
	copy(b[offSPA:], a.SenderIP[:])
	copy(b[offTHA:], a.TargetHW[:])
	copy(b[offTPA:], a.TargetIP[:])
}
