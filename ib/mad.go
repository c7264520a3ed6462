package ib

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Management datagrams (IBA Vol 1 chapter 13). Every MAD on QP0 and QP1 is
// exactly 256 bytes: a 24-byte common header followed by class-defined
// data. Decoders here fill a caller's struct and encoders write into a
// caller's buffer, so the SA client and the simulator can exchange MADs
// without allocating.

// MAD sizes (IBA 13.4.1: every MAD is 256 bytes; 13.4.2 common header).
const (
	// MADLen is the size of every MAD on the wire.
	MADLen = 256
	// MADHeaderLen is the size of the common MAD header (IBA 13.4.2).
	MADHeaderLen = 24
	// MADDataLen is what follows the common header.
	MADDataLen = MADLen - MADHeaderLen
	// RMPPHeaderLen is the size of the RMPP header that follows the common
	// header in classes that use RMPP (IBA 13.6.2.1).
	RMPPHeaderLen = 12
)

// MADBaseVersion is the only BaseVersion IBA 1.x defines (IBA 13.4.2,
// BaseVersion). Anything else is answered with a bad-version status.
const MADBaseVersion = 1

// Sentinel errors of MAD decoding; wrapped errors say which field was bad.
// Short buffers wrap ErrTruncated and fields too wide for the wire wrap
// ErrFieldRange, as for the packet headers.
var (
	// ErrMADLength means the buffer is not exactly MADLen bytes.
	ErrMADLength = errors.New("ib: MAD is not 256 bytes")
	// ErrMADBaseVersion means BaseVersion is not MADBaseVersion.
	ErrMADBaseVersion = errors.New("ib: unsupported MAD base version")
	// ErrMADClass means the MAD belongs to a different management class
	// than the decoder handles.
	ErrMADClass = errors.New("ib: unexpected management class")
	// ErrMADClassVersion means the class version is not one we speak.
	ErrMADClassVersion = errors.New("ib: unsupported management class version")
	// ErrRMPPVersion means an active RMPP header has a version other than
	// RMPPVersion.
	ErrRMPPVersion = errors.New("ib: unsupported RMPP version")
	// ErrMADBusy is matched (errors.Is) by a MADStatusError whose busy bit
	// is set: the responder asks for the request to be retried later.
	ErrMADBusy = errors.New("ib: MAD status busy")
	// ErrMADRedirect is matched by a MADStatusError with the redirect bit:
	// the request must go to the agent named in ClassPortInfo.
	ErrMADRedirect = errors.New("ib: MAD status redirect required")
)

// MgmtClass is the MAD management class (IBA 13.4.4).
type MgmtClass uint8

// Management classes.
const (
	MgmtClassSubnLIDRouted     MgmtClass = 0x01 // SMPs routed by LID
	MgmtClassSubnAdm           MgmtClass = 0x03 // subnet administration (SA)
	MgmtClassPerfMgmt          MgmtClass = 0x04 // performance management
	MgmtClassBMgmt             MgmtClass = 0x05 // baseboard management
	MgmtClassDevMgmt           MgmtClass = 0x06 // device management
	MgmtClassComMgmt           MgmtClass = 0x07 // communication management (CM)
	MgmtClassSNMP              MgmtClass = 0x08 // SNMP tunnelling
	MgmtClassVendorRange1Min   MgmtClass = 0x09 // first vendor class without OUI
	MgmtClassVendorRange1Max   MgmtClass = 0x0F // last vendor class without OUI
	MgmtClassDevAdm            MgmtClass = 0x10 // device administration
	MgmtClassBIS               MgmtClass = 0x12 // boot information service
	MgmtClassCongMgmt          MgmtClass = 0x21 // congestion management (IBA A10)
	MgmtClassVendorRange2Min   MgmtClass = 0x30 // first vendor class with OUI
	MgmtClassVendorRange2Max   MgmtClass = 0x4F // last vendor class with OUI
	MgmtClassSubnDirectedRoute MgmtClass = 0x81 // SMPs with directed route
)

