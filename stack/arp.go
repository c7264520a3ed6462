package stack

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
	// ARPHardwareIPoIB is the ARP hardware type of IPoIB links: 32,
	// "InfiniBand" in IANA's ARP hardware-type registry, required by RFC
	// 4391 section 9.1.1. Linux's ARPHRD_INFINIBAND has the same value.
	ARPHardwareIPoIB uint16 = 32
	// ARPProtocolIPv4 is the protocol type of an ARP packet resolving
	// IPv4 addresses: the IPv4 ethertype (RFC 826, ar$pro; RFC 4391
	// section 9.1.1).
	ARPProtocolIPv4 uint16 = 0x0800
	// ARPEtherType is the ethertype that carries ARP in the IPoIB header,
	// and the gVisor network protocol number ARPProtocol registers
	// (IEEE EtherType registry; RFC 826).
	ARPEtherType uint16 = 0x0806
	// ARPHardwareLen is ar$hln for IPoIB: the 20-byte link address, flags
	// and QPN followed by the port GID (RFC 4391 section 9.1.1).
	ARPHardwareLen = ipoib.AddrLen
	// ARPProtocolLen is ar$pln for IPv4 (RFC 826).
	ARPProtocolLen = 4

	// ARPFixedLen is the part of every ARP packet in front of the
	// addresses: hardware type, protocol type, the two lengths and the
	// opcode (RFC 826).
	ARPFixedLen = 8
	// ARPLen is the length of an IPoIB ARP packet: the fixed part, then
	// sender and target hardware and protocol addresses.
	ARPLen = ARPFixedLen + 2*(ARPHardwareLen+ARPProtocolLen)
)

// ARP opcodes (RFC 826, ar$op; IANA ARP operation codes).
const (
	// ARPRequest asks who holds the target protocol address.
	ARPRequest uint16 = 1
	// ARPReply answers a request with the sender's hardware address.
	ARPReply uint16 = 2
)

// Field offsets within an IPoIB ARP packet (RFC 826 layout with
// hln = 20, pln = 4).
const (
	arpOffHType = 0
	arpOffPType = 2
	arpOffHLen  = 4
	arpOffPLen  = 5
	arpOffOp    = 6
	arpOffSHA   = ARPFixedLen
	arpOffSPA   = arpOffSHA + ARPHardwareLen
	arpOffTHA   = arpOffSPA + ARPProtocolLen
	arpOffTPA   = arpOffTHA + ARPHardwareLen
)

// Errors of the ARP codec. HandlePacket counts them apart: a packet of
// another hardware or protocol type is not malformed, merely not ours.
var (
	// ErrARPShort means the bytes end before the ARP packet does.
	ErrARPShort = errors.New("stack: ARP packet truncated")
	// ErrARPHardwareType means ar$hrd is not 32 (InfiniBand): an Ethernet
	// ARP on an IPoIB link, say.
	ErrARPHardwareType = errors.New("stack: ARP hardware type is not InfiniBand")
	// ErrARPProtocolType means ar$pro is not IPv4.
	ErrARPProtocolType = errors.New("stack: ARP protocol type is not IPv4")
	// ErrARPAddrLen means ar$hln or ar$pln disagree with the hardware and
	// protocol types (20 and 4).
	ErrARPAddrLen = errors.New("stack: ARP address lengths do not fit IPoIB and IPv4")
	// ErrARPBuffer means an encode buffer is too small.
	ErrARPBuffer = errors.New("stack: buffer too small for an ARP packet")
)

// ARP is an IPoIB ARP packet for IPv4 addresses. The types and lengths
// are implied: Encode writes 32, 0x0800, 20 and 4 and Decode insists on
// them.
type ARP struct {
	// Op is the opcode, ARPRequest or ARPReply (others decode too; the
	// protocol ignores them).
	Op uint16
	// SenderHW is the sender's IPoIB address (ar$sha).
	SenderHW [ARPHardwareLen]byte
	// SenderIP is the sender's IPv4 address (ar$spa).
	SenderIP [ARPProtocolLen]byte
	// TargetHW is the target's IPoIB address (ar$tha); requests carry
	// whatever the sender put there, often zeros.
	TargetHW [ARPHardwareLen]byte
	// TargetIP is the IPv4 address being asked about or answered to
	// (ar$tpa).
	TargetIP [ARPProtocolLen]byte
}

// Decode fills a from the ARP packet at the start of b. Bytes after the
// packet are ignored. Packets of another hardware or protocol type fail
// with ErrARPHardwareType or ErrARPProtocolType as soon as the fixed part
// is read, so a caller can tell them from damaged ones (ErrARPShort,
// ErrARPAddrLen). Decode does not allocate unless it fails.
func (a *ARP) Decode(b []byte) error {
	if len(b) < ARPFixedLen {
		return fmt.Errorf("decode ARP: %d bytes, fixed part is %d: %w", len(b), ARPFixedLen, ErrARPShort)
	}
	if ht := binary.BigEndian.Uint16(b[arpOffHType:]); ht != ARPHardwareIPoIB {
		return fmt.Errorf("decode ARP: hardware type %d, want %d: %w", ht, ARPHardwareIPoIB, ErrARPHardwareType)
	}
	if pt := binary.BigEndian.Uint16(b[arpOffPType:]); pt != ARPProtocolIPv4 {
		return fmt.Errorf("decode ARP: protocol type %#04x, want %#04x: %w", pt, ARPProtocolIPv4, ErrARPProtocolType)
	}
	if hl, pl := b[arpOffHLen], b[arpOffPLen]; hl != ARPHardwareLen || pl != ARPProtocolLen {
		return fmt.Errorf("decode ARP: address lengths %d and %d, want %d and %d: %w", hl, pl, ARPHardwareLen, ARPProtocolLen, ErrARPAddrLen)
	}
	if len(b) < ARPLen {
		return fmt.Errorf("decode ARP: %d bytes, packet is %d: %w", len(b), ARPLen, ErrARPShort)
	}
	a.Op = binary.BigEndian.Uint16(b[arpOffOp:])
	copy(a.SenderHW[:], b[arpOffSHA:])
	copy(a.SenderIP[:], b[arpOffSPA:])
	copy(a.TargetHW[:], b[arpOffTHA:])
	copy(a.TargetIP[:], b[arpOffTPA:])
	return nil
}

// Encode writes a into the first ARPLen bytes of b.
func (a *ARP) Encode(b []byte) error {
	if len(b) < ARPLen {
		return fmt.Errorf("encode ARP: %d-byte buffer, packet is %d: %w", len(b), ARPLen, ErrARPBuffer)
	}
	a.put(b)
	return nil
}

// AppendTo appends the encoded packet to b.
func (a *ARP) AppendTo(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, ARPLen)...)
	a.put(b[n:])
	return b
}

// put writes a into b, which the caller has checked holds ARPLen bytes.
func (a *ARP) put(b []byte) {
	binary.BigEndian.PutUint16(b[arpOffHType:], ARPHardwareIPoIB)
	binary.BigEndian.PutUint16(b[arpOffPType:], ARPProtocolIPv4)
	b[arpOffHLen] = ARPHardwareLen
	b[arpOffPLen] = ARPProtocolLen
	binary.BigEndian.PutUint16(b[arpOffOp:], a.Op)
	copy(b[arpOffSHA:], a.SenderHW[:])
	copy(b[arpOffSPA:], a.SenderIP[:])
	copy(b[arpOffTHA:], a.TargetHW[:])
	copy(b[arpOffTPA:], a.TargetIP[:])
}
