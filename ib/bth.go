package ib

import (
	"encoding/binary"
	"fmt"
)

// BTHLen is the size of the Base Transport Header on the wire (IBA 9.2).
const BTHLen = 12

// bthMaxPSN bounds the 24-bit PSN.
const bthMaxPSN = 0xFFFFFF

// Opcode is the BTH OpCode (IBA 9.2.1): the top three bits pick the
// transport service, the low five the operation.
type Opcode uint8

// Opcodes this package encodes and decodes as packets (IBA 9.2.1, Table 35,
// the Unreliable Datagram rows). UD SEND Only is the only operation a UD QP
// has; IPoIB and the management classes (QP0, QP1) all use it.
const (
	// OpUDSendOnly is UD SEND Only: BTH, DETH, payload.
	OpUDSendOnly Opcode = 0x64
	// OpUDSendOnlyImm is UD SEND Only with Immediate: BTH, DETH, ImmDt,
	// payload.
	OpUDSendOnlyImm Opcode = 0x65
)

// Transport service prefixes, the OpCode's top three bits (IBA 9.2.1,
// Table 35).
const (
	opTransportMask = 0xE0
	opRC            = 0x00 // Reliable Connection
	opUC            = 0x20 // Unreliable Connection
	opRD            = 0x40 // Reliable Datagram
	opUD            = 0x60 // Unreliable Datagram
	opCNP           = 0x80 // Congestion Notification Packet
	opXRC           = 0xA0 // Extended Reliable Connection
)

// opOperation names the low five OpCode bits (IBA 9.2.1, Table 35). The
// same code means the same operation under every transport that has it.
var opOperation = [32]string{
	0x00: "SEND First",
	0x01: "SEND Middle",
	0x02: "SEND Last",
	0x03: "SEND Last with Immediate",
	0x04: "SEND Only",
	0x05: "SEND Only with Immediate",
	0x06: "RDMA WRITE First",
	0x07: "RDMA WRITE Middle",
	0x08: "RDMA WRITE Last",
	0x09: "RDMA WRITE Last with Immediate",
	0x0A: "RDMA WRITE Only",
	0x0B: "RDMA WRITE Only with Immediate",
	0x0C: "RDMA READ Request",
	0x0D: "RDMA READ response First",
	0x0E: "RDMA READ response Middle",
	0x0F: "RDMA READ response Last",
	0x10: "RDMA READ response Only",
	0x11: "Acknowledge",
	0x12: "ATOMIC Acknowledge",
	0x13: "CmpSwap",
	0x14: "FetchAdd",
	0x15: "Resync",
	0x16: "SEND Last with Invalidate",
	0x17: "SEND Only with Invalidate",
}

// Which of the operation codes each transport defines (IBA 9.2.1, Table
// 35), one bit per low-five-bit code.
const (
	opsSend    = 1<<0x00 | 1<<0x01 | 1<<0x02 | 1<<0x03 | 1<<0x04 | 1<<0x05
	opsWrite   = 1<<0x06 | 1<<0x07 | 1<<0x08 | 1<<0x09 | 1<<0x0A | 1<<0x0B
	opsRead    = 1<<0x0C | 1<<0x0D | 1<<0x0E | 1<<0x0F | 1<<0x10
	opsAck     = 1<<0x11 | 1<<0x12 | 1<<0x13 | 1<<0x14
	opsInvd    = 1<<0x16 | 1<<0x17
	opsRC      = opsSend | opsWrite | opsRead | opsAck | opsInvd
	opsUC      = opsSend | opsWrite
	opsRD      = opsSend | opsWrite | opsRead | opsAck | 1<<0x15
	opsUD      = 1<<0x04 | 1<<0x05
	opCodeMask = 0x1F
)

// String names the opcode, e.g. "UD SEND Only" or "RC Acknowledge", so
// errors and logs can say what arrived. Codes Table 35 leaves reserved or
// to manufacturers print in hex.
func (o Opcode) String() string {
	var t string
	var ops uint32
	switch uint8(o) & opTransportMask {
	case opRC:
		t, ops = "RC", opsRC
	case opUC:
		t, ops = "UC", opsUC
	case opRD:
		t, ops = "RD", opsRD
	case opUD:
		t, ops = "UD", opsUD
	case opXRC:
		t, ops = "XRC", opsRC
	case opCNP:
		if o == opCNP {
			return "CNP"
		}
	}
	if code := o & opCodeMask; ops&(1<<code) != 0 {
		return t + " " + opOperation[code]
	}
	return fmt.Sprintf("opcode %#02x", uint8(o))
}