// String names the class the way tshark abbreviates it.
func (c MgmtClass) String() string {
	switch c {
	case MgmtClassSubnLIDRouted:
		return "SubnMgmt"
	case MgmtClassSubnAdm:
		return "SubnAdm"
	case MgmtClassPerfMgmt:
		return "PerfMgmt"
	case MgmtClassBMgmt:
		return "BMgmt"
	case MgmtClassDevMgmt:
		return "DevMgmt"
	case MgmtClassComMgmt:
		return "CM"
	case MgmtClassSNMP:
		return "SNMP"
	case MgmtClassDevAdm:
		return "DevAdm"
	case MgmtClassBIS:
		return "BIS"
	case MgmtClassCongMgmt:
		return "CongMgmt"
	case MgmtClassSubnDirectedRoute:
		return "SubnMgmtDR"
	}
	if c >= MgmtClassVendorRange1Min && c <= MgmtClassVendorRange1Max ||
		c >= MgmtClassVendorRange2Min && c <= MgmtClassVendorRange2Max {
		return "Vendor(" + madHex8(uint8(c)) + ")"
	}
	return "class(" + madHex8(uint8(c)) + ")"
}

// Method is the MAD method byte, including the response bit R in bit 7
// (IBA 13.4.2: R is the top bit of the Method field).
type Method uint8

// MethodResponse is the R bit: set in every response to a request method.
const MethodResponse Method = 0x80

// Methods: the common ones (IBA 13.4.5) and the SA-specific ones
// (IBA 15.2.2).
const (
	MethodGet           Method = 0x01                            // read an attribute
	MethodSet           Method = 0x02                            // write an attribute; answered by GetResp
	MethodSend          Method = 0x03                            // datagram that expects no response
	MethodTrap          Method = 0x05                            // unsolicited notice; answered by TrapRepress
	MethodReport        Method = 0x06                            // forwarded event subscribers asked for
	MethodTrapRepress   Method = 0x07                            // stops a trap from being resent
	MethodGetTable      Method = 0x12                            // SA: every record matching the mask
	MethodGetTraceTable Method = 0x13                            // SA: the hops of a path
	MethodGetMulti      Method = 0x14                            // SA: query with several input records
	MethodDelete        Method = 0x15                            // SA: remove a record (leave a group)
	MethodGetResp       Method = MethodGet | MethodResponse      // answer to Get or Set
	MethodReportResp    Method = MethodReport | MethodResponse   // acknowledges a Report
	MethodGetTableResp  Method = MethodGetTable | MethodResponse // answer to GetTable and GetTraceTable
	MethodGetMultiResp  Method = MethodGetMulti | MethodResponse // answer to GetMulti
	MethodDeleteResp    Method = MethodDelete | MethodResponse   // answer to Delete
)

// IsResponse reports whether the R bit is set.
func (m Method) IsResponse() bool { return m&MethodResponse != 0 }

// Response returns the method a responder answers m with: Set is answered
// with GetResp (IBA 13.4.5), GetTraceTable with GetTableResp
// (IBA 15.2.2), Trap with TrapRepress, every other method with R set.
func (m Method) Response() Method {
	switch m {
	case MethodSet:
		return MethodGetResp
	case MethodGetTraceTable:
		return MethodGetTableResp
	case MethodTrap:
		return MethodTrapRepress
	}
	return m | MethodResponse
}

// String returns the method's name as the IBA tables spell it.
func (m Method) String() string {
	switch m {
	case MethodGet:
		return "Get"
	case MethodSet:
		return "Set"
	case MethodSend:
		return "Send"
	case MethodTrap:
		return "Trap"
	case MethodReport:
		return "Report"
	case MethodTrapRepress:
		return "TrapRepress"
	case MethodGetTable:
		return "GetTable"
	case MethodGetTraceTable:
		return "GetTraceTable"
	case MethodGetMulti:
		return "GetMulti"
	case MethodDelete:
		return "Delete"
	case MethodGetResp:
		return "GetResp"
	case MethodReportResp:
		return "ReportResp"
	case MethodGetTableResp:
		return "GetTableResp"
	case MethodGetMultiResp:
		return "GetMultiResp"
	case MethodDeleteResp:
		return "DeleteResp"
	}
	return "method(" + madHex8(uint8(m)) + ")"
}

// AttributeID names the attribute a MAD carries. The same number means
// different things in different classes (0x0011 is NodeInfo to the SM and
// NodeRecord to the SA), so it prints as hex; SAAttributeName names SA ones.
type AttributeID uint16

