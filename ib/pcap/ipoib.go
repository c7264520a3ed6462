package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipoibd/ipoibd/ib"
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

// IPoIB capture frame sizes; the link type is LinkTypeIPoIB.
const (
	// IPoIBPseudoHeaderLen is the pseudo-header in front of the IPoIB
	// header.
	IPoIBPseudoHeaderLen = 40
	// IPoIBHeaderLen is the IPoIB encapsulation header (RFC 4391 section 6).
	IPoIBHeaderLen = 4
	// IPoIBFrameHeaderLen is everything in front of the payload.
	IPoIBFrameHeaderLen = IPoIBPseudoHeaderLen + IPoIBHeaderLen
	// ipoibAddrOffset is where the address form keeps the destination.
	ipoibAddrOffset = IPoIBPseudoHeaderLen - ib.IPoIBAddrLen
	// ipoibSrcQPNOffset is where the GRH form keeps the sender's QPN.
	ipoibSrcQPNOffset = 4
)

// ErrIPoIBFrame means a buffer is too short to be an IPoIB capture frame.
var ErrIPoIBFrame = errors.New("pcap: not an IPoIB capture frame")

// IPoIBForm says which pseudo-header layout a frame uses.
type IPoIBForm uint8

// Pseudo-header layouts.
const (
	// IPoIBFormAddress carries the destination IPoIB address: what we
	// write for transmitted packets, and what Linux writes both ways.
	IPoIBFormAddress IPoIBForm = iota + 1
	// IPoIBFormGRH carries the GRH fields and the sender's QPN: what we
	// write for received packets.
	IPoIBFormGRH
)

// String names the form.
func (f IPoIBForm) String() string {
	switch f {
	case IPoIBFormAddress:
		return "address"
	case IPoIBFormGRH:
		return "GRH"
	}
	return fmt.Sprintf("IPoIBForm(%d)", uint8(f))
}

// IPoIBFrame is one decoded IPoIB capture frame.
type IPoIBFrame struct {
	Form IPoIBForm
	// Dest is the destination address (IPoIBFormAddress only).
	Dest ib.IPoIBAddr
	// GRH holds IPVer, TClass, FlowLabel, SGID and DGID (IPoIBFormGRH
	// only); PayLen, NxtHdr and HopLmt are not in the capture and stay
	// zero.
	GRH ib.GRH
	// SrcQPN is the sender's QPN (IPoIBFormGRH only).
	SrcQPN ib.QPN
	// EtherType says what the payload is (0x0800 IPv4, 0x0806 ARP, 0x86DD
	// IPv6).
	EtherType uint16
	// Reserved is the second half of the IPoIB header, zero on the wire.
	Reserved uint16
	// Payload follows the IPoIB header; it aliases the decoded frame.
	Payload []byte
}

// DecodeIPoIB decodes one LINKTYPE_IPOIB frame into f without allocating.
// A pseudo-header whose top nibble is 6 (the GRH's IPVer) is the GRH form;
// anything else is the address form, since Linux may leave non-zero
// headroom in bytes 0-19 of that form (Wireshark reads any pseudo-header
// that does not start with zero bytes as a GRH, and so misreads those).
// Only a frame shorter than IPoIBFrameHeaderLen is an error.
func DecodeIPoIB(frame []byte, f *IPoIBFrame) error {
	if len(frame) < IPoIBFrameHeaderLen {
		return fmt.Errorf("decode IPoIB capture frame: %d bytes, need at least %d: %w: %w",
			len(frame), IPoIBFrameHeaderLen, ErrIPoIBFrame, ib.ErrTruncated)
	}
	if frame[0]>>4 == ib.GRHIPVer {
		f.Form = IPoIBFormGRH
		f.Dest = ib.IPoIBAddr{}
		if err := f.GRH.Decode(frame); err != nil {
			return fmt.Errorf("decode IPoIB capture frame: %w", err)
		}
		f.GRH.PayLen, f.GRH.NxtHdr, f.GRH.HopLmt = 0, 0, 0
		f.SrcQPN = ib.QPN(binary.BigEndian.Uint32(frame[ipoibSrcQPNOffset:])) & ib.QPNMask
	} else {
		f.Form = IPoIBFormAddress
		f.GRH, f.SrcQPN = ib.GRH{}, 0
		if err := f.Dest.Decode(frame[ipoibAddrOffset:]); err != nil {
			return fmt.Errorf("decode IPoIB capture frame: %w", err)
		}
	}
	f.EtherType = binary.BigEndian.Uint16(frame[IPoIBPseudoHeaderLen:])
	f.Reserved = binary.BigEndian.Uint16(frame[IPoIBPseudoHeaderLen+2:])
	f.Payload = frame[IPoIBFrameHeaderLen:]
	return nil
}

