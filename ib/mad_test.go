package ib

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
)

// madHex turns lines of spaced hex (one per field, commented at the call
// site) into bytes, padding with zeros to n bytes when n > 0.
func madHex(t testing.TB, n int, lines ...string) []byte {
	t.Helper()
	b := hextest.Bytes(t, lines...)
	if n > 0 {
		if len(b) > n {
			t.Fatalf("golden is %d bytes, more than %d", len(b), n)
		}
		b = append(b, make([]byte, n-len(b))...)
	}
	return b
}

// goldenMADErrorResp is a SubnAdm GetResp(PathRecord) carrying
// ERR_NO_RECORDS, laid out from IBA 13.4.2 and 15.2.1.1.
func goldenMADErrorResp(t testing.TB) []byte {
	return madHex(t, MADLen,
		"01",                      // BaseVersion 1
		"03",                      // MgmtClass SubnAdm
		"02",                      // ClassVersion 2
		"81",                      // R=1, Method Get: GetResp
		"03 00",                   // Status: class code 3 in bits 8-14
		"00 00",                   // ClassSpecific
		"01 02 03 04 05 06 07 08", // TransactionID
		"00 35",                   // AttributeID PathRecord
		"00 00",                   // reserved
		"00 00 00 00",             // AttributeModifier
	)
}

func TestMADGolden(t *testing.T) {
	b := goldenMADErrorResp(t)
	var m MAD
	if err := m.Decode(b); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := MADHeader{
		BaseVersion: 1, MgmtClass: MgmtClassSubnAdm, ClassVersion: 2,
		Method: MethodGetResp, Status: SAErrNoRecords.MADStatus(),
		TransactionID: 0x0102030405060708, AttributeID: SAAttrPathRecord,
	}
	if m.MADHeader != want {
		t.Errorf("header = %+v, want %+v", m.MADHeader, want)
	}
	out := make([]byte, MADLen)
	if err := m.Encode(out); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !bytes.Equal(out, b) {
		t.Errorf("Encode = %x, want %x", out, b)
	}
	err := m.StatusErr()
	if !errors.Is(err, SAErrNoRecords) {
		t.Errorf("StatusErr() = %v, want it to match SAErrNoRecords", err)
	}
	const wantMsg = "SubnAdm GetResp(PathRecord): MAD status 0x0300 (class code 3): SA status ERR_NO_RECORDS (3)"
	if err == nil || err.Error() != wantMsg {
		t.Errorf("StatusErr() = %q, want %q", err, wantMsg)
	}
}

func TestMADDecodeErrors(t *testing.T) {
	good := goldenMADErrorResp(t)
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		mad     error // from MAD.Decode; nil means success
		saMAD   error // from SAMAD.Decode
		wantMsg string
	}{
		{"empty", nil, ErrMADLength, ErrMADLength, "decode MAD: 0 bytes"},
		{"short", good[:255], ErrMADLength, ErrMADLength, "255 bytes"},
		{"trailing", append(bytes.Clone(good), 0), ErrMADLength, ErrMADLength, "257 bytes"},
		{"base version 2", mod(func(b []byte) { b[0] = 2 }), ErrMADBaseVersion, ErrMADBaseVersion, "base version 2"},
		{"base version OPA", mod(func(b []byte) { b[0] = 0x80 }), ErrMADBaseVersion, ErrMADBaseVersion, "base version 128"},
		{"class PerfMgmt", mod(func(b []byte) { b[1] = 4 }), nil, ErrMADClass, ""},
		{"SA class version 1", mod(func(b []byte) { b[2] = 1 }), nil, ErrMADClassVersion, ""},
		{"RMPP active version 0", mod(func(b []byte) { b[26] = 0x01 }), nil, ErrRMPPVersion, ""},
		{"RMPP inactive version 0", mod(func(b []byte) { b[26] = 0x00 }), nil, nil, ""},
		{"AttributeOffset 25 fits", mod(func(b []byte) { b[45] = 25 }), nil, nil, ""},
		{"AttributeOffset 26 too big", mod(func(b []byte) { b[45] = 26 }), nil, ErrFieldRange, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m MAD
			err := m.Decode(tt.in)
			if !errors.Is(err, tt.mad) || (err == nil) != (tt.mad == nil) {
				t.Errorf("MAD.Decode = %v, want %v", err, tt.mad)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("MAD.Decode error %q does not say %q", err, tt.wantMsg)
			}
			var s SAMAD
			err = s.Decode(tt.in)
			if !errors.Is(err, tt.saMAD) || (err == nil) != (tt.saMAD == nil) {
				t.Errorf("SAMAD.Decode = %v, want %v", err, tt.saMAD)
			}
		})
	}
}