// Attributes every class shares (IBA 13.4.8).
const (
	AttrClassPortInfo AttributeID = 0x0001
	AttrNotice        AttributeID = 0x0002
	AttrInformInfo    AttributeID = 0x0003
)

// SA attributes (IBA 15.2.5).
const (
	SAAttrNodeRecord                     AttributeID = 0x0011
	SAAttrPortInfoRecord                 AttributeID = 0x0012
	SAAttrSLToVLMappingTableRecord       AttributeID = 0x0013
	SAAttrSwitchInfoRecord               AttributeID = 0x0014
	SAAttrLinearForwardingTableRecord    AttributeID = 0x0015
	SAAttrRandomForwardingTableRecord    AttributeID = 0x0016
	SAAttrMulticastForwardingTableRecord AttributeID = 0x0017
	SAAttrSMInfoRecord                   AttributeID = 0x0018
	SAAttrLinkRecord                     AttributeID = 0x0020
	SAAttrGUIDInfoRecord                 AttributeID = 0x0030
	SAAttrServiceRecord                  AttributeID = 0x0031
	SAAttrPKeyTableRecord                AttributeID = 0x0033
	SAAttrPathRecord                     AttributeID = 0x0035
	SAAttrVLArbitrationTableRecord       AttributeID = 0x0036
	SAAttrMCMemberRecord                 AttributeID = 0x0038
	SAAttrTraceRecord                    AttributeID = 0x0039
	SAAttrMultiPathRecord                AttributeID = 0x003A
	SAAttrServiceAssociationRecord       AttributeID = 0x003B
	SAAttrInformInfoRecord               AttributeID = 0x00F3
)

// String formats the ID as hex; see SAAttributeName for SA names.
func (a AttributeID) String() string { return fmt.Sprintf("%#04x", uint16(a)) }

// SAAttributeName returns the IBA name of an SA attribute, or hex for one
// it does not know.
func SAAttributeName(a AttributeID) string {
	switch a {
	case AttrClassPortInfo:
		return "ClassPortInfo"
	case AttrNotice:
		return "Notice"
	case AttrInformInfo:
		return "InformInfo"
	case SAAttrNodeRecord:
		return "NodeRecord"
	case SAAttrPortInfoRecord:
		return "PortInfoRecord"
	case SAAttrSLToVLMappingTableRecord:
		return "SLtoVLMappingTableRecord"
	case SAAttrSwitchInfoRecord:
		return "SwitchInfoRecord"
	case SAAttrLinearForwardingTableRecord:
		return "LinearForwardingTableRecord"
	case SAAttrRandomForwardingTableRecord:
		return "RandomForwardingTableRecord"
	case SAAttrMulticastForwardingTableRecord:
		return "MulticastForwardingTableRecord"
	case SAAttrSMInfoRecord:
		return "SMInfoRecord"
	case SAAttrLinkRecord:
		return "LinkRecord"
	case SAAttrGUIDInfoRecord:
		return "GUIDInfoRecord"
	case SAAttrServiceRecord:
		return "ServiceRecord"
	case SAAttrPKeyTableRecord:
		return "P_KeyTableRecord"
	case SAAttrPathRecord:
		return "PathRecord"
	case SAAttrVLArbitrationTableRecord:
		return "VLArbitrationTableRecord"
	case SAAttrMCMemberRecord:
		return "MCMemberRecord"
	case SAAttrTraceRecord:
		return "TraceRecord"
	case SAAttrMultiPathRecord:
		return "MultiPathRecord"
	case SAAttrServiceAssociationRecord:
		return "ServiceAssociationRecord"
	case SAAttrInformInfoRecord:
		return "InformInfoRecord"
	}
	return a.String()
}

// MADStatus is the 16-bit Status field of the common header (IBA 13.4.7).
// The low byte is common to every class; bits 8-14 hold a
// class-specific code. Bit 15 is left alone: in directed-route SMPs it is
// the D (direction) bit, not status.
type MADStatus uint16

