package ib

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Errors the packet codecs wrap, so callers can sort failures with
// errors.Is: a receive path counts and drops on all of them, a capture tool
// may want to show a packet with a bad CRC anyway.
var (
	// ErrTruncated means the bytes end before a header or field does, or an
	// encode buffer is too small.
	ErrTruncated = errors.New("ib: packet truncated")
	// ErrLength means length fields disagree with each other or with the
	// frame: LRH PktLen, GRH PayLen, BTH PadCnt, or a payload too large for
	// PktLen's 11 bits.
	ErrLength = errors.New("ib: inconsistent packet length")
	// ErrBadICRC means the Invariant CRC does not match the packet.
	ErrBadICRC = errors.New("ib: bad ICRC")
	// ErrBadVCRC means the Variant CRC does not match the frame.
	ErrBadVCRC = errors.New("ib: bad VCRC")
	// ErrUnsupportedOpcode means the BTH carries an opcode other than UD
	// SEND Only (with or without Immediate).
	ErrUnsupportedOpcode = errors.New("ib: unsupported BTH opcode")
	// ErrNotIBATransport means the packet is raw (LNH 0 or 1) or its GRH
	// names a next header other than the BTH.
	ErrNotIBATransport = errors.New("ib: not an IBA transport packet")
	// ErrVersion means LVer, IPVer or TVer holds a version IBA does not
	// define.
	ErrVersion = errors.New("ib: unsupported header version")
	// ErrFieldRange means a value is too wide for the bits its field has
	// on the wire, so encoding it would silently change it.
	ErrFieldRange = errors.New("ib: field value out of range")
)

// MaxPacketLen is the largest packet the LRH can describe: PktLen's 11 bits
// of 4-byte words, plus the VCRC that PktLen does not count.
const MaxPacketLen = LRHMaxPktLen*4 + VCRCLen

// Frame is an IBA transport packet decoded only as far as the headers every
// transport shares: LRH, optional GRH, BTH, and both CRCs checked. It is for
// captures and tools that meet RC, UC or RD packets too; the UD data path
// uses Packet.
type Frame struct {
	// LRH is the local route header.
	LRH LRH
	// HasGRH reports whether a GRH follows the LRH (LNH is LNHIBAGlobal).
	HasGRH bool
	// GRH is the global route header, meaningful only when HasGRH is set.
	GRH GRH
	// BTH is the base transport header, any opcode.
	BTH BTH
	// Transport is what lies between the BTH and the ICRC: extended
	// transport headers, payload and pad. It aliases the decoded frame.
	Transport []byte
	// ICRC is the Invariant CRC as ICRC computes it.
	ICRC uint32
	// VCRC is the Variant CRC as VCRC computes it.
	VCRC uint16
}

// DecodeFrame decodes frame, one whole packet from the first LRH byte
// through the VCRC, into f. It checks that LRH PktLen matches the frame
// length and GRH PayLen what follows the GRH, that versions are the defined
// ones, and verifies the VCRC and ICRC; the opcode may be anything.
// f.Transport aliases frame; nothing is allocated.
//
// The VCRC is checked first and the ICRC before header fields are judged,
// so a corrupted packet reports a CRC error rather than whatever field the
// corruption happened to hit.
func DecodeFrame(frame []byte, f *Frame) error { return decodeFrame(frame, f, true) }