func TestMADEncodeErrors(t *testing.T) {
	var m MAD
	if err := m.Encode(make([]byte, MADLen-1)); !errors.Is(err, ErrTruncated) {
		t.Errorf("MAD.Encode into 255 bytes = %v, want ErrTruncated", err)
	}
	var s SAMAD
	if err := s.Encode(make([]byte, MADLen-1)); !errors.Is(err, ErrTruncated) {
		t.Errorf("SAMAD.Encode into 255 bytes = %v, want ErrTruncated", err)
	}
	s.RMPP.RespTime = 32
	if err := s.Encode(make([]byte, MADLen)); !errors.Is(err, ErrFieldRange) {
		t.Errorf("SAMAD.Encode with RRespTime 32 = %v, want ErrFieldRange", err)
	}
	s.RMPP.RespTime, s.RMPP.Flags = 0, 8
	if err := s.Encode(make([]byte, MADLen)); !errors.Is(err, ErrFieldRange) {
		t.Errorf("SAMAD.Encode with RMPP flags 8 = %v, want ErrFieldRange", err)
	}
}

func TestMADStatus(t *testing.T) {
	tests := []struct {
		s        MADStatus
		busy     bool
		redirect bool
		field    InvalidFieldCode
		sa       SAStatus
		str      string
	}{
		{0x0000, false, false, InvalidFieldNone, SAStatusOK, "0x0000"},
		{MADStatusBusy, true, false, InvalidFieldNone, SAStatusOK, "0x0001 (busy)"},
		{MADStatusRedirect, false, true, InvalidFieldNone, SAStatusOK, "0x0002 (redirect required)"},
		{MADStatusBadVersion, false, false, InvalidFieldBadVersion, SAStatusOK, "0x0004 (bad version)"},
		{MADStatusMethodUnsupported, false, false, InvalidFieldMethod, SAStatusOK, "0x0008 (method not supported)"},
		{MADStatusMethodAttrUnsupported, false, false, InvalidFieldMethodAttr, SAStatusOK,
			"0x000c (method/attribute combination not supported)"},
		{MADStatusInvalidValue, false, false, InvalidFieldValue, SAStatusOK, "0x001c (invalid attribute or modifier value)"},
		{0x0100, false, false, InvalidFieldNone, SAErrNoResources, "0x0100 (class code 1)"},
		{0x0200 | MADStatusInvalidValue, false, false, InvalidFieldValue, SAErrReqInvalid,
			"0x021c (invalid attribute or modifier value, class code 2)"},
		{0x0700, false, false, InvalidFieldNone, SAErrReqDenied, "0x0700 (class code 7)"},
		// Bit 15 is the D bit of directed-route SMPs, not class status.
		{0x8000, false, false, InvalidFieldNone, SAStatusOK, "0x8000"},
	}
	for _, tt := range tests {
		if got := tt.s.Busy(); got != tt.busy {
			t.Errorf("%#04x.Busy() = %v", uint16(tt.s), got)
		}
		if got := tt.s.Redirect(); got != tt.redirect {
			t.Errorf("%#04x.Redirect() = %v", uint16(tt.s), got)
		}
		if got := tt.s.InvalidField(); got != tt.field {
			t.Errorf("%#04x.InvalidField() = %v, want %v", uint16(tt.s), got, tt.field)
		}
		if got := tt.s.SAStatus(); got != tt.sa {
			t.Errorf("%#04x.SAStatus() = %v, want %v", uint16(tt.s), got, tt.sa)
		}
		if got := tt.s.String(); got != tt.str {
			t.Errorf("%#04x.String() = %q, want %q", uint16(tt.s), got, tt.str)
		}
	}
}

