package ib

import (
	"errors"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
)

// TestBTHGolden decodes and encodes BTHs laid out by hand from IBA 9.2:
// OpCode, SE|M|PadCnt|TVer, P_Key, reserved, DestQP, AckReq|reserved, PSN.
func TestBTHGolden(t *testing.T) {
	tests := []golden[BTH]{
		{"SMP to QP0 (capture frame 1)", "64 00 ffff 00 000000 00 0001e9",
			BTH{OpCode: OpUDSendOnly, PKey: PKeyDefault, PSN: 489}},
		{"IPoIB multicast, MigReq set (capture frame 3)", "64 40 ffff 00 ffffff 00 0de6f8",
			BTH{OpCode: OpUDSendOnly, M: true, PKey: PKeyDefault, DestQP: QPNMulticast, PSN: 0x0de6f8}},
		{"immediate, SE, pad 2, limited P_Key", "65 a0 7fff 00 123456 00 fffffe",
			BTH{OpCode: OpUDSendOnlyImm, SE: true, PadCnt: 2, PKey: 0x7FFF, DestQP: 0x123456, PSN: 0xFFFFFE}},
		{"every flag and the widest fields", "65 ff ffff 00 ffffff 80 ffffff",
			BTH{OpCode: OpUDSendOnlyImm, SE: true, M: true, PadCnt: 3, TVer: 15, PKey: 0xFFFF,
				DestQP: 0xFFFFFF, AckReq: true, PSN: 0xFFFFFF}},
	}
	checkGolden(t, BTHLen, tests)
}

// TestBTHOpcodes checks the strict decoder names what it refuses and that
// DecodeAnyOpcode still reads it.
func TestBTHOpcodes(t *testing.T) {
	tests := []struct {
		op   Opcode
		name string
	}{
		{0x04, "RC SEND Only"},
		{0x11, "RC Acknowledge"},
		{0x0A, "RC RDMA WRITE Only"},
		{0x24, "UC SEND Only"},
		{0x40, "RD SEND First"},
		{0x66, "opcode 0x66"}, // UD has no RDMA WRITE
		{0x55, "RD Resync"},
		{0x15, "opcode 0x15"}, // Resync is RD only
		{0x80, "CNP"},
		{0xA4, "XRC SEND Only"},
		{0xC0, "opcode 0xc0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.op.String(); got != tc.name {
				t.Errorf("String() = %q, want %q", got, tc.name)
			}
			b := []byte{byte(tc.op), 0, 0xFF, 0xFF, 0, 0, 0, 1, 0, 0, 0, 2}
			var h BTH
			err := h.Decode(b)
			if !errors.Is(err, ErrUnsupportedOpcode) || !strings.Contains(err.Error(), tc.name) {
				t.Errorf("Decode: %v, want ErrUnsupportedOpcode naming %q", err, tc.name)
			}
			if err := h.DecodeAnyOpcode(b); err != nil || h.OpCode != tc.op || h.DestQP != 1 || h.PSN != 2 {
				t.Errorf("DecodeAnyOpcode: %+v, %v", h, err)
			}
		})
	}
	if got := OpUDSendOnly.String(); got != "UD SEND Only" {
		t.Errorf("OpUDSendOnly = %q", got)
	}
	if got := OpUDSendOnlyImm.String(); got != "UD SEND Only with Immediate" {
		t.Errorf("OpUDSendOnlyImm = %q", got)
	}
}

func TestBTHErrors(t *testing.T) {
	checkCodecErrors(t, BTHLen, BTH{PadCnt: 4}, BTH{TVer: 16}, BTH{DestQP: 1 << 24}, BTH{PSN: 1 << 24})
}

// FuzzDecodeBTH: the strict decoder accepts exactly the UD SEND opcodes;
// any header re-encodes to its bytes with the reserved bits cleared.
func FuzzDecodeBTH(f *testing.F) {
	f.Add(hextest.Bytes(f, "64 40 ffff 00 ffffff 00 0de6f8"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Decode takes the UD opcodes only; any other must be refused
		// as unsupported, and DecodeAnyOpcode takes them all.
		decode := func(h *BTH, b []byte) error {
			err := h.Decode(b)
			if len(b) < BTHLen {
				return err
			}
			ud := b[0] == byte(OpUDSendOnly) || b[0] == byte(OpUDSendOnlyImm)
			if ud != (err == nil) || (!ud && !errors.Is(err, ErrUnsupportedOpcode)) {
				t.Fatalf("opcode %#02x: %v", b[0], err)
			}
			return h.DecodeAnyOpcode(b)
		}
		checkReencode(t, b, BTHLen, decode, func(want []byte) {
			want[4] = 0     // reserved, variant
			want[8] &= 0x80 // AckReq, then 7 reserved bits
		})
	})
}
