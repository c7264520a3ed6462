package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/pcap"
	"github.com/ipoibd/ipoibd/ipoib"
)

// The IPoIB capture form (LINKTYPE_IPOIB, 242). Every frame starts with a
// 40-byte pseudo-header, then the 4-byte IPoIB header (ethertype, two
// reserved bytes; RFC 4391 section 6), then the IP or ARP packet. The
// pseudo-header comes in two layouts, told apart by their first bytes:
//
//   - address form: bytes 20-39 hold the 20-byte IPoIB destination address.
//     Linux's IPoIB driver keeps that address in front of the header
//     (whatever lies in bytes 0-19 is skb headroom, usually zero), which is
//     why this is the form libpcap captures on an ib0 interface. We write
//     bytes 0-19 as zero: Wireshark takes two leading zero bytes to mean
//     this form.
//   - GRH form: shaped like the receive GRH. Bytes 0-3 are IPVer (6),
//     TClass and FlowLabel, bytes 8-23 the source GID, 24-39 the
//     destination GID, but bytes 4-7 hold a zero byte and the sender's
//     24-bit QPN where a GRH has PayLen, NxtHdr and HopLmt. That is how
//     Wireshark reads it, and it keeps the sender's QPN, which a GRH alone
//     would lose.
//
// Writing only the 4-byte IPoIB header, as some tools do, is silently
// misread by tshark and tcpdump, which always skip 40 bytes first.

// IPoIB capture frame sizes; the link type is pcap.LinkTypeIPoIB.
const (
	// PseudoHeaderLen is the pseudo-header in front of the IPoIB
	// header.
	PseudoHeaderLen = 40
	// HeaderLen is the IPoIB encapsulation header (RFC 4391 section 6).
	HeaderLen = 4
	// FrameHeaderLen is everything in front of the payload.
	FrameHeaderLen = PseudoHeaderLen + HeaderLen
	// addrOffset is where the address form keeps the destination.
	addrOffset = PseudoHeaderLen - ipoib.AddrLen
	// srcQPNOffset is where the GRH form keeps the sender's QPN.
	srcQPNOffset = 4
)

// ErrFrame means a buffer is too short to be an IPoIB capture frame.
var ErrFrame = errors.New("capture: not an IPoIB capture frame")

// Form says which pseudo-header layout a frame uses.
type Form uint8

// Pseudo-header layouts.
const (
	// FormAddress carries the destination IPoIB address: what we
	// write for transmitted packets, and what Linux writes both ways.
	FormAddress Form = iota + 1
	// FormGRH carries the GRH fields and the sender's QPN: what we
	// write for received packets.
	FormGRH
)

// String names the form.
func (f Form) String() string {
	switch f {
	case FormAddress:
		return "address"
	case FormGRH:
		return "GRH"
	}
	return fmt.Sprintf("Form(%d)", uint8(f))
}

// Frame is one decoded IPoIB capture frame.
type Frame struct {
	Form Form
	// Dest is the destination address (FormAddress only).
	Dest ipoib.Addr
	// GRH holds IPVer, TClass, FlowLabel, SGID and DGID (FormGRH
	// only); PayLen, NxtHdr and HopLmt are not in the capture and stay
	// zero.
	GRH ib.GRH
	// SrcQPN is the sender's QPN (FormGRH only).
	SrcQPN ib.QPN
	// EtherType says what the payload is (0x0800 IPv4, 0x0806 ARP, 0x86DD
	// IPv6).
	EtherType uint16
	// Reserved is the second half of the IPoIB header, zero on the wire.
	Reserved uint16
	// Payload follows the IPoIB header; it aliases the decoded frame.
	Payload []byte
}

// Decode decodes one LINKTYPE_IPOIB frame into f without allocating.
// A pseudo-header whose top nibble is 6 (the GRH's IPVer) is the GRH form;
// anything else is the address form, since Linux may leave non-zero
// headroom in bytes 0-19 of that form (Wireshark reads any pseudo-header
// that does not start with zero bytes as a GRH, and so misreads those).
// Only a frame shorter than FrameHeaderLen is an error.
func Decode(frame []byte, f *Frame) error {
	if len(frame) < FrameHeaderLen {
		return fmt.Errorf("decode IPoIB capture frame: %d bytes, need at least %d: %w: %w",
			len(frame), FrameHeaderLen, ErrFrame, ib.ErrTruncated)
	}
	if frame[0]>>4 == ib.GRHIPVer {
		f.Form = FormGRH
		f.Dest = ipoib.Addr{}
		if err := f.GRH.Decode(frame); err != nil {
			return fmt.Errorf("decode IPoIB capture frame: %w", err)
		}
		f.GRH.PayLen, f.GRH.NxtHdr, f.GRH.HopLmt = 0, 0, 0
		f.SrcQPN = ib.QPN(binary.BigEndian.Uint32(frame[srcQPNOffset:])) & ib.QPNMask
	} else {
		f.Form = FormAddress
		f.GRH, f.SrcQPN = ib.GRH{}, 0
		if err := f.Dest.Decode(frame[addrOffset:]); err != nil {
			return fmt.Errorf("decode IPoIB capture frame: %w", err)
		}
	}
	f.EtherType = binary.BigEndian.Uint16(frame[PseudoHeaderLen:])
	f.Reserved = binary.BigEndian.Uint16(frame[PseudoHeaderLen+2:])
	f.Payload = frame[FrameHeaderLen:]
	return nil
}

