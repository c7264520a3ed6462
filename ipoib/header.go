package ipoib

import (
	"encoding/binary"
	"fmt"

	"github.com/ipoibd/ipoibd/netdev"
)

// The IPoIB encapsulation header (RFC 4391 section 6): a 16-bit Type field
// holding an ethertype, then 16 reserved bits that a sender must zero and a
// receiver must ignore. Nothing else precedes the IP packet in a UD
// datagram; the addresses live in the GRH, the LRH and the DETH below.
const (
	// HeaderLen is the size of the encapsulation header (RFC 4391
	// section 6: Type, 2 octets, and Reserved, 2 octets).
	HeaderLen = 4

	// typeOffset is where the Type field starts (RFC 4391 section 6).
	typeOffset = 0
	// DstKeyOffset is the header byte that carries the destination peer key
	// inside the host. On the wire it is the first reserved octet (RFC 4391
	// section 6) and is zero.
	DstKeyOffset = 2
	// SrcKeyOffset is the header byte that carries the source peer key
	// inside the host: the second reserved octet on the wire.
	SrcKeyOffset = 3
)

// Ethertypes an IPoIB link carries (RFC 4391 section 6 takes its Type
// values from the IEEE EtherType registry).
const (
	// EtherTypeIPv4 marks an IPv4 packet (RFC 894).
	EtherTypeIPv4 uint16 = 0x0800
	// EtherTypeARP marks an ARP packet, hardware type 32 on IPoIB (RFC 4391
	// section 9.1).
	EtherTypeARP uint16 = 0x0806
	// EtherTypeIPv6 marks an IPv6 packet (RFC 2464 section 3).
	EtherTypeIPv6 uint16 = 0x86DD

	// minEtherType is the smallest value of an Ethernet type/length field
	// that is a type rather than a length (IEEE 802.3 clause 3.2.6). IPoIB
	// has no length form, so a smaller Type cannot name a protocol and the
	// header is refused as malformed.
	minEtherType uint16 = 0x0600
)

// Header is the IPoIB header as it exists inside the host: the Type field
// and the two reserved bytes read as peer keys. On the wire both keys are
// NoKey.
type Header struct {
	// Type is the ethertype of the packet that follows.
	Type uint16
	// DstKey names the destination in the peer cache.
	DstKey Key
	// SrcKey names the source in the peer cache.
	SrcKey Key
}

// Decode fills h from the first HeaderLen bytes of b. It fails with an
// error wrapping netdev.ErrShort when b is shorter than the header and
// netdev.ErrBadHeader when Type is below 0x0600, which would be an 802.3
// length rather than a protocol. Any key values are accepted: whether they
// name live peers is the cache's business.
func (h *Header) Decode(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("decode IPoIB header: %d bytes, need %d: %w", len(b), HeaderLen, netdev.ErrShort)
	}
	t := binary.BigEndian.Uint16(b[typeOffset:])
	if t < minEtherType {
		return fmt.Errorf("decode IPoIB header: type %#04x is below %#04x: %w", t, minEtherType, netdev.ErrBadHeader)
	}
	h.Type = t
	h.DstKey = Key(b[DstKeyOffset])
	h.SrcKey = Key(b[SrcKeyOffset])
	return nil
}

// Encode writes h into the first HeaderLen bytes of b, keys included.
func (h Header) Encode(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("encode IPoIB header: %d-byte buffer, need %d: %w", len(b), HeaderLen, netdev.ErrNoHeadroom)
	}
	h.put(b)
	return nil
}

// AppendTo appends the encoded header to b.
func (h Header) AppendTo(b []byte) []byte {
	return append(b, byte(h.Type>>8), byte(h.Type), byte(h.DstKey), byte(h.SrcKey))
}

// put writes h into b, which the caller has checked is long enough.
func (h Header) put(b []byte) {
	binary.BigEndian.PutUint16(b[typeOffset:], h.Type)
	b[DstKeyOffset] = byte(h.DstKey)
	b[SrcKeyOffset] = byte(h.SrcKey)
}

// PushHeader prepends h to the packet in b. It fails, leaving b as it
// was, when b has less than HeaderLen bytes of headroom.
func PushHeader(b *netdev.Buffer, h Header) error {
	p, err := b.Push(HeaderLen)
	if err != nil {
		return fmt.Errorf("push IPoIB header: %w", err)
	}
	h.put(p)
	return nil
}

// PeekHeader decodes the header at the front of b into h without removing
// it, with Decode's errors.
func PeekHeader(b *netdev.Buffer, h *Header) error {
	p, err := b.Peek(min(HeaderLen, b.Len()))
	if err != nil {
		return fmt.Errorf("peek IPoIB header: %w", err)
	}
	return h.Decode(p)
}

// PullHeader decodes the header at the front of b into h and removes it,
// with Decode's errors. A frame that fails to decode is left as it was.
func PullHeader(b *netdev.Buffer, h *Header) error {
	if err := PeekHeader(b, h); err != nil {
		return err
	}
	_, _ = b.Pull(HeaderLen) // cannot fail: PeekHeader saw HeaderLen bytes
	return nil
}

// SetKeys writes the destination and source keys into the reserved bytes
// of the header at the front of b. A receive path calls it on a frame
// fresh from the wire, whose reserved bytes are zero, once it has entered
// the frame's addresses in the peer cache.
func SetKeys(b *netdev.Buffer, dst, src Key) error {
	p, err := b.Peek(min(HeaderLen, b.Len()))
	if err != nil || len(p) < HeaderLen {
		return fmt.Errorf("set IPoIB peer keys: %d-byte frame, header is %d: %w", b.Len(), HeaderLen, netdev.ErrShort)
	}
	p[DstKeyOffset] = byte(dst)
	p[SrcKeyOffset] = byte(src)
	return nil
}

// ClearKeys reads the destination and source keys from the header at the
// front of b and zeroes them, as RFC 4391 section 6 wants the reserved
// bytes on the wire. A transmit path calls it once it has looked the
// destination up and before the frame reaches the hardware.
func ClearKeys(b *netdev.Buffer) (dst, src Key, err error) {
	p, err := b.Peek(min(HeaderLen, b.Len()))
	if err != nil || len(p) < HeaderLen {
		return NoKey, NoKey, fmt.Errorf("clear IPoIB peer keys: %d-byte frame, header is %d: %w", b.Len(), HeaderLen, netdev.ErrShort)
	}
	dst, src = Key(p[DstKeyOffset]), Key(p[SrcKeyOffset])
	p[DstKeyOffset], p[SrcKeyOffset] = 0, 0
	return dst, src, nil
}
