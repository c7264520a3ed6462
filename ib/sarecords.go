package ib

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// The two SA records IPoIB lives on: PathRecord, which turns a GID into the
// LID, SL, rate and MTU a unicast packet needs, and MCMemberRecord, which
// joins the broadcast and multicast groups. Decoders read the front of a
// buffer (pass SAMAD.Data[:]); encoders write only the record's bytes.

// Record sizes (IBA 15.2.5.16; 15.2.5.17).
const (
	// PathRecordLen is the size of a PathRecord.
	PathRecordLen = 64
	// MCMemberRecordLen is the size of an MCMemberRecord; its
	// AttributeOffset is 7 words because the SA pads it to 56 bytes.
	MCMemberRecordLen = 52
)

// Field widths shared by both records.
const (
	flowLabelMax = 1<<20 - 1 // FlowLabel is 20 bits (IBA 8.3.1, GRH)
	sixBitMax    = 1<<6 - 1  // MTU, Rate and PacketLifeTime are 6 bits
	selectorMax  = 3
	nibbleMax    = 0xf
)

// PathRecord component mask bits, one per field in the order of IBA
// 15.2.5.16. ServiceID takes two bits because it replaced two reserved
// 32-bit fields of IBA 1.1; bit 7 belongs to a reserved field.
const (
	PathRecCompServiceID              ComponentMask = 1<<0 | 1<<1
	PathRecCompDGID                   ComponentMask = 1 << 2
	PathRecCompSGID                   ComponentMask = 1 << 3
	PathRecCompDLID                   ComponentMask = 1 << 4
	PathRecCompSLID                   ComponentMask = 1 << 5
	PathRecCompRawTraffic             ComponentMask = 1 << 6
	PathRecCompFlowLabel              ComponentMask = 1 << 8
	PathRecCompHopLimit               ComponentMask = 1 << 9
	PathRecCompTClass                 ComponentMask = 1 << 10
	PathRecCompReversible             ComponentMask = 1 << 11
	PathRecCompNumbPath               ComponentMask = 1 << 12
	PathRecCompPKey                   ComponentMask = 1 << 13
	PathRecCompQoSClass               ComponentMask = 1 << 14
	PathRecCompSL                     ComponentMask = 1 << 15
	PathRecCompMTUSelector            ComponentMask = 1 << 16
	PathRecCompMTU                    ComponentMask = 1 << 17
	PathRecCompRateSelector           ComponentMask = 1 << 18
	PathRecCompRate                   ComponentMask = 1 << 19
	PathRecCompPacketLifeTimeSelector ComponentMask = 1 << 20
	PathRecCompPacketLifeTime         ComponentMask = 1 << 21
	PathRecCompPreference             ComponentMask = 1 << 22
)

// PathRecord is the SA PathRecord attribute (IBA 15.2.5.16):
// everything a sender needs to reach DGID from SGID.
type PathRecord struct {
	// ServiceID lets the SA pick a path by service (IBA 1.2 and later).
	ServiceID  uint64
	DGID       GID
	SGID       GID
	DLID       LID
	SLID       LID
	RawTraffic bool
	// FlowLabel is 20 bits.
	FlowLabel uint32
	// HopLimit above 1 means the path leaves the subnet and a GRH is needed.
	HopLimit   uint8
	TClass     uint8
	Reversible bool
	// NumbPath is the 7-bit maximum number of paths to return (requests).
	NumbPath uint8
	PKey     PKey
	// QoSClass is 12 bits.
	QoSClass               uint16
	SL                     SL
	MTUSelector            Selector
	MTU                    MTU
	RateSelector           Selector
	Rate                   Rate
	PacketLifeTimeSelector Selector
	// PacketLifeTime is the 6-bit exponent read by PacketLifeTimeDuration.
	PacketLifeTime uint8
	Preference     uint8
}