// Common status bits and codes (IBA 13.4.7).
const (
	// MADStatusBusy asks the requester to retry later.
	MADStatusBusy MADStatus = 0x0001
	// MADStatusRedirect says the request must go to the agent named in
	// the returned ClassPortInfo.
	MADStatusRedirect MADStatus = 0x0002
	// MADStatusBadVersion: class or base version not supported.
	MADStatusBadVersion MADStatus = MADStatus(InvalidFieldBadVersion) << madStatusFieldShift
	// MADStatusMethodUnsupported: the method is not supported.
	MADStatusMethodUnsupported MADStatus = MADStatus(InvalidFieldMethod) << madStatusFieldShift
	// MADStatusMethodAttrUnsupported: method/attribute combination not
	// supported.
	MADStatusMethodAttrUnsupported MADStatus = MADStatus(InvalidFieldMethodAttr) << madStatusFieldShift
	// MADStatusInvalidValue: a field of the attribute or the attribute
	// modifier holds an invalid value.
	MADStatusInvalidValue MADStatus = MADStatus(InvalidFieldValue) << madStatusFieldShift
)

// Where the sub-fields of MADStatus sit (IBA 13.4.7).
const (
	madStatusFieldShift = 2
	madStatusFieldMask  = 0x7
	madStatusClassShift = 8
	madStatusClassMask  = 0x7f
)

// Busy reports whether the busy bit is set.
func (s MADStatus) Busy() bool { return s&MADStatusBusy != 0 }

// Redirect reports whether the redirect-required bit is set.
func (s MADStatus) Redirect() bool { return s&MADStatusRedirect != 0 }

// InvalidField returns the 3-bit invalid-field code of bits 2-4.
func (s MADStatus) InvalidField() InvalidFieldCode {
	return InvalidFieldCode(s >> madStatusFieldShift & madStatusFieldMask)
}

// ClassCode returns the class-specific code of bits 8-14.
func (s MADStatus) ClassCode() uint8 { return uint8(s >> madStatusClassShift & madStatusClassMask) }

// SAStatus returns the class-specific code read as an SA status; only
// meaningful for MgmtClassSubnAdm MADs.
func (s MADStatus) SAStatus() SAStatus { return SAStatus(s.ClassCode()) }

// String describes the common part of the status, e.g.
// "0x0008 (method not supported)".
func (s MADStatus) String() string {
	str := fmt.Sprintf("%#04x", uint16(s))
	var parts []string
	if s.Busy() {
		parts = append(parts, "busy")
	}
	if s.Redirect() {
		parts = append(parts, "redirect required")
	}
	if c := s.InvalidField(); c != InvalidFieldNone {
		parts = append(parts, c.String())
	}
	if c := s.ClassCode(); c != 0 {
		parts = append(parts, "class code "+strconv.Itoa(int(c)))
	}
	for i, p := range parts {
		if i == 0 {
			str += " ("
		} else {
			str += ", "
		}
		str += p
	}
	if len(parts) > 0 {
		str += ")"
	}
	return str
}

// InvalidFieldCode is the 3-bit code in bits 2-4 of MADStatus (IBA 13.4.7).
// It implements error so a MADStatusError can be matched with
// errors.Is(err, ib.InvalidFieldMethod).
type InvalidFieldCode uint8

// Invalid-field codes.
const (
	InvalidFieldNone       InvalidFieldCode = 0 // no invalid fields
	InvalidFieldBadVersion InvalidFieldCode = 1 // base or class version unsupported
	InvalidFieldMethod     InvalidFieldCode = 2 // method unsupported
	InvalidFieldMethodAttr InvalidFieldCode = 3 // method/attribute combination unsupported
	InvalidFieldValue      InvalidFieldCode = 7 // invalid attribute or modifier value
)

// String names the code.
func (c InvalidFieldCode) String() string {
	switch c {
	case InvalidFieldNone:
		return "no invalid fields"
	case InvalidFieldBadVersion:
		return "bad version"
	case InvalidFieldMethod:
		return "method not supported"
	case InvalidFieldMethodAttr:
		return "method/attribute combination not supported"
	case InvalidFieldValue:
		return "invalid attribute or modifier value"
	}
	return "reserved invalid-field code " + strconv.Itoa(int(c))
}

// Error makes the code usable as an errors.Is target.
func (c InvalidFieldCode) Error() string { return "MAD status " + c.String() }