// BTH is the Base Transport Header (IBA 9.2), present on every IBA
// transport packet.
//
// Wire layout, big-endian:
//
//	byte 0: OpCode
//	byte 1: SE(1) M(1) PadCnt(2) TVer(4)
//	bytes 2-3: P_Key
//	byte 4: reserved (variant: the ICRC leaves it out)
//	bytes 5-7: DestQP
//	byte 8: AckReq(1) reserved(7)
//	bytes 9-11: PSN
type BTH struct {
	// OpCode is the transport service and operation.
	OpCode Opcode
	// SE (solicited event) asks the receiver to raise a completion event.
	SE bool
	// M is the MigReq bit of automatic path migration; unused on UD.
	M bool
	// PadCnt is the number of pad bytes (0-3) that bring the payload to a
	// multiple of 4 bytes; they sit before the ICRC.
	PadCnt uint8
	// TVer is the transport header version; only 0 is defined.
	TVer uint8
	// PKey is the partition key the receiver checks against its table.
	PKey PKey
	// DestQP is the destination queue pair (24 bits); QPNMulticast for
	// multicast.
	DestQP QPN
	// AckReq asks for an acknowledgement; unused on UD.
	AckReq bool
	// PSN is the 24-bit packet sequence number.
	PSN uint32
}

// Decode fills h from the first BTHLen bytes of b and accepts only the UD
// SEND opcodes this package builds packets from; any other opcode fails
// with ErrUnsupportedOpcode (h is still filled, so the caller can report
// what arrived). Use DecodeAnyOpcode to read other transports' headers.
func (h *BTH) Decode(b []byte) error {
	if err := h.DecodeAnyOpcode(b); err != nil {
		return err
	}
	if h.OpCode != OpUDSendOnly && h.OpCode != OpUDSendOnlyImm {
		return fmt.Errorf("decode BTH: opcode %#02x (%v): %w", uint8(h.OpCode), h.OpCode, ErrUnsupportedOpcode)
	}
	return nil
}

// DecodeAnyOpcode fills h from the first BTHLen bytes of b whatever the
// opcode, for captures and tools that look at RC, UC or RD traffic too.
// Reserved bits are ignored.
func (h *BTH) DecodeAnyOpcode(b []byte) error {
	if len(b) < BTHLen {
		return fmt.Errorf("decode BTH: have %d bytes, need %d: %w", len(b), BTHLen, ErrTruncated)
	}
	h.OpCode = Opcode(b[0])
	h.SE = b[1]&0x80 != 0
	h.M = b[1]&0x40 != 0
	h.PadCnt = b[1] >> 4 & 0x3
	h.TVer = b[1] & 0xF
	h.PKey = PKey(binary.BigEndian.Uint16(b[2:4]))
	h.DestQP = QPN(binary.BigEndian.Uint32(b[4:8])) & QPNMask
	h.AckReq = b[8]&0x80 != 0
	h.PSN = binary.BigEndian.Uint32(b[8:12]) & bthMaxPSN
	return nil
}

// Encode writes h into the first BTHLen bytes of b, with reserved bits
// zero. Any opcode is written: the packet encoder, not the header, decides
// which operations it supports. Fields too wide for their bits fail with
// ErrFieldRange.
func (h *BTH) Encode(b []byte) error {
	if len(b) < BTHLen {
		return fmt.Errorf("encode BTH: buffer %d bytes, need %d: %w", len(b), BTHLen, ErrTruncated)
	}
	switch {
	case h.PadCnt > 3:
		return fmt.Errorf("encode BTH: PadCnt %d does not fit 2 bits: %w", h.PadCnt, ErrFieldRange)
	case h.TVer > 0xF:
		return fmt.Errorf("encode BTH: TVer %d does not fit 4 bits: %w", h.TVer, ErrFieldRange)
	case !h.DestQP.Valid():
		return fmt.Errorf("encode BTH: DestQP %#x does not fit 24 bits: %w", uint32(h.DestQP), ErrFieldRange)
	case h.PSN > bthMaxPSN:
		return fmt.Errorf("encode BTH: PSN %#x does not fit 24 bits: %w", h.PSN, ErrFieldRange)
	}
	b[0] = uint8(h.OpCode)
	b[1] = h.PadCnt<<4 | h.TVer
	if h.SE {
		b[1] |= 0x80
	}
	if h.M {
		b[1] |= 0x40
	}
	binary.BigEndian.PutUint16(b[2:4], uint16(h.PKey))
	binary.BigEndian.PutUint32(b[4:8], uint32(h.DestQP))
	binary.BigEndian.PutUint32(b[8:12], h.PSN)
	if h.AckReq {
		b[8] |= 0x80
	}
	return nil
}