// Decode fills r from b[:PathRecordLen]; b may be longer (the SA
// data of a MAD). Reserved bits are ignored.
func (r *PathRecord) Decode(b []byte) error {
	if len(b) < PathRecordLen {
		return fmt.Errorf("decode PathRecord: %d bytes, need %d: %w", len(b), PathRecordLen, ErrTruncated)
	}
	b = b[:PathRecordLen]
	r.ServiceID = binary.BigEndian.Uint64(b[0:])
	copy(r.DGID[:], b[8:24])
	copy(r.SGID[:], b[24:40])
	r.DLID = LID(binary.BigEndian.Uint16(b[40:]))
	r.SLID = LID(binary.BigEndian.Uint16(b[42:]))
	w := binary.BigEndian.Uint32(b[44:])
	r.RawTraffic = w>>31 != 0
	r.FlowLabel = w >> 8 & flowLabelMax
	r.HopLimit = uint8(w)
	r.TClass = b[48]
	r.Reversible = b[49]&0x80 != 0
	r.NumbPath = b[49] & 0x7f
	r.PKey = PKey(binary.BigEndian.Uint16(b[50:]))
	q := binary.BigEndian.Uint16(b[52:])
	r.QoSClass = q >> 4
	r.SL = SL(q & nibbleMax)
	r.MTUSelector, r.MTU = Selector(b[54]>>6), MTU(b[54]&sixBitMax)
	r.RateSelector, r.Rate = Selector(b[55]>>6), Rate(b[55]&sixBitMax)
	r.PacketLifeTimeSelector, r.PacketLifeTime = Selector(b[56]>>6), b[56]&sixBitMax
	r.Preference = b[57]
	return nil
}

// Encode writes r into b[:PathRecordLen] with reserved bits zero. It fails
// if b is short or a field does not fit its width.
func (r *PathRecord) Encode(b []byte) error {
	if len(b) < PathRecordLen {
		return fmt.Errorf("encode PathRecord: %d-byte buffer, need %d: %w", len(b), PathRecordLen, ErrTruncated)
	}
	switch {
	case r.FlowLabel > flowLabelMax:
		return fmt.Errorf("encode PathRecord: FlowLabel %#x exceeds 20 bits: %w", r.FlowLabel, ErrFieldRange)
	case r.NumbPath > 0x7f:
		return fmt.Errorf("encode PathRecord: NumbPath %d exceeds 7 bits: %w", r.NumbPath, ErrFieldRange)
	case r.QoSClass > 0xfff:
		return fmt.Errorf("encode PathRecord: QoSClass %#x exceeds 12 bits: %w", r.QoSClass, ErrFieldRange)
	case r.SL > nibbleMax:
		return fmt.Errorf("encode PathRecord: SL %d exceeds 4 bits: %w", r.SL, ErrFieldRange)
	}
	mtu, err := packSelector("MTU", r.MTUSelector, uint8(r.MTU))
	if err != nil {
		return fmt.Errorf("encode PathRecord: %w", err)
	}
	rate, err := packSelector("Rate", r.RateSelector, uint8(r.Rate))
	if err != nil {
		return fmt.Errorf("encode PathRecord: %w", err)
	}
	plt, err := packSelector("PacketLifeTime", r.PacketLifeTimeSelector, r.PacketLifeTime)
	if err != nil {
		return fmt.Errorf("encode PathRecord: %w", err)
	}
	b = b[:PathRecordLen]
	binary.BigEndian.PutUint64(b[0:], r.ServiceID)
	copy(b[8:24], r.DGID[:])
	copy(b[24:40], r.SGID[:])
	binary.BigEndian.PutUint16(b[40:], uint16(r.DLID))
	binary.BigEndian.PutUint16(b[42:], uint16(r.SLID))
	w := r.FlowLabel<<8 | uint32(r.HopLimit)
	if r.RawTraffic {
		w |= 1 << 31
	}
	binary.BigEndian.PutUint32(b[44:], w)
	b[48] = r.TClass
	b[49] = r.NumbPath
	if r.Reversible {
		b[49] |= 0x80
	}
	binary.BigEndian.PutUint16(b[50:], uint16(r.PKey))
	binary.BigEndian.PutUint16(b[52:], r.QoSClass<<4|uint16(r.SL))
	b[54], b[55], b[56] = mtu, rate, plt
	b[57] = r.Preference
	clear(b[58:])
	return nil
}

