package ib

import (
	"encoding/binary"
	"fmt"
)

// LRHLen is the size of the Local Route Header on the wire (IBA 7.7).
const LRHLen = 8

// Bounds of the LRH bit fields (IBA 7.7, Figure 41), used to reject values
// that would not survive encoding.
const (
	// lrhMaxNibble bounds VL, LVer and SL, which are 4 bits each.
	lrhMaxNibble = 0xF
	// LRHMaxPktLen is the largest PktLen the 11-bit field can hold, in
	// 4-byte words (IBA 7.7.8).
	LRHMaxPktLen = 0x7FF
)

// LNH is the 2-bit Link Next Header field of the LRH (IBA 7.7.5): it says
// what follows the LRH, and so whether a GRH is present.
type LNH uint8

// Link Next Header values (IBA 7.7.5, Table 20).
const (
	// LNHRaw marks a raw packet: no IBA transport header follows.
	LNHRaw LNH = 0
	// LNHIPNonIBA marks a raw packet carrying a non-IBA transport after an
	// IPv6-style header.
	LNHIPNonIBA LNH = 1
	// LNHIBALocal marks an IBA transport packet with the BTH right after
	// the LRH (no GRH: the packet stays in its subnet).
	LNHIBALocal LNH = 2
	// LNHIBAGlobal marks an IBA transport packet with a GRH between the
	// LRH and the BTH.
	LNHIBAGlobal LNH = 3
)

// String names the LNH value the way the spec's table does.
func (l LNH) String() string {
	switch l {
	case LNHRaw:
		return "raw"
	case LNHIPNonIBA:
		return "IP non-IBA"
	case LNHIBALocal:
		return "IBA local"
	case LNHIBAGlobal:
		return "IBA global"
	}
	return fmt.Sprintf("LNH(%d)", uint8(l))
}

// LRH is the Local Route Header (IBA 7.7), the first 8 bytes of every
// packet. Switches route on it within a subnet; it is rewritten hop by hop
// (VL changes), which is why the ICRC leaves parts of it out.
//
// Wire layout, big-endian:
//
//	byte 0: VL(4) LVer(4)
//	byte 1: SL(4) reserved(2) LNH(2)
//	bytes 2-3: DLID
//	bytes 4-5: reserved(5) PktLen(11)
//	bytes 6-7: SLID
type LRH struct {
	// VL is the virtual lane the packet travels on; VL15 carries subnet
	// management packets.
	VL uint8
	// LVer is the link version; only version 0 is defined.
	LVer uint8
	// SL is the service level, mapped to a VL at each hop.
	SL SL
	// LNH says which headers follow (see LNH).
	LNH LNH
	// DLID is the destination local identifier.
	DLID LID
	// PktLen is the packet length in 4-byte words, counting the LRH
	// through the ICRC but not the VCRC (IBA 7.7.8).
	PktLen uint16
	// SLID is the source local identifier.
	SLID LID
}

// Decode fills h from the first LRHLen bytes of b. Reserved bits are
// ignored, as IBA asks of receivers; no field is checked for meaning, so
// the caller decides what to do with, say, a non-zero LVer.
func (h *LRH) Decode(b []byte) error {
	if len(b) < LRHLen {
		return fmt.Errorf("decode LRH: have %d bytes, need %d: %w", len(b), LRHLen, ErrTruncated)
	}
	h.VL = b[0] >> 4
	h.LVer = b[0] & 0xF
	h.SL = SL(b[1] >> 4)
	h.LNH = LNH(b[1] & 0x3)
	h.DLID = LID(binary.BigEndian.Uint16(b[2:4]))
	h.PktLen = binary.BigEndian.Uint16(b[4:6]) & LRHMaxPktLen
	h.SLID = LID(binary.BigEndian.Uint16(b[6:8]))
	return nil
}

// Encode writes h into the first LRHLen bytes of b, with reserved bits zero.
// It fails rather than truncate a field that does not fit its bit width.
func (h *LRH) Encode(b []byte) error {
	if len(b) < LRHLen {
		return fmt.Errorf("encode LRH: buffer %d bytes, need %d: %w", len(b), LRHLen, ErrTruncated)
	}
	switch {
	case h.VL > lrhMaxNibble:
		return fmt.Errorf("encode LRH: VL %d does not fit 4 bits: %w", h.VL, ErrFieldRange)
	case h.LVer > lrhMaxNibble:
		return fmt.Errorf("encode LRH: LVer %d does not fit 4 bits: %w", h.LVer, ErrFieldRange)
	case !h.SL.Valid():
		return fmt.Errorf("encode LRH: SL %d does not fit 4 bits: %w", h.SL, ErrFieldRange)
	case h.LNH > LNHIBAGlobal:
		return fmt.Errorf("encode LRH: LNH %d does not fit 2 bits: %w", h.LNH, ErrFieldRange)
	case h.PktLen > LRHMaxPktLen:
		return fmt.Errorf("encode LRH: PktLen %d words does not fit 11 bits: %w", h.PktLen, ErrFieldRange)
	}
	b[0] = h.VL<<4 | h.LVer
	b[1] = uint8(h.SL)<<4 | uint8(h.LNH)
	binary.BigEndian.PutUint16(b[2:4], uint16(h.DLID))
	binary.BigEndian.PutUint16(b[4:6], h.PktLen)
	binary.BigEndian.PutUint16(b[6:8], uint16(h.SLID))
	return nil
}