// SAStatus is the SA's class-specific status code in bits 8-14 of
// MADStatus (IBA 15.2.1.1). It implements error, so an SA client
// can return it directly or match it with errors.Is.
type SAStatus uint8

// SA status codes, named as IBA 15.2.1.1 names them.
const (
	// SAStatusOK is no class-specific error.
	SAStatusOK SAStatus = 0
	// SAErrNoResources: the SA lacks resources to answer.
	SAErrNoResources SAStatus = 1
	// SAErrReqInvalid: the request is malformed or inconsistent.
	SAErrReqInvalid SAStatus = 2
	// SAErrNoRecords: no record matched (only for Get).
	SAErrNoRecords SAStatus = 3
	// SAErrTooManyRecords: more than one record matched a Get.
	SAErrTooManyRecords SAStatus = 4
	// SAErrReqInvalidGID: a GID in the request is not known or invalid.
	SAErrReqInvalidGID SAStatus = 5
	// SAErrReqInsufficientComponents: the component mask does not select
	// enough fields for the request.
	SAErrReqInsufficientComponents SAStatus = 6
	// SAErrReqDenied: the request was refused (e.g. by policy).
	SAErrReqDenied SAStatus = 7
	// SAErrReqPrioritySuggested: the request was refused, and the answer
	// suggests a QoS priority to use instead (IBA QoS annex).
	SAErrReqPrioritySuggested SAStatus = 8
)

// String returns the spec name, e.g. "ERR_REQ_INVALID".
func (s SAStatus) String() string {
	switch s {
	case SAStatusOK:
		return "OK"
	case SAErrNoResources:
		return "ERR_NO_RESOURCES"
	case SAErrReqInvalid:
		return "ERR_REQ_INVALID"
	case SAErrNoRecords:
		return "ERR_NO_RECORDS"
	case SAErrTooManyRecords:
		return "ERR_TOO_MANY_RECORDS"
	case SAErrReqInvalidGID:
		return "ERR_REQ_INVALID_GID"
	case SAErrReqInsufficientComponents:
		return "ERR_REQ_INSUFFICIENT_COMPONENTS"
	case SAErrReqDenied:
		return "ERR_REQ_DENIED"
	case SAErrReqPrioritySuggested:
		return "ERR_REQ_PRIORITY_SUGGESTED"
	}
	return "reserved"
}

// Error formats the status as "SA status ERR_REQ_INVALID (2)".
func (s SAStatus) Error() string {
	return "SA status " + s.String() + " (" + strconv.Itoa(int(s)) + ")"
}

// MADStatus returns the Status field an SA puts in a response carrying s.
func (s SAStatus) MADStatus() MADStatus {
	return MADStatus(s&madStatusClassMask) << madStatusClassShift
}

// MADStatusError is the error a MAD with a non-zero Status turns into.
// errors.Is matches it against ErrMADBusy, ErrMADRedirect, its
// InvalidFieldCode and, for SA MADs, its SAStatus.
type MADStatusError struct {
	// Class, Method and Attribute say which exchange failed, copied from
	// the response's header.
	Class     MgmtClass
	Method    Method
	Attribute AttributeID
	// Status is the response's Status field, never zero.
	Status MADStatus
}

// Error says which exchange failed and how, e.g.
// "SubnAdm GetResp(PathRecord): MAD status 0x0300: SA status ERR_NO_RECORDS (3)".
func (e *MADStatusError) Error() string {
	attr := e.Attribute.String()
	if e.Class == MgmtClassSubnAdm {
		attr = SAAttributeName(e.Attribute)
	}
	s := fmt.Sprintf("%v %v(%s): MAD status %v", e.Class, e.Method, attr, e.Status)
	if e.Class == MgmtClassSubnAdm && e.Status.ClassCode() != 0 {
		s += ": " + e.Status.SAStatus().Error()
	}
	return s
}

// Unwrap exposes the parts of the status as matchable errors.
func (e *MADStatusError) Unwrap() []error {
	var errs []error
	if e.Status.Busy() {
		errs = append(errs, ErrMADBusy)
	}
	if e.Status.Redirect() {
		errs = append(errs, ErrMADRedirect)
	}
	if c := e.Status.InvalidField(); c != InvalidFieldNone {
		errs = append(errs, c)
	}
	if e.Class == MgmtClassSubnAdm && e.Status.ClassCode() != 0 {
		errs = append(errs, e.Status.SAStatus())
	}
	return errs
}

