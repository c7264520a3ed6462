package ib

import (
	"testing"
)

// TestGRHGolden decodes and encodes GRHs laid out by hand from IBA 8.3:
// IPVer|TClass|FlowLabel in the first word, PayLen, NxtHdr, HopLmt, SGID,
// DGID.
func TestGRHGolden(t *testing.T) {
	sgid3, _ := ParseGID("fe80::2:c903:0:1f2d")
	bcast, _ := ParseGID("ff12:401b:ffff::ffff:ffff")
	a, _ := ParseGID("2001:db8::1")
	z, _ := ParseGID("::")
	tests := []golden[GRH]{
		{"IPoIB broadcast (capture frame 3)", `
			6000 0000 007c 1b 00
			fe80 0000 0000 0000 0002 c903 0000 1f2d
			ff12 401b ffff 0000 0000 0000 ffff ffff`,
			GRH{IPVer: 6, PayLen: 124, NxtHdr: NxtHdrIBA, SGID: sgid3, DGID: bcast}},
		{"TClass and FlowLabel straddle the nibbles", `
			6a5f edcb 0fff 1b ff
			2001 0db8 0000 0000 0000 0000 0000 0001
			0000 0000 0000 0000 0000 0000 0000 0000`,
			GRH{IPVer: 6, TClass: 0xA5, FlowLabel: 0xFEDCB, PayLen: 0xFFF, NxtHdr: NxtHdrIBA, HopLmt: 0xFF, SGID: a, DGID: z}},
	}
	checkGolden(t, GRHLen, tests)
}

func TestGRHErrors(t *testing.T) {
	checkCodecErrors(t, GRHLen, GRH{IPVer: 16}, GRH{FlowLabel: 0x100000})
}

// FuzzDecodeGRH: the GRH has no reserved bits, so any 40 bytes must
// re-encode to themselves.
func FuzzDecodeGRH(f *testing.F) {
	f.Add(make([]byte, GRHLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReencode[GRH](t, b, GRHLen, nil, nil)
	})
}