// decodeFrame is DecodeFrame; with verify false the CRCs are read but not
// recomputed (see DecodeSealedPacket).
func decodeFrame(frame []byte, f *Frame, verify bool) error {
	const minLen = LRHLen + BTHLen + ICRCLen + VCRCLen
	if len(frame) < minLen {
		return fmt.Errorf("decode frame: %d bytes, an IBA transport packet has at least %d: %w",
			len(frame), minLen, ErrTruncated)
	}
	end := len(frame) - VCRCLen
	f.VCRC = binary.LittleEndian.Uint16(frame[end:])
	if verify {
		if got := VCRC(frame[:end]); got != f.VCRC {
			return fmt.Errorf("decode frame: VCRC on wire %#04x, computed %#04x: %w", f.VCRC, got, ErrBadVCRC)
		}
	}
	_ = f.LRH.Decode(frame) // cannot fail: length checked above
	if want := int(f.LRH.PktLen)*4 + VCRCLen; want != len(frame) {
		return fmt.Errorf("decode frame: %d bytes, LRH PktLen %d words says %d: %w",
			len(frame), f.LRH.PktLen, want, ErrLength)
	}
	var bth int
	switch f.LRH.LNH {
	case LNHIBALocal:
		f.HasGRH = false
		bth = LRHLen
	case LNHIBAGlobal:
		f.HasGRH = true
		bth = LRHLen + GRHLen
		if len(frame) < bth+BTHLen+ICRCLen+VCRCLen {
			return fmt.Errorf("decode frame: %d bytes, too short for LRH, GRH, BTH and CRCs: %w",
				len(frame), ErrTruncated)
		}
	default:
		return fmt.Errorf("decode frame: LNH %d (%v): %w", uint8(f.LRH.LNH), f.LRH.LNH, ErrNotIBATransport)
	}
	icrcAt := end - ICRCLen
	f.ICRC = binary.LittleEndian.Uint32(frame[icrcAt:end])
	if verify {
		got, err := ICRC(frame[:icrcAt])
		if err != nil {
			return fmt.Errorf("decode frame: %w", err)
		}
		if got != f.ICRC {
			return fmt.Errorf("decode frame: ICRC on wire %#08x, computed %#08x: %w", f.ICRC, got, ErrBadICRC)
		}
	}
	if f.LRH.LVer != 0 {
		return fmt.Errorf("decode frame: LRH LVer %d: %w", f.LRH.LVer, ErrVersion)
	}
	if f.HasGRH {
		_ = f.GRH.Decode(frame[LRHLen:])
		if f.GRH.IPVer != GRHIPVer {
			return fmt.Errorf("decode frame: GRH IPVer %d, want %d: %w", f.GRH.IPVer, GRHIPVer, ErrVersion)
		}
		if f.GRH.NxtHdr != NxtHdrIBA {
			return fmt.Errorf("decode frame: GRH NxtHdr %#02x, want %#02x: %w", f.GRH.NxtHdr, NxtHdrIBA, ErrNotIBATransport)
		}
		if want := end - bth; int(f.GRH.PayLen) != want {
			return fmt.Errorf("decode frame: GRH PayLen %d, but %d bytes follow the GRH: %w",
				f.GRH.PayLen, want, ErrLength)
		}
	} else {
		f.GRH = GRH{}
	}
	_ = f.BTH.DecodeAnyOpcode(frame[bth:])
	if f.BTH.TVer != 0 {
		return fmt.Errorf("decode frame: BTH TVer %d: %w", f.BTH.TVer, ErrVersion)
	}
	f.Transport = frame[bth+BTHLen : icrcAt]
	return nil
}

// Packet is a UD SEND packet, the only kind an Unreliable Datagram queue
// pair sends or receives: LRH, optional GRH, BTH, DETH, ImmDt when the
// opcode says so, payload, pad, ICRC, VCRC.
type Packet struct {
	// LRH is the local route header. AppendTo derives LNH and PktLen.
	LRH LRH
	// HasGRH says whether the packet carries a GRH.
	HasGRH bool
	// GRH is the global route header, used only when HasGRH is set.
	// AppendTo derives IPVer, PayLen and NxtHdr.
	GRH GRH
	// BTH is the base transport header; OpCode is OpUDSendOnly or
	// OpUDSendOnlyImm. AppendTo derives PadCnt.
	BTH BTH
	// DETH is the datagram extended transport header.
	DETH DETH
	// ImmDt is the immediate data, present on the wire only when
	// BTH.OpCode is OpUDSendOnlyImm (IBA 9.3.5).
	ImmDt uint32
	// Payload is the message, without pad. After DecodePacket it aliases
	// the frame.
	Payload []byte
	// ICRC is the Invariant CRC read by DecodePacket; AppendTo ignores it
	// and computes the right one.
	ICRC uint32
	// VCRC is the Variant CRC read by DecodePacket; AppendTo ignores it
	// and computes the right one.
	VCRC uint16
}

