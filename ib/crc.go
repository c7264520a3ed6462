package ib

import (
	"fmt"
	"hash/crc32"
)

// Sizes of the two CRC fields that end every IBA transport packet
// (IBA 7.8).
const (
	// ICRCLen is the size of the Invariant CRC (IBA 7.8.1).
	ICRCLen = 4
	// VCRCLen is the size of the Variant CRC (IBA 7.8.2).
	VCRCLen = 2
)

// Offsets of the variant fields the ICRC does not cover (IBA 7.8.1). The
// fields are counted as all ones instead, so a switch or router that
// rewrites them need not recompute the ICRC.
const (
	// lrhVLMask selects the VL nibble of LRH byte 0, the only variant part
	// of the LRH of a local packet.
	lrhVLMask = 0xF0
	// grhTClassHiMask selects the high TClass bits in GRH byte 0 (the
	// low nibble; IPVer is the high one).
	grhTClassHiMask = 0x0F
	// grhHopLmtOff is the offset of HopLmt within the GRH.
	grhHopLmtOff = 7
	// bthResv8aOff is the offset of the reserved byte before DestQP in the
	// BTH; it is variant.
	bthResv8aOff = 4
)

// icrcAfterOnes is the running ICRC after the 64 bits of ones that stand in
// for the whole LRH of a global packet: routers rebuild the LRH, so IBA
// 7.8.1 leaves it out of the ICRC this way.
var icrcAfterOnes = crc32.ChecksumIEEE([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})

// icrcByte advances a running CRC-32 (in hash/crc32's convention, inverted
// between calls) by one byte. The ICRC feeds the few header bytes that
// need masking through it, so no masked copy of the headers is needed:
// such a copy would have to live on the heap once hash/crc32 saw it.
func icrcByte(crc uint32, x byte) uint32 {
	c := ^crc
	return ^(crc32.IEEETable[uint8(c)^x] ^ c>>8)
}

// icrcBytes feeds b through icrcByte, with the variant byte at index skip
// read as 0xFF; skip < 0 masks nothing.
func icrcBytes(crc uint32, b []byte, skip int) uint32 {
	for i, x := range b {
		if i == skip {
			x = 0xFF
		}
		crc = icrcByte(crc, x)
	}
	return crc
}

// ICRC returns the Invariant CRC of an IBA transport packet. b runs from
// the first LRH byte up to, not including, the ICRC field: headers, payload
// and pad. The CRC is CRC-32 as hash/crc32's IEEE table computes it (the
// Ethernet polynomial, pre- and post-inverted) over b with its variant
// fields read as ones: the VL nibble of the LRH (or the whole LRH when a
// GRH follows), the GRH TClass, FlowLabel and HopLmt, and BTH byte 4. The
// value goes on the wire least-significant byte first.
//
// Raw packets (LNH 0 and 1) have no ICRC; they fail with
// ErrNotIBATransport.
func ICRC(b []byte) (uint32, error) {
	if len(b) < LRHLen {
		return 0, fmt.Errorf("ICRC: packet %d bytes, shorter than the LRH: %w", len(b), ErrTruncated)
	}
	switch lnh := LNH(b[1] & 0x3); lnh {
	case LNHIBALocal:
		const bth = LRHLen
		if len(b) < bth+BTHLen {
			return 0, fmt.Errorf("ICRC: local packet %d bytes, need %d for LRH and BTH: %w",
				len(b), bth+BTHLen, ErrTruncated)
		}
		crc := icrcByte(0, b[0]|lrhVLMask)
		crc = icrcBytes(crc, b[1:bth], -1)
		crc = icrcBytes(crc, b[bth:bth+BTHLen], bthResv8aOff)
		return crc32.Update(crc, crc32.IEEETable, b[bth+BTHLen:]), nil
	case LNHIBAGlobal:
		const grh, bth = LRHLen, LRHLen + GRHLen
		if len(b) < bth+BTHLen {
			return 0, fmt.Errorf("ICRC: global packet %d bytes, need %d for LRH, GRH and BTH: %w",
				len(b), bth+BTHLen, ErrTruncated)
		}
		// The first GRH word holds IPVer, TClass and FlowLabel, of which
		// only IPVer is invariant; HopLmt ends the second word.
		crc := icrcByte(icrcAfterOnes, b[grh]|grhTClassHiMask)
		crc = icrcBytes(crc, []byte{0xFF, 0xFF, 0xFF}, -1)
		crc = icrcBytes(crc, b[grh+4:grh+8], grhHopLmtOff-4)
		crc = crc32.Update(crc, crc32.IEEETable, b[grh+8:bth])
		crc = icrcBytes(crc, b[bth:bth+BTHLen], bthResv8aOff)
		return crc32.Update(crc, crc32.IEEETable, b[bth+BTHLen:]), nil
	default:
		return 0, fmt.Errorf("ICRC: LNH %d (%v) carries no IBA transport: %w", uint8(lnh), lnh, ErrNotIBATransport)
	}
}

// vcrcPoly is the VCRC generator x^16 + x^12 + x^3 + x + 1 (0x100B,
// IBA 7.8.2) in the bit-reversed form a least-significant-bit-first shift
// register uses.
const vcrcPoly = 0xD008

// vcrcTables drives VCRC sixteen bytes per step ("slicing by 16"): table 0
// is the CRC-16 of each byte value, and table k the effect of a byte that
// still has k more bytes to travel through the register. A bytewise loop
// ran at about 0.4 GB/s, slower than everything else on the data path.
var vcrcTables = func() (t [16][256]uint16) {
	for i := range t[0] {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ vcrcPoly
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < len(t); k++ {
		for i := range t[k] {
			c := t[k-1][i]
			t[k][i] = c>>8 ^ t[0][uint8(c)]
		}
	}
	return t
}()

// VCRC returns the Variant CRC (IBA 7.8.2) of b, which runs from the first
// LRH byte through the ICRC: CRC-16 with polynomial 0x100B, processed
// least-significant bit first, initial value 0xFFFF and the result
// inverted. It covers every byte, so each hop recomputes it. The value goes
// on the wire least-significant byte first.
func VCRC(b []byte) uint16 {
	t := &vcrcTables
	c := uint16(0xFFFF)
	for len(b) >= 16 {
		c = t[15][uint8(c)^b[0]] ^ t[14][uint8(c>>8)^b[1]] ^
			t[13][b[2]] ^ t[12][b[3]] ^ t[11][b[4]] ^ t[10][b[5]] ^ t[9][b[6]] ^ t[8][b[7]] ^
			t[7][b[8]] ^ t[6][b[9]] ^ t[5][b[10]] ^ t[4][b[11]] ^ t[3][b[12]] ^ t[2][b[13]] ^ t[1][b[14]] ^ t[0][b[15]]
		b = b[16:]
	}
	for _, x := range b {
		c = c>>8 ^ t[0][uint8(c)^x]
	}
	return ^c
}
