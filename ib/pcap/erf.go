package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// ERF record layout (Endace ERF Types Reference, "Generic ERF header").
// All that matters here is the 16-byte header without extension headers:
//
//	bytes 0-7:   timestamp, little-endian 32.32 fixed point seconds
//	byte 8:      type (low 7 bits), extension-header flag (top bit)
//	byte 9:      flags
//	bytes 10-11: rlen, record length including this header, big-endian
//	bytes 12-13: lctr, loss counter, big-endian
//	bytes 14-15: wlen, the packet's length on the wire, big-endian
const (
	// ERFHeaderLen is the size of the ERF header before the packet.
	ERFHeaderLen = 16
	// ERFTypeInfiniBand is ERF type 21, TYPE_INFINIBAND: a raw IB packet
	// from the LRH through the VCRC follows the header.
	ERFTypeInfiniBand = 21

	// erfTypeMask keeps the record type; the top bit flags extension
	// headers, which this package neither writes nor reads.
	erfTypeMask = 0x7F
	// erfExtHeader is the type byte's extension-header flag.
	erfExtHeader = 0x80
)

// ERF flags bits (the flags byte of the ERF header).
const (
	// ERFFlagIfaceMask selects the capture interface (0-3). Writers use
	// it to tell the two directions or ports of a link apart; Wireshark
	// shows it as "Port A" to "Port D".
	ERFFlagIfaceMask = 0x03
	// ERFFlagVarLen says records vary in length, as every record here does.
	ERFFlagVarLen = 0x04
	// ERFFlagTruncated says the record was cut short for lack of buffer.
	ERFFlagTruncated = 0x08
	// ERFFlagRxError says the link saw an error receiving the packet.
	ERFFlagRxError = 0x10
	// ERFFlagDSError says the capture card saw an internal error.
	ERFFlagDSError = 0x20
)

// ErrERF is wrapped by every error about a malformed ERF header.
var ErrERF = errors.New("pcap: malformed ERF record")

// ERFHeader is the 16-byte header of an ERF record.
type ERFHeader struct {
	// Timestamp is the 32.32 fixed-point capture time; see ERFTimestamp.
	Timestamp uint64
	// Type is the record type, ERFTypeInfiniBand for IB packets.
	Type uint8
	// Flags holds the ERFFlag bits.
	Flags uint8
	// RLen is the record length, header included.
	RLen uint16
	// LCtr counts packets lost since the previous record.
	LCtr uint16
	// WLen is the packet's length on the wire.
	WLen uint16
}

// Decode fills h from b, the start of an ERF record. Records with
// extension headers are refused, since the packet would not follow the
// header directly, as are records whose RLen cannot hold the header.
func (h *ERFHeader) Decode(b []byte) error {
	if len(b) < ERFHeaderLen {
		return fmt.Errorf("decode ERF header: %d bytes, need %d: %w", len(b), ERFHeaderLen, ErrERF)
	}
	if b[8]&erfExtHeader != 0 {
		return fmt.Errorf("decode ERF header: extension headers present, not supported: %w", ErrERF)
	}
	h.Timestamp = binary.LittleEndian.Uint64(b[0:8])
	h.Type = b[8] & erfTypeMask
	h.Flags = b[9]
	h.RLen = binary.BigEndian.Uint16(b[10:12])
	h.LCtr = binary.BigEndian.Uint16(b[12:14])
	h.WLen = binary.BigEndian.Uint16(b[14:16])
	if h.RLen < ERFHeaderLen {
		return fmt.Errorf("decode ERF header: rlen %d shorter than the header: %w", h.RLen, ErrERF)
	}
	return nil
}

// Encode writes h into the first ERFHeaderLen bytes of b.
func (h *ERFHeader) Encode(b []byte) error {
	if len(b) < ERFHeaderLen {
		return fmt.Errorf("encode ERF header: buffer %d bytes, need %d: %w", len(b), ERFHeaderLen, ErrERF)
	}
	if h.Type > erfTypeMask {
		return fmt.Errorf("encode ERF header: type %d does not fit 7 bits: %w", h.Type, ErrERF)
	}
	binary.LittleEndian.PutUint64(b[0:8], h.Timestamp)
	b[8] = h.Type
	b[9] = h.Flags
	binary.BigEndian.PutUint16(b[10:12], h.RLen)
	binary.BigEndian.PutUint16(b[12:14], h.LCtr)
	binary.BigEndian.PutUint16(b[14:16], h.WLen)
	return nil
}