// DecodePacket decodes frame, one UD SEND packet from the first LRH byte
// through the VCRC, into p. Beyond DecodeFrame's checks (lengths, versions,
// both CRCs), it accepts only OpUDSendOnly and OpUDSendOnlyImm and checks
// that the DETH, ImmDt and pad fit. p.Payload aliases frame; nothing is
// allocated.
//
// Errors wrap ErrTruncated, ErrLength, ErrBadVCRC, ErrBadICRC,
// ErrNotIBATransport, ErrVersion or ErrUnsupportedOpcode. After an error,
// p holds whatever was decoded before the failing check.
func DecodePacket(frame []byte, p *Packet) error { return decodePacket(frame, p, true) }

// DecodeSealedPacket is DecodePacket for a frame whose CRCs are right by
// construction: this process encoded it with AppendTo, which computed
// both over these very bytes, and nothing has written to it since. It
// reads the CRCs into p without recomputing them, and makes every other
// check. A simulated fabric uses it for the frames its own ports built,
// where recomputing them is work an HCA does in hardware and a check
// that cannot fail; anything that may have changed a frame's bytes must
// go through DecodePacket.
func DecodeSealedPacket(frame []byte, p *Packet) error { return decodePacket(frame, p, false) }

// decodePacket is DecodePacket, verifying the CRCs or not.
func decodePacket(frame []byte, p *Packet, verify bool) error {
	var f Frame
	err := decodeFrame(frame, &f, verify)
	p.LRH, p.HasGRH, p.GRH, p.BTH, p.ICRC, p.VCRC = f.LRH, f.HasGRH, f.GRH, f.BTH, f.ICRC, f.VCRC
	if err != nil {
		return fmt.Errorf("decode UD packet: %w", err)
	}
	if f.BTH.OpCode != OpUDSendOnly && f.BTH.OpCode != OpUDSendOnlyImm {
		return fmt.Errorf("decode UD packet: BTH opcode %#02x (%v): %w", uint8(f.BTH.OpCode), f.BTH.OpCode, ErrUnsupportedOpcode)
	}
	rest := f.Transport
	ext := DETHLen
	if f.BTH.OpCode == OpUDSendOnlyImm {
		ext += ImmDtLen
	}
	if len(rest) < ext {
		return fmt.Errorf("decode UD packet: %d bytes after the BTH, %v needs %d: %w",
			len(rest), f.BTH.OpCode, ext, ErrTruncated)
	}
	_ = p.DETH.Decode(rest)
	p.ImmDt = 0
	if f.BTH.OpCode == OpUDSendOnlyImm {
		p.ImmDt = binary.BigEndian.Uint32(rest[DETHLen:])
	}
	rest = rest[ext:]
	if int(f.BTH.PadCnt) > len(rest) {
		return fmt.Errorf("decode UD packet: PadCnt %d, but only %d bytes after the headers: %w",
			f.BTH.PadCnt, len(rest), ErrLength)
	}
	p.Payload = rest[:len(rest)-int(f.BTH.PadCnt)]
	return nil
}

// headerLen returns the bytes from the LRH through the last extended
// transport header.
func (p *Packet) headerLen() int {
	n := LRHLen + BTHLen + DETHLen
	if p.HasGRH {
		n += GRHLen
	}
	if p.BTH.OpCode == OpUDSendOnlyImm {
		n += ImmDtLen
	}
	return n
}

// Len returns the size of the frame AppendTo would write: headers, payload
// padded to 4 bytes, ICRC and VCRC.
func (p *Packet) Len() int {
	return p.headerLen() + (len(p.Payload)+3)&^3 + ICRCLen + VCRCLen
}

// AppendTo appends p as a wire frame to b and returns the extended slice.
// It derives the fields that follow from the rest (LRH LNH and PktLen; GRH
// IPVer, PayLen and NxtHdr; BTH PadCnt), writes zero pad bytes, and
// computes ICRC and VCRC; p itself is not modified. Nothing is allocated
// when b has room for Len() more bytes.
//
// It refuses what DecodePacket would refuse: opcodes other than UD SEND
// Only (ErrUnsupportedOpcode), non-zero LVer or TVer (ErrVersion), a
// payload too long for PktLen (ErrLength), and fields too wide for their
// bits (ErrFieldRange). On error b is returned unchanged.
func (p *Packet) AppendTo(b []byte) ([]byte, error) { return p.appendTo(b, true) }

// AppendToLeavingCRCs is AppendTo except that the ICRC and VCRC fields are
// left zero, for PutCRCs to fill when the frame's bytes are first looked
// at. A simulated link uses it where an HCA would compute both CRCs in
// hardware and often nothing ever reads them (see sim's frames).
func (p *Packet) AppendToLeavingCRCs(b []byte) ([]byte, error) { return p.appendTo(b, false) }