func TestSAStatus(t *testing.T) {
	tests := []struct {
		s    SAStatus
		err  string
		wire MADStatus
	}{
		{SAErrNoResources, "SA status ERR_NO_RESOURCES (1)", 0x0100},
		{SAErrReqInvalid, "SA status ERR_REQ_INVALID (2)", 0x0200},
		{SAErrNoRecords, "SA status ERR_NO_RECORDS (3)", 0x0300},
		{SAErrTooManyRecords, "SA status ERR_TOO_MANY_RECORDS (4)", 0x0400},
		{SAErrReqInvalidGID, "SA status ERR_REQ_INVALID_GID (5)", 0x0500},
		{SAErrReqInsufficientComponents, "SA status ERR_REQ_INSUFFICIENT_COMPONENTS (6)", 0x0600},
		{SAErrReqDenied, "SA status ERR_REQ_DENIED (7)", 0x0700},
		{SAErrReqPrioritySuggested, "SA status ERR_REQ_PRIORITY_SUGGESTED (8)", 0x0800},
		{9, "SA status reserved (9)", 0x0900},
	}
	for _, tt := range tests {
		if got := tt.s.Error(); got != tt.err {
			t.Errorf("SAStatus(%d).Error() = %q, want %q", uint8(tt.s), got, tt.err)
		}
		if got := tt.s.MADStatus(); got != tt.wire {
			t.Errorf("SAStatus(%d).MADStatus() = %#04x, want %#04x", uint8(tt.s), uint16(got), uint16(tt.wire))
		}
		if got := tt.wire.SAStatus(); got != tt.s {
			t.Errorf("MADStatus(%#04x).SAStatus() = %d, want %d", uint16(tt.wire), got, tt.s)
		}
	}
}

func TestMADStatusErrorMatching(t *testing.T) {
	tests := []struct {
		name    string
		h       MADHeader
		matches []error
		not     []error
	}{
		{"ok", MADHeader{MgmtClass: MgmtClassSubnAdm}, nil, nil},
		{"busy", MADHeader{MgmtClass: MgmtClassSubnAdm, Status: MADStatusBusy},
			[]error{ErrMADBusy}, []error{ErrMADRedirect, SAErrNoRecords}},
		{"redirect", MADHeader{MgmtClass: MgmtClassPerfMgmt, Status: MADStatusRedirect},
			[]error{ErrMADRedirect}, []error{ErrMADBusy}},
		{"SA invalid value", MADHeader{MgmtClass: MgmtClassSubnAdm, Status: MADStatusInvalidValue | SAErrReqInvalid.MADStatus()},
			[]error{InvalidFieldValue, SAErrReqInvalid}, []error{SAErrNoRecords, InvalidFieldMethod}},
		// A class code outside the SA is not an SA status.
		{"CM class code", MADHeader{MgmtClass: MgmtClassComMgmt, Status: 0x0300},
			nil, []error{SAErrNoRecords}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.StatusErr()
			if (err == nil) != (tt.h.Status == 0) {
				t.Fatalf("StatusErr() = %v for status %v", err, tt.h.Status)
			}
			for _, e := range tt.matches {
				if !errors.Is(err, e) {
					t.Errorf("%v does not match %v", err, e)
				}
			}
			for _, e := range tt.not {
				if errors.Is(err, e) {
					t.Errorf("%v matches %v", err, e)
				}
			}
			var se *MADStatusError
			if err != nil && (!errors.As(err, &se) || se.Status != tt.h.Status) {
				t.Errorf("errors.As(%v) gave %+v", err, se)
			}
		})
	}
}