// AppendTo appends f in its form to b. Bytes the form does not define
// (0-19 of the address form, 4 of the GRH form) are written as zero, and
// the GRH form always carries IPVer 6 so a reader can recognise it. On
// error b is returned unchanged.
func (f *IPoIBFrame) AppendTo(b []byte) ([]byte, error) {
	n := len(b)
	b = append(b, make([]byte, IPoIBFrameHeaderLen)...)
	hdr := b[n : n+IPoIBFrameHeaderLen]
	switch f.Form {
	case IPoIBFormAddress:
		if err := f.Dest.Encode(hdr[ipoibAddrOffset:]); err != nil {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: destination: %w", err)
		}
	case IPoIBFormGRH:
		if !f.SrcQPN.Valid() {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: source QPN %#x exceeds 24 bits: %w",
				uint32(f.SrcQPN), ib.ErrFieldRange)
		}
		g := f.GRH
		g.IPVer = ib.GRHIPVer
		if err := g.Encode(hdr); err != nil {
			return b[:n], fmt.Errorf("encode IPoIB capture frame: %w", err)
		}
		binary.BigEndian.PutUint32(hdr[ipoibSrcQPNOffset:], uint32(f.SrcQPN))
	default:
		return b[:n], fmt.Errorf("encode IPoIB capture frame: form %v: %w", f.Form, ib.ErrFieldRange)
	}
	binary.BigEndian.PutUint16(hdr[IPoIBPseudoHeaderLen:], f.EtherType)
	binary.BigEndian.PutUint16(hdr[IPoIBPseudoHeaderLen+2:], f.Reserved)
	return append(b, f.Payload...), nil
}

// AppendIPoIBTransmit appends the capture frame of a packet sent to dst:
// address form, reserved bytes zero. It allocates only if b lacks room.
func AppendIPoIBTransmit(b []byte, dst ib.IPoIBAddr, etherType uint16, payload []byte) ([]byte, error) {
	f := IPoIBFrame{Form: IPoIBFormAddress, Dest: dst, EtherType: etherType, Payload: payload}
	return f.AppendTo(b)
}

// AppendIPoIBReceive appends the capture frame of a packet received from
// srcQPN: GRH form with the TClass, FlowLabel, SGID and DGID of grh (a
// packet that arrived without a GRH still gets one: the sender's GID as
// SGID, the receiving port's GID or the MGID as DGID). It allocates only if
// b lacks room.
func AppendIPoIBReceive(b []byte, grh *ib.GRH, srcQPN ib.QPN, etherType uint16, payload []byte) ([]byte, error) {
	f := IPoIBFrame{Form: IPoIBFormGRH, GRH: *grh, SrcQPN: srcQPN, EtherType: etherType, Payload: payload}
	return f.AppendTo(b)
}

// IPoIBWriter writes IPoIB frames into a pcap file of link type
// LinkTypeIPoIB. Like Writer it is safe for concurrent use.
type IPoIBWriter struct {
	w *Writer
}

// NewIPoIBWriter writes a pcap file header for LinkTypeIPoIB to w, with
// DefaultSnaplen so connected-mode frames fit whole.
func NewIPoIBWriter(w io.Writer) (*IPoIBWriter, error) {
	pw, err := NewWriter(w, LinkTypeIPoIB, DefaultSnaplen)
	if err != nil {
		return nil, fmt.Errorf("IPoIB writer: %w", err)
	}
	return &IPoIBWriter{w: pw}, nil
}

// WriteFrame writes f captured at ts (zero for now). The payload is not
// copied into a buffer of the caller's.
func (w *IPoIBWriter) WriteFrame(ts time.Time, f *IPoIBFrame) error {
	var hb [IPoIBFrameHeaderLen]byte
	head := *f
	head.Payload = nil
	h, err := head.AppendTo(hb[:0])
	if err != nil {
		return fmt.Errorf("IPoIB write: %w", err)
	}
	return w.w.WriteJoined(ts, h, f.Payload)
}

// WriteTransmit writes a packet sent to dst, in the address form.
func (w *IPoIBWriter) WriteTransmit(ts time.Time, dst ib.IPoIBAddr, etherType uint16, payload []byte) error {
	return w.WriteFrame(ts, &IPoIBFrame{Form: IPoIBFormAddress, Dest: dst, EtherType: etherType, Payload: payload})
}

// WriteReceive writes a packet received from srcQPN, in the GRH form; see
// AppendIPoIBReceive for what grh should hold.
func (w *IPoIBWriter) WriteReceive(ts time.Time, grh *ib.GRH, srcQPN ib.QPN, etherType uint16, payload []byte) error {
	return w.WriteFrame(ts, &IPoIBFrame{Form: IPoIBFormGRH, GRH: *grh, SrcQPN: srcQPN, EtherType: etherType, Payload: payload})
}