// PutCRCs computes the ICRC and then the VCRC of frame, one whole IBA
// transport packet from the first LRH byte through the VCRC field, and
// writes them into their fields. A frame too short for its headers and
// CRCs, or one that is not an IBA transport packet, is left alone: it has
// no ICRC to compute, and whoever decodes it refuses it.
func PutCRCs(frame []byte) {
	if len(frame) < ICRCLen+VCRCLen {
		return
	}
	icrcAt := len(frame) - VCRCLen - ICRCLen
	icrc, err := ICRC(frame[:icrcAt])
	if err != nil {
		return
	}
	binary.LittleEndian.PutUint32(frame[icrcAt:], icrc)
	end := len(frame) - VCRCLen
	binary.LittleEndian.PutUint16(frame[end:], VCRC(frame[:end]))
}

// appendTo is AppendTo, with both CRCs computed or both left zero.
func (p *Packet) appendTo(b []byte, crcs bool) ([]byte, error) {
	if p.BTH.OpCode != OpUDSendOnly && p.BTH.OpCode != OpUDSendOnlyImm {
		return b, fmt.Errorf("encode UD packet: BTH opcode %#02x (%v): %w", uint8(p.BTH.OpCode), p.BTH.OpCode, ErrUnsupportedOpcode)
	}
	if p.LRH.LVer != 0 || p.BTH.TVer != 0 {
		return b, fmt.Errorf("encode UD packet: LVer %d, TVer %d, only 0 is defined: %w", p.LRH.LVer, p.BTH.TVer, ErrVersion)
	}
	n := p.Len()
	if n > MaxPacketLen {
		return b, fmt.Errorf("encode UD packet: %d-byte payload makes a %d-byte frame, PktLen allows %d: %w",
			len(p.Payload), n, MaxPacketLen, ErrLength)
	}
	start := len(b)
	b = slices.Grow(b, n)[:start+n]
	out := b[start:]
	if err := p.encode(out, crcs); err != nil {
		return b[:start], err
	}
	return b, nil
}

// encode writes p into out, which is exactly p.Len() bytes; the ICRC and
// VCRC fields are left zero unless crcs.
func (p *Packet) encode(out []byte, crcs bool) error {
	lrh := p.LRH
	lrh.LNH = LNHIBALocal
	if p.HasGRH {
		lrh.LNH = LNHIBAGlobal
	}
	lrh.PktLen = uint16((len(out) - VCRCLen) / 4)
	if err := lrh.Encode(out); err != nil {
		return fmt.Errorf("encode UD packet: %w", err)
	}
	off := LRHLen
	if p.HasGRH {
		grh := p.GRH
		grh.IPVer = GRHIPVer
		grh.NxtHdr = NxtHdrIBA
		grh.PayLen = uint16(len(out) - VCRCLen - LRHLen - GRHLen)
		if err := grh.Encode(out[off:]); err != nil {
			return fmt.Errorf("encode UD packet: %w", err)
		}
		off += GRHLen
	}
	bth := p.BTH
	bth.PadCnt = uint8(-len(p.Payload) & 3)
	if err := bth.Encode(out[off:]); err != nil {
		return fmt.Errorf("encode UD packet: %w", err)
	}
	off += BTHLen
	if err := p.DETH.Encode(out[off:]); err != nil {
		return fmt.Errorf("encode UD packet: %w", err)
	}
	off += DETHLen
	if bth.OpCode == OpUDSendOnlyImm {
		binary.BigEndian.PutUint32(out[off:], p.ImmDt)
		off += ImmDtLen
	}
	off += copy(out[off:], p.Payload)
	icrcAt := len(out) - VCRCLen - ICRCLen
	clear(out[off:icrcAt])
	if !crcs {
		clear(out[icrcAt:])
		return nil
	}
	icrc, err := ICRC(out[:icrcAt])
	if err != nil {
		return fmt.Errorf("encode UD packet: %w", err)
	}
	binary.LittleEndian.PutUint32(out[icrcAt:], icrc)
	binary.LittleEndian.PutUint16(out[icrcAt+ICRCLen:], VCRC(out[:icrcAt+ICRCLen]))
	return nil
}