// MADHeader is the 24-byte common MAD header (IBA 13.4.2).
type MADHeader struct {
	// BaseVersion is MADBaseVersion for every IBA 1.x MAD.
	BaseVersion uint8
	MgmtClass   MgmtClass
	// ClassVersion is per class: 2 for the SA, 1 for SMPs.
	ClassVersion uint8
	// Method includes the response bit R.
	Method Method
	Status MADStatus
	// ClassSpecific is used by directed-route SMPs (hop pointer and count)
	// and is zero elsewhere.
	ClassSpecific uint16
	// TransactionID pairs a response with its request; the requester
	// chooses it and the responder copies it back.
	TransactionID     uint64
	AttributeID       AttributeID
	AttributeModifier uint32
}

// decodeMADHeader fills h from the first MADHeaderLen bytes of b, which
// the caller has checked are there. The reserved bytes 18-19 are ignored.
func decodeMADHeader(b []byte, h *MADHeader) {
	_ = b[MADHeaderLen-1]
	h.BaseVersion = b[0]
	h.MgmtClass = MgmtClass(b[1])
	h.ClassVersion = b[2]
	h.Method = Method(b[3])
	h.Status = MADStatus(binary.BigEndian.Uint16(b[4:]))
	h.ClassSpecific = binary.BigEndian.Uint16(b[6:])
	h.TransactionID = binary.BigEndian.Uint64(b[8:])
	h.AttributeID = AttributeID(binary.BigEndian.Uint16(b[16:]))
	h.AttributeModifier = binary.BigEndian.Uint32(b[20:])
}

// encode writes h into b[:MADHeaderLen] with the reserved bytes zero.
func (h *MADHeader) encode(b []byte) {
	_ = b[MADHeaderLen-1]
	b[0] = h.BaseVersion
	b[1] = uint8(h.MgmtClass)
	b[2] = h.ClassVersion
	b[3] = uint8(h.Method)
	binary.BigEndian.PutUint16(b[4:], uint16(h.Status))
	binary.BigEndian.PutUint16(b[6:], h.ClassSpecific)
	binary.BigEndian.PutUint64(b[8:], h.TransactionID)
	binary.BigEndian.PutUint16(b[16:], uint16(h.AttributeID))
	b[18], b[19] = 0, 0
	binary.BigEndian.PutUint32(b[20:], h.AttributeModifier)
}

// StatusErr returns nil when Status is zero and a *MADStatusError otherwise.
func (h *MADHeader) StatusErr() error {
	if h.Status == 0 {
		return nil
	}
	return &MADStatusError{Class: h.MgmtClass, Method: h.Method, Attribute: h.AttributeID, Status: h.Status}
}

// MAD is a MAD of any class: the common header and the 232 bytes after it,
// uninterpreted. Use SAMAD for the subnet administration class.
type MAD struct {
	MADHeader
	Data [MADDataLen]byte
}

// Decode fills m from b, which must be exactly MADLen bytes with
// BaseVersion 1. It allocates nothing.
func (m *MAD) Decode(b []byte) error {
	if len(b) != MADLen {
		return fmt.Errorf("decode MAD: %d bytes: %w", len(b), ErrMADLength)
	}
	if b[0] != MADBaseVersion {
		return fmt.Errorf("decode MAD: base version %d: %w", b[0], ErrMADBaseVersion)
	}
	decodeMADHeader(b, &m.MADHeader)
	copy(m.Data[:], b[MADHeaderLen:])
	return nil
}

// Encode writes m into b[:MADLen]; b must hold at least MADLen bytes.
func (m *MAD) Encode(b []byte) error {
	if len(b) < MADLen {
		return fmt.Errorf("encode MAD: %d-byte buffer: %w", len(b), ErrTruncated)
	}
	m.encode(b)
	copy(b[MADHeaderLen:MADLen], m.Data[:])
	return nil
}

// RMPPType is the RMPP packet type (IBA 13.6.2.1).
type RMPPType uint8