// MCMemberRecord component mask bits, one per field in the order of
// IBA 15.2.5.17.
const (
	MCMemberCompMGID                   ComponentMask = 1 << 0
	MCMemberCompPortGID                ComponentMask = 1 << 1
	MCMemberCompQKey                   ComponentMask = 1 << 2
	MCMemberCompMLID                   ComponentMask = 1 << 3
	MCMemberCompMTUSelector            ComponentMask = 1 << 4
	MCMemberCompMTU                    ComponentMask = 1 << 5
	MCMemberCompTClass                 ComponentMask = 1 << 6
	MCMemberCompPKey                   ComponentMask = 1 << 7
	MCMemberCompRateSelector           ComponentMask = 1 << 8
	MCMemberCompRate                   ComponentMask = 1 << 9
	MCMemberCompPacketLifeTimeSelector ComponentMask = 1 << 10
	MCMemberCompPacketLifeTime         ComponentMask = 1 << 11
	MCMemberCompSL                     ComponentMask = 1 << 12
	MCMemberCompFlowLabel              ComponentMask = 1 << 13
	MCMemberCompHopLimit               ComponentMask = 1 << 14
	MCMemberCompScope                  ComponentMask = 1 << 15
	MCMemberCompJoinState              ComponentMask = 1 << 16
	MCMemberCompProxyJoin              ComponentMask = 1 << 17
)

// JoinState is the 4-bit membership a port asks for or holds in a group
// (IBA 15.2.5.17, JoinState). A port may hold several at once.
type JoinState uint8

// Join states.
const (
	// JoinFullMember sends and receives; the group exists while it has one.
	JoinFullMember JoinState = 0x1
	// JoinNonMember receives but does not keep the group alive.
	JoinNonMember JoinState = 0x2
	// JoinSendOnlyNonMember only sends to the group.
	JoinSendOnlyNonMember JoinState = 0x4
	// JoinSendOnlyFullMember only sends, but counts as a full member for the
	// group's lifetime (IBA 1.3).
	JoinSendOnlyFullMember JoinState = 0x8
)

// MCMemberRecord is the SA MCMemberRecord attribute (IBA 15.2.5.17): one
// port's membership of one multicast group, and the group's parameters.
type MCMemberRecord struct {
	MGID    GID
	PortGID GID
	QKey    QKey
	MLID    LID
	// MTUSelector and MTU bound the group MTU (in a create request) or
	// report it (in the reply).
	MTUSelector            Selector
	MTU                    MTU
	TClass                 uint8
	PKey                   PKey
	RateSelector           Selector
	Rate                   Rate
	PacketLifeTimeSelector Selector
	PacketLifeTime         uint8
	SL                     SL
	// FlowLabel is 20 bits.
	FlowLabel uint32
	HopLimit  uint8
	// Scope is the 4-bit multicast scope, the same as in the MGID.
	Scope     uint8
	JoinState JoinState
	// ProxyJoin lets a port join on behalf of PortGID.
	ProxyJoin bool
}

// Decode fills r from b[:MCMemberRecordLen]; b may be longer.
// Reserved bits are ignored.
func (r *MCMemberRecord) Decode(b []byte) error {
	if len(b) < MCMemberRecordLen {
		return fmt.Errorf("decode MCMemberRecord: %d bytes, need %d: %w", len(b), MCMemberRecordLen, ErrTruncated)
	}
	b = b[:MCMemberRecordLen]
	copy(r.MGID[:], b[0:16])
	copy(r.PortGID[:], b[16:32])
	r.QKey = QKey(binary.BigEndian.Uint32(b[32:]))
	r.MLID = LID(binary.BigEndian.Uint16(b[36:]))
	r.MTUSelector, r.MTU = Selector(b[38]>>6), MTU(b[38]&sixBitMax)
	r.TClass = b[39]
	r.PKey = PKey(binary.BigEndian.Uint16(b[40:]))
	r.RateSelector, r.Rate = Selector(b[42]>>6), Rate(b[42]&sixBitMax)
	r.PacketLifeTimeSelector, r.PacketLifeTime = Selector(b[43]>>6), b[43]&sixBitMax
	w := binary.BigEndian.Uint32(b[44:])
	r.SL = SL(w >> 28)
	r.FlowLabel = w >> 8 & flowLabelMax
	r.HopLimit = uint8(w)
	r.Scope = b[48] >> 4
	r.JoinState = JoinState(b[48] & nibbleMax)
	r.ProxyJoin = b[49]&0x80 != 0
	return nil
}

