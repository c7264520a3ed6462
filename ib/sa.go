package ib

import (
	"encoding/binary"
	"fmt"
)

// Subnet administration MADs (IBA Vol 1 chapter 15). An SA MAD is a MAD of
// class MgmtClassSubnAdm whose data starts with an RMPP header, then the SA
// header, then 200 bytes of records.

// SA MAD layout (IBA 15.2.1.1).
const (
	// SAClassVersion is the SA class version of IBA 1.1 and later.
	SAClassVersion = 2
	// SAHeaderLen is SM_Key, AttributeOffset, a reserved word and
	// ComponentMask.
	SAHeaderLen = 20
	// SADataOffset is where the SA data (the records) starts in the MAD.
	SADataOffset = MADHeaderLen + RMPPHeaderLen + SAHeaderLen
	// SADataLen is the room for records in one SA MAD.
	SADataLen = MADLen - SADataOffset
)

// ComponentMask selects which fields of a query record the SA must match
// (IBA 15.2.1.1, ComponentMask). Bit n stands for the n-th field of the
// record's table; see the PathRecComp and MCMemberComp constants.
type ComponentMask uint64

// Has reports whether every bit of c is set in m.
func (m ComponentMask) Has(c ComponentMask) bool { return m&c == c }

// String formats the mask as hex, as tshark shows it.
func (m ComponentMask) String() string { return fmt.Sprintf("%#016x", uint64(m)) }

// SAHeader is the part of an SA MAD between the RMPP header and the data
// (IBA 15.2.1.1).
type SAHeader struct {
	// SMKey authenticates privileged requests; zero for ordinary clients.
	SMKey uint64
	// AttributeOffset is the size of one record in 8-byte words, set in
	// responses so a GetTable reply can be split into records. Zero in
	// requests.
	AttributeOffset uint16
	ComponentMask   ComponentMask
}

// SAMAD is a whole SA MAD. Data holds the record (for Get, Set, Delete and
// their responses) or a run of records AttributeOffset*8 bytes apart (for a
// one-segment GetTableResp).
type SAMAD struct {
	MADHeader
	RMPP RMPPHeader
	SAHeader
	Data [SADataLen]byte
}

// Decode fills m from b. It checks that b is exactly MADLen bytes, the
// base version, the class (ErrMADClass), the class version, the RMPP
// version of an active RMPP header, and that one record (AttributeOffset*8
// bytes) fits in the 200-byte data. It allocates nothing.
func (m *SAMAD) Decode(b []byte) error {
	if len(b) != MADLen {
		return fmt.Errorf("decode SA MAD: %d bytes: %w", len(b), ErrMADLength)
	}
	if b[0] != MADBaseVersion {
		return fmt.Errorf("decode SA MAD: base version %d: %w", b[0], ErrMADBaseVersion)
	}
	if MgmtClass(b[1]) != MgmtClassSubnAdm {
		return fmt.Errorf("decode SA MAD: management class %v: %w", MgmtClass(b[1]), ErrMADClass)
	}
	if b[2] != SAClassVersion {
		return fmt.Errorf("decode SA MAD: class version %d, want %d: %w", b[2], SAClassVersion, ErrMADClassVersion)
	}
	decodeMADHeader(b, &m.MADHeader)
	decodeRMPPHeader(b[MADHeaderLen:], &m.RMPP)
	if m.RMPP.Flags&RMPPActive != 0 && m.RMPP.Version != RMPPVersion {
		return fmt.Errorf("decode SA MAD: RMPP version %d: %w", m.RMPP.Version, ErrRMPPVersion)
	}
	s := b[MADHeaderLen+RMPPHeaderLen:]
	m.SMKey = binary.BigEndian.Uint64(s[0:])
	m.AttributeOffset = binary.BigEndian.Uint16(s[8:])
	m.ComponentMask = ComponentMask(binary.BigEndian.Uint64(s[12:]))
	if n := m.RecordLen(); n > SADataLen {
		return fmt.Errorf("decode SA MAD: AttributeOffset %d means %d-byte records, room for %d: %w",
			m.AttributeOffset, n, SADataLen, ErrFieldRange)
	}
	copy(m.Data[:], b[SADataOffset:])
	return nil
}

// Encode writes m into b[:MADLen]; b must hold at least MADLen bytes. The
// reserved fields are written as zero.
func (m *SAMAD) Encode(b []byte) error {
	if len(b) < MADLen {
		return fmt.Errorf("encode SA MAD: %d-byte buffer: %w", len(b), ErrTruncated)
	}
	if err := m.RMPP.encode(b[MADHeaderLen:]); err != nil {
		return fmt.Errorf("encode SA MAD: %w", err)
	}
	m.encode(b)
	s := b[MADHeaderLen+RMPPHeaderLen:]
	binary.BigEndian.PutUint64(s[0:], m.SMKey)
	binary.BigEndian.PutUint16(s[8:], m.AttributeOffset)
	s[10], s[11] = 0, 0
	binary.BigEndian.PutUint64(s[12:], uint64(m.ComponentMask))
	copy(b[SADataOffset:MADLen], m.Data[:])
	return nil
}

// RecordLen returns the record size AttributeOffset announces, in bytes.
func (m *SAMAD) RecordLen() int { return int(m.AttributeOffset) * 8 }

// InitRequest resets m to an SA request: base and class version set,
// everything else zero except the given fields. The caller then encodes
// the query record into m.Data.
func (m *SAMAD) InitRequest(method Method, attr AttributeID, tid uint64, mask ComponentMask) {
	*m = SAMAD{}
	m.BaseVersion = MADBaseVersion
	m.MgmtClass = MgmtClassSubnAdm
	m.ClassVersion = SAClassVersion
	m.Method = method
	m.TransactionID = tid
	m.AttributeID = attr
	m.ComponentMask = mask
}

// InitResponse resets m to the response to req: the same class, TID,
// attribute, modifier and component mask, the response method, the given
// status, and AttributeOffset for records of recordLen bytes. Data is
// zeroed for the caller to fill.
func (m *SAMAD) InitResponse(req *SAMAD, status SAStatus, recordLen int) {
	*m = SAMAD{}
	m.BaseVersion = MADBaseVersion
	m.MgmtClass = MgmtClassSubnAdm
	m.ClassVersion = SAClassVersion
	m.Method = req.Method.Response()
	m.Status = status.MADStatus()
	m.TransactionID = req.TransactionID
	m.AttributeID = req.AttributeID
	m.AttributeModifier = req.AttributeModifier
	m.ComponentMask = req.ComponentMask
	m.AttributeOffset = SAAttributeOffset(recordLen)
}

// SAAttributeOffset returns the AttributeOffset for records of n bytes:
// the size rounded up to whole 8-byte words (IBA 15.2.1.1).
func SAAttributeOffset(n int) uint16 { return uint16((n + 7) / 8) }

// Selector qualifies an MTU, rate or packet lifetime in a query record
// (IBA 15.2.5.16, MTUSelector).
type Selector uint8

// Selector values.
const (
	SelectorGreaterThan Selector = 0 // greater than the given value
	SelectorLessThan    Selector = 1 // less than the given value
	SelectorExactly     Selector = 2 // exactly the given value
	SelectorLargest     Selector = 3 // the largest available; value ignored
)

// String returns a short symbol for the selector.
func (s Selector) String() string {
	switch s {
	case SelectorGreaterThan:
		return ">"
	case SelectorLessThan:
		return "<"
	case SelectorExactly:
		return "="
	case SelectorLargest:
		return "largest"
	}
	return fmt.Sprintf("selector(%d)", uint8(s))
}