// RMPP packet types.
const (
	RMPPTypeNone  RMPPType = 0 // not an RMPP packet (RMPPFlags.Active clear)
	RMPPTypeData  RMPPType = 1
	RMPPTypeAck   RMPPType = 2
	RMPPTypeStop  RMPPType = 3
	RMPPTypeAbort RMPPType = 4
)

// RMPPVersion is the RMPP protocol version of IBA 1.x (IBA 13.6.2.1).
const RMPPVersion = 1

// RMPPFlags are the three flag bits of the RMPP header (IBA 13.6.2.1).
type RMPPFlags uint8

// RMPP flags.
const (
	// RMPPActive marks the MAD as part of an RMPP transfer; when clear the
	// rest of the RMPP header is ignored.
	RMPPActive RMPPFlags = 0x1
	// RMPPFirst marks the first DATA segment.
	RMPPFirst RMPPFlags = 0x2
	// RMPPLast marks the last DATA segment.
	RMPPLast RMPPFlags = 0x4
)

// RMPPStatus is the RMPP status byte (IBA 13.6.2.1).
type RMPPStatus uint8

// RMPP status codes the receivers of a transfer need to tell apart: 1 is
// sent with STOP, 118-127 with ABORT.
const (
	RMPPStatusNormal             RMPPStatus = 0
	RMPPStatusResourcesExhausted RMPPStatus = 1
	RMPPStatusTotalTimeTooLong   RMPPStatus = 118
	RMPPStatusBadLastLength      RMPPStatus = 119
	RMPPStatusBadFirstSegment    RMPPStatus = 120
	RMPPStatusBadType            RMPPStatus = 121
	RMPPStatusNewWindowTooSmall  RMPPStatus = 122
	RMPPStatusSegmentTooBig      RMPPStatus = 123
	RMPPStatusIllegalStatus      RMPPStatus = 124
	RMPPStatusUnsupportedVersion RMPPStatus = 125
	RMPPStatusTooManyRetries     RMPPStatus = 126
	RMPPStatusUnspecified        RMPPStatus = 127
)

// RMPPHeader is the 12-byte RMPP header at offset 24 of classes that use
// RMPP, the SA among them (IBA 13.6.2.1).
type RMPPHeader struct {
	Version uint8
	Type    RMPPType
	// RespTime is the 5-bit RRespTime: the sender's expected response time
	// as 4.096 µs * 2^RespTime.
	RespTime uint8
	Flags    RMPPFlags
	Status   RMPPStatus
	// Data1 is the SegmentNumber of DATA and ACK packets.
	Data1 uint32
	// Data2 is the PayloadLength of DATA packets and NewWindowLast of ACKs.
	Data2 uint32
}

// Bit layout of RMPP byte 3: RRespTime in the top 5 bits, flags below.
const (
	rmppRespTimeShift = 3
	rmppRespTimeMax   = 0x1f
	rmppFlagsMask     = 0x7
)

func decodeRMPPHeader(b []byte, r *RMPPHeader) {
	_ = b[RMPPHeaderLen-1]
	r.Version = b[0]
	r.Type = RMPPType(b[1])
	r.RespTime = b[2] >> rmppRespTimeShift
	r.Flags = RMPPFlags(b[2] & rmppFlagsMask)
	r.Status = RMPPStatus(b[3])
	r.Data1 = binary.BigEndian.Uint32(b[4:])
	r.Data2 = binary.BigEndian.Uint32(b[8:])
}

func (r *RMPPHeader) encode(b []byte) error {
	if r.RespTime > rmppRespTimeMax || r.Flags > rmppFlagsMask {
		return fmt.Errorf("encode RMPP header: RRespTime %d (max 31), flags %#x (max 7): %w",
			r.RespTime, uint8(r.Flags), ErrFieldRange)
	}
	_ = b[RMPPHeaderLen-1]
	b[0] = r.Version
	b[1] = uint8(r.Type)
	b[2] = r.RespTime<<rmppRespTimeShift | uint8(r.Flags)
	b[3] = uint8(r.Status)
	binary.BigEndian.PutUint32(b[4:], r.Data1)
	binary.BigEndian.PutUint32(b[8:], r.Data2)
	return nil
}

func madHex8(v uint8) string { return fmt.Sprintf("%#02x", v) }