func TestMethodAndClassNames(t *testing.T) {
	methods := []struct {
		m    Method
		name string
		resp Method
	}{
		{MethodGet, "Get", MethodGetResp},
		{MethodSet, "Set", MethodGetResp}, // IBA 13.4.5
		{MethodTrap, "Trap", MethodTrapRepress},
		{MethodReport, "Report", MethodReportResp},
		{MethodGetTable, "GetTable", MethodGetTableResp},
		{MethodGetTraceTable, "GetTraceTable", MethodGetTableResp},
		{MethodGetMulti, "GetMulti", MethodGetMultiResp},
		{MethodDelete, "Delete", MethodDeleteResp},
		{MethodGetResp, "GetResp", MethodGetResp},
		{0x7e, "method(0x7e)", 0xfe},
	}
	for _, tt := range methods {
		if got := tt.m.String(); got != tt.name {
			t.Errorf("Method(%#x).String() = %q, want %q", uint8(tt.m), got, tt.name)
		}
		if got := tt.m.Response(); got != tt.resp {
			t.Errorf("Method(%v).Response() = %v, want %v", tt.m, got, tt.resp)
		}
	}
	classes := []struct {
		c    MgmtClass
		name string
	}{
		{MgmtClassSubnLIDRouted, "SubnMgmt"},
		{MgmtClassSubnDirectedRoute, "SubnMgmtDR"},
		{MgmtClassSubnAdm, "SubnAdm"},
		{MgmtClassPerfMgmt, "PerfMgmt"},
		{MgmtClassComMgmt, "CM"},
		{0x0a, "Vendor(0x0a)"},
		{0x31, "Vendor(0x31)"},
		{0x60, "class(0x60)"},
	}
	for _, tt := range classes {
		if got := tt.c.String(); got != tt.name {
			t.Errorf("MgmtClass(%#x).String() = %q, want %q", uint8(tt.c), got, tt.name)
		}
	}
	if got := SAAttributeName(SAAttrMCMemberRecord); got != "MCMemberRecord" {
		t.Errorf("SAAttributeName(0x38) = %q", got)
	}
	if got := SAAttributeName(0x7777); got != "0x7777" {
		t.Errorf("SAAttributeName(0x7777) = %q", got)
	}
}

// FuzzDecodeMAD decodes arbitrary bytes as a generic MAD and as an SA MAD,
// and checks that whatever decodes re-encodes to the same bytes with the
// reserved fields zeroed, and that its records decode without panicking.
func FuzzDecodeMAD(f *testing.F) {
	f.Add(goldenMADErrorResp(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m MAD
		err := m.Decode(b)
		if (err == nil) != (len(b) == MADLen && b[0] == MADBaseVersion) {
			t.Fatalf("MAD.Decode(%d bytes, base version %v) = %v", len(b), b[:min(1, len(b))], err)
		}
		if err != nil {
			return
		}
		want := bytes.Clone(b)
		want[18], want[19] = 0, 0 // reserved (IBA 13.4.2)
		out := make([]byte, MADLen)
		if err := m.Encode(out); err != nil {
			t.Fatalf("MAD.Encode after Decode: %v", err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("MAD re-encode differs:\n got %x\nwant %x", out, want)
		}
		var s SAMAD
		if err := s.Decode(b); err != nil {
			return
		}
		if s.MADHeader != m.MADHeader {
			t.Fatalf("SA header %+v differs from generic %+v", s.MADHeader, m.MADHeader)
		}
		want[46], want[47] = 0, 0 // reserved (IBA 15.2.1.1)
		if err := s.Encode(out); err != nil {
			t.Fatalf("SAMAD.Encode after Decode: %v", err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("SA MAD re-encode differs:\n got %x\nwant %x", out, want)
		}
		var pr PathRecord
		if err := pr.Decode(s.Data[:]); err != nil {
			t.Fatalf("PathRecord from 200-byte SA data: %v", err)
		}
		var mc MCMemberRecord
		if err := mc.Decode(s.Data[:]); err != nil {
			t.Fatalf("MCMemberRecord from 200-byte SA data: %v", err)
		}
		_ = s.StatusErr()
		if err := s.StatusErr(); err != nil {
			_ = err.Error()
		}
	})
}
