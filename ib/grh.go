package ib

import (
	"encoding/binary"
	"fmt"
)

// GRHLen is the size of the Global Route Header on the wire (IBA 8.3).
const GRHLen = 40

// GRH constants (IBA 8.3.1).
const (
	// GRHIPVer is the only IPVer a GRH carries: the header is laid out like
	// an IPv6 header so routers can treat it as one.
	GRHIPVer = 6
	// NxtHdrIBA is the GRH NxtHdr value saying an IBA transport header (the
	// BTH) follows (IBA 8.3.1, NxtHdr).
	NxtHdrIBA = 0x1B
	// grhMaxFlowLabel bounds the 20-bit FlowLabel.
	grhMaxFlowLabel = 0xFFFFF
)

// GRH is the Global Route Header (IBA 8.3). It is present when the LRH's
// LNH is LNHIBAGlobal: on every packet that crosses a router, on every
// multicast packet that wants its source GID known, and on every RoCE
// packet. IPoIB reads the sender's GID from it on receive.
//
// Wire layout, big-endian:
//
//	byte 0: IPVer(4) TClass[7:4]
//	byte 1: TClass[3:0] FlowLabel[19:16]
//	bytes 2-3: FlowLabel[15:0]
//	bytes 4-5: PayLen
//	byte 6: NxtHdr
//	byte 7: HopLmt
//	bytes 8-23: SGID
//	bytes 24-39: DGID
type GRH struct {
	// IPVer is the header version, GRHIPVer on a valid packet.
	IPVer uint8
	// TClass is the traffic class; routers may change it, so the ICRC
	// leaves it out.
	TClass uint8
	// FlowLabel (20 bits) marks packets of one flow; variant like TClass.
	FlowLabel uint32
	// PayLen counts the bytes after the GRH through the ICRC, VCRC
	// excluded (IBA 8.3.1, PayLen).
	PayLen uint16
	// NxtHdr says what follows; NxtHdrIBA for IBA transport.
	NxtHdr uint8
	// HopLmt bounds the number of routers the packet may cross; routers
	// decrement it, so the ICRC leaves it out.
	HopLmt uint8
	// SGID is the source port's GID.
	SGID GID
	// DGID is the destination GID (a multicast GID for multicast packets).
	DGID GID
}

// Decode fills h from the first GRHLen bytes of b. It checks only that the
// bytes are there; the caller checks IPVer and NxtHdr.
func (h *GRH) Decode(b []byte) error {
	if len(b) < GRHLen {
		return fmt.Errorf("decode GRH: have %d bytes, need %d: %w", len(b), GRHLen, ErrTruncated)
	}
	w := binary.BigEndian.Uint32(b[0:4])
	h.IPVer = uint8(w >> 28)
	h.TClass = uint8(w >> 20)
	h.FlowLabel = w & grhMaxFlowLabel
	h.PayLen = binary.BigEndian.Uint16(b[4:6])
	h.NxtHdr = b[6]
	h.HopLmt = b[7]
	copy(h.SGID[:], b[8:24])
	copy(h.DGID[:], b[24:40])
	return nil
}

// Encode writes h into the first GRHLen bytes of b. It fails rather than
// truncate an IPVer or FlowLabel too wide for its field.
func (h *GRH) Encode(b []byte) error {
	if len(b) < GRHLen {
		return fmt.Errorf("encode GRH: buffer %d bytes, need %d: %w", len(b), GRHLen, ErrTruncated)
	}
	if h.IPVer > 0xF {
		return fmt.Errorf("encode GRH: IPVer %d does not fit 4 bits: %w", h.IPVer, ErrFieldRange)
	}
	if h.FlowLabel > grhMaxFlowLabel {
		return fmt.Errorf("encode GRH: FlowLabel %#x does not fit 20 bits: %w", h.FlowLabel, ErrFieldRange)
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(h.IPVer)<<28|uint32(h.TClass)<<20|h.FlowLabel)
	binary.BigEndian.PutUint16(b[4:6], h.PayLen)
	b[6] = h.NxtHdr
	b[7] = h.HopLmt
	copy(b[8:24], h.SGID[:])
	copy(b[24:40], h.DGID[:])
	return nil
}