// AppendTo appends f in its form to b. Bytes the form does not define
// (0-19 of the address form, 4 of the GRH form) are written as zero, and
// the GRH form always carries IPVer 6 so a reader can recognise it. On
// error b is returned unchanged.
func (f *Frame) AppendTo(b []byte) ([]byte, error) {
	n := len(b)
	b = append(b, make([]byte, FrameHeaderLen)...)
	hdr := b[n : n+FrameHeaderLen]
	switch f.Form {
	case FormAddress:
		if err := f.Dest.Encode(hdr[addrOffset:]); err != nil {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: destination: %w", err)
		}
	case FormGRH:
		if !f.SrcQPN.Valid() {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: source QPN %#x exceeds 24 bits: %w",
				uint32(f.SrcQPN), ib.ErrFieldRange)
		}
		g := f.GRH
		g.IPVer = ib.GRHIPVer
		if err := g.Encode(hdr); err != nil {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: %w", err)
		}
		binary.BigEndian.PutUint32(hdr[srcQPNOffset:], uint32(f.SrcQPN))
	default:
		return b[:n], fmt.Errorf("encode IPoIB capture frame: form %v: %w", f.Form, ib.ErrFieldRange)
	}
	binary.BigEndian.PutUint16(hdr[PseudoHeaderLen:], f.EtherType)
	binary.BigEndian.PutUint16(hdr[PseudoHeaderLen+2:], f.Reserved)
	return append(b, f.Payload...), nil
}

// AppendTransmit appends the capture frame of a packet sent to dst:
// address form, reserved bytes zero. It allocates only if b lacks room.
func AppendTransmit(b []byte, dst ipoib.Addr, etherType uint16, payload []byte) ([]byte, error) {
	f := Frame{Form: FormAddress, Dest: dst, EtherType: etherType, Payload: payload}
	return f.AppendTo(b)
}

// AppendReceive appends the capture frame of a packet received from
// srcQPN: GRH form with the TClass, FlowLabel, SGID and DGID of grh (a
// packet that arrived without a GRH still gets one: the sender's GID as
// SGID, the receiving port's GID or the MGID as DGID). It allocates only if
// b lacks room.
func AppendReceive(b []byte, grh *ib.GRH, srcQPN ib.QPN, etherType uint16, payload []byte) ([]byte, error) {
	f := Frame{Form: FormGRH, GRH: *grh, SrcQPN: srcQPN, EtherType: etherType, Payload: payload}
	return f.AppendTo(b)
}

// Writer writes IPoIB frames into a pcap file of link type
// pcap.LinkTypeIPoIB. Like pcap.Writer it is safe for concurrent use.
type Writer struct {
	w *pcap.Writer
}

// NewWriter writes a pcap file header for pcap.LinkTypeIPoIB to w, with
// pcap.DefaultSnaplen so connected-mode frames fit whole.
func NewWriter(w io.Writer) (*Writer, error) {
	pw, err := pcap.NewWriter(w, pcap.LinkTypeIPoIB, pcap.DefaultSnaplen)
	if err != nil {
		return nil, fmt.Errorf("IPoIB writer: %w", err)
	}
	return &Writer{w: pw}, nil
}

// WriteFrame writes f captured at ts (zero for now). The payload is not
// copied into a buffer of the caller's.
func (w *Writer) WriteFrame(ts time.Time, f *Frame) error {
	var hb [FrameHeaderLen]byte
	head := *f
	head.Payload = nil
	h, err := head.AppendTo(hb[:0])
	if err != nil {
		return fmt.Errorf("IPoIB write: %w", err)
	}
	return w.w.WriteJoined(ts, h, f.Payload)
}

// WriteTransmit writes a packet sent to dst, in the address form.
func (w *Writer) WriteTransmit(ts time.Time, dst ipoib.Addr, etherType uint16, payload []byte) error {
	return w.WriteFrame(ts, &Frame{Form: FormAddress, Dest: dst, EtherType: etherType, Payload: payload})
}

// WriteReceiveFrom writes a packet received from src for dst (the
// interface's own address, or a group's), in the GRH form, with the GRH
// rebuilt from the two addresses: SGID from the source, DGID from the
// destination. That is all a GRH-form capture keeps of the wire GRH
// besides traffic class and flow label, which are left zero; it is what
// a layer above the driver, which never sees the wire GRH, can write.
func (w *Writer) WriteReceiveFrom(ts time.Time, src, dst ipoib.Addr, etherType uint16, payload []byte) error {
	grh := ib.GRH{IPVer: ib.GRHIPVer, SGID: src.GID, DGID: dst.GID}
	return w.WriteReceive(ts, &grh, src.QPN, etherType, payload)
}

// WriteReceive writes a packet received from srcQPN, in the GRH form; see
// AppendReceive for what grh should hold.
func (w *Writer) WriteReceive(ts time.Time, grh *ib.GRH, srcQPN ib.QPN, etherType uint16, payload []byte) error {
	return w.WriteFrame(ts, &Frame{Form: FormGRH, GRH: *grh, SrcQPN: srcQPN, EtherType: etherType, Payload: payload})
}