// DecodeERFRecord splits one pcap record of link type ERF into its header
// and packet. The packet is WLen bytes, or fewer when the record was cut
// by the snaplen; it aliases rec. Bytes beyond WLen (alignment padding)
// are dropped.
func DecodeERFRecord(rec []byte, h *ERFHeader) ([]byte, error) {
	if err := h.Decode(rec); err != nil {
		return nil, err
	}
	pkt := rec[ERFHeaderLen:]
	if int(h.WLen) < len(pkt) {
		pkt = pkt[:h.WLen]
	}
	return pkt, nil
}

// ERFTimestamp converts t to ERF's 32.32 fixed-point form: whole seconds
// since 1970 in the high 32 bits, the binary fraction of a second in the
// low 32. It fails for times the 32-bit seconds cannot hold (before 1970
// or from 2106 on).
func ERFTimestamp(t time.Time) (uint64, error) {
	s := t.Unix()
	if s < 0 || s > math.MaxUint32 {
		return 0, fmt.Errorf("ERF timestamp: %v outside 1970-2106: %w", t, ErrERF)
	}
	// ns * 2^32 / 1e9, rounded: 0.23 ns steps, so ERFTime gives back
	// the same nanosecond.
	frac := (uint64(t.Nanosecond())<<32 + 500_000_000) / 1_000_000_000
	return uint64(s)<<32 + frac, nil
}

// ERFTime converts an ERF timestamp to a time.Time, to the nearest
// nanosecond.
func ERFTime(ts uint64) time.Time {
	ns := ((ts&0xFFFFFFFF)*1_000_000_000 + 1<<31) >> 32
	return time.Unix(int64(ts>>32), int64(ns)).UTC()
}

// ERFWriter writes raw InfiniBand packets into a pcap file of link type
// ERF, one ERF record of type InfiniBand per packet, which Wireshark and
// tshark dissect as InfiniBand (ICRC and VCRC included). Like Writer it is
// safe for concurrent use.
type ERFWriter struct {
	w *Writer
}

// erfSnaplen leaves room for the largest ERF record: a 16-bit wlen plus
// the header.
const erfSnaplen = ERFHeaderLen + math.MaxUint16

// NewERFWriter writes a pcap file header for link type ERF to w.
func NewERFWriter(w io.Writer) (*ERFWriter, error) {
	pw, err := NewWriter(w, LinkTypeERF, erfSnaplen)
	if err != nil {
		return nil, fmt.Errorf("ERF writer: %w", err)
	}
	return &ERFWriter{w: pw}, nil
}

// WriteInfiniBand writes pkt, one IB packet from the first LRH byte
// through the VCRC, captured at ts (zero for now) on capture interface
// iface (0-3; the simulator uses it for the port or direction). RLen is
// exactly header plus packet, the bytes the pcap record holds. DAG cards
// pad records to 8 bytes and say so in RLen even where, as in the real
// capture in ib/testdata, the padding was not saved; tshark reads both.
func (e *ERFWriter) WriteInfiniBand(ts time.Time, iface uint8, pkt []byte) error {
	if iface > ERFFlagIfaceMask {
		return fmt.Errorf("ERF write: interface %d, ERF has 0-3: %w", iface, ErrERF)
	}
	if len(pkt) > math.MaxUint16-ERFHeaderLen {
		return fmt.Errorf("ERF write: %d-byte packet too long for rlen: %w", len(pkt), ErrERF)
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	stamp, err := ERFTimestamp(ts)
	if err != nil {
		return fmt.Errorf("ERF write: %w", err)
	}
	h := ERFHeader{
		Timestamp: stamp,
		Type:      ERFTypeInfiniBand,
		Flags:     ERFFlagVarLen | iface,
		RLen:      uint16(ERFHeaderLen + len(pkt)),
		WLen:      uint16(len(pkt)),
	}
	var hb [ERFHeaderLen]byte
	_ = h.Encode(hb[:]) // cannot fail: buffer and type fit
	return e.w.WriteJoined(ts, hb[:], pkt)
}