// Encode writes r into b[:MCMemberRecordLen] with reserved bits zero. It
// fails if b is short or a field does not fit its width.
func (r *MCMemberRecord) Encode(b []byte) error {
	if len(b) < MCMemberRecordLen {
		return fmt.Errorf("encode MCMemberRecord: %d-byte buffer, need %d: %w", len(b), MCMemberRecordLen, ErrTruncated)
	}
	switch {
	case r.FlowLabel > flowLabelMax:
		return fmt.Errorf("encode MCMemberRecord: FlowLabel %#x exceeds 20 bits: %w", r.FlowLabel, ErrFieldRange)
	case r.SL > nibbleMax:
		return fmt.Errorf("encode MCMemberRecord: SL %d exceeds 4 bits: %w", r.SL, ErrFieldRange)
	case r.Scope > nibbleMax:
		return fmt.Errorf("encode MCMemberRecord: Scope %d exceeds 4 bits: %w", r.Scope, ErrFieldRange)
	case r.JoinState > nibbleMax:
		return fmt.Errorf("encode MCMemberRecord: JoinState %#x exceeds 4 bits: %w", uint8(r.JoinState), ErrFieldRange)
	}
	mtu, err := packSelector("MTU", r.MTUSelector, uint8(r.MTU))
	if err != nil {
		return fmt.Errorf("encode MCMemberRecord: %w", err)
	}
	rate, err := packSelector("Rate", r.RateSelector, uint8(r.Rate))
	if err != nil {
		return fmt.Errorf("encode MCMemberRecord: %w", err)
	}
	plt, err := packSelector("PacketLifeTime", r.PacketLifeTimeSelector, r.PacketLifeTime)
	if err != nil {
		return fmt.Errorf("encode MCMemberRecord: %w", err)
	}
	b = b[:MCMemberRecordLen]
	copy(b[0:16], r.MGID[:])
	copy(b[16:32], r.PortGID[:])
	binary.BigEndian.PutUint32(b[32:], uint32(r.QKey))
	binary.BigEndian.PutUint16(b[36:], uint16(r.MLID))
	b[38] = mtu
	b[39] = r.TClass
	binary.BigEndian.PutUint16(b[40:], uint16(r.PKey))
	b[42], b[43] = rate, plt
	binary.BigEndian.PutUint32(b[44:], uint32(r.SL)<<28|r.FlowLabel<<8|uint32(r.HopLimit))
	b[48] = r.Scope<<4 | uint8(r.JoinState)
	b[49] = 0
	if r.ProxyJoin {
		b[49] = 0x80
	}
	b[50], b[51] = 0, 0
	return nil
}

// packSelector packs a 2-bit selector and a 6-bit value into one byte, the
// layout of every selector/value pair in the SA records.
func packSelector(name string, sel Selector, v uint8) (uint8, error) {
	if sel > selectorMax || v > sixBitMax {
		return 0, fmt.Errorf("%sSelector %d (max 3) / %s %d (max 63): %w", name, sel, name, v, ErrFieldRange)
	}
	return uint8(sel)<<6 | v, nil
}

// PacketLifeTimeDuration converts a 6-bit PacketLifeTime exponent to a
// duration: 4.096 µs * 2^v (IBA 9.9.3.1, LocalAckTimeout uses the same
// encoding). Exponents whose duration overflows return math.MaxInt64.
func PacketLifeTimeDuration(v uint8) time.Duration {
	const base = 4096 * time.Nanosecond
	if v > 40 {
		return time.Duration(math.MaxInt64)
	}
	return base << v
}
