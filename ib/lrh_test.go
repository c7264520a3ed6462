package ib

import (
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
)

// TestLRHGolden decodes and encodes LRHs whose bytes were worked out by
// hand from IBA 7.7 (VL|LVer, SL|rsv|LNH, DLID, rsv|PktLen, SLID).
func TestLRHGolden(t *testing.T) {
	tests := []golden[LRH]{
		{"SMP on VL15, permissive LIDs (capture frame 1)", "f002 ffff 0048 ffff",
			LRH{VL: 15, LNH: LNHIBALocal, DLID: 0xFFFF, PktLen: 72, SLID: 0xFFFF}},
		{"multicast with GRH (capture frame 3)", "0003 c000 002b 0005",
			LRH{LNH: LNHIBAGlobal, DLID: 0xC000, PktLen: 43, SLID: 5}},
		{"every field at its widest", "ff f3 1234 07ff abcd",
			LRH{VL: 15, LVer: 15, SL: 15, LNH: LNHIBAGlobal, DLID: 0x1234, PktLen: 0x7FF, SLID: 0xABCD}},
		{"raw packet, SL 9", "5090 0001 0100 0002",
			LRH{VL: 5, SL: 9, LNH: LNHRaw, DLID: 1, PktLen: 0x100, SLID: 2}},
	}
	checkGolden(t, LRHLen, tests)
}

// TestLRHReservedIgnored checks reserved bits are read past and written as
// zero.
func TestLRHReservedIgnored(t *testing.T) {
	var h LRH
	if err := h.Decode(hextest.Bytes(t, "f00e ffff f848 ffff")); err != nil {
		t.Fatal(err)
	}
	want := LRH{VL: 15, LNH: LNHIBALocal, DLID: 0xFFFF, PktLen: 72, SLID: 0xFFFF}
	if h != want {
		t.Errorf("decoded %+v, want %+v", h, want)
	}
}

func TestLRHErrors(t *testing.T) {
	checkCodecErrors(t, LRHLen, LRH{VL: 16}, LRH{LVer: 16}, LRH{SL: 16}, LRH{LNH: 4}, LRH{PktLen: 0x800})
	if got := LNH(2).String(); got != "IBA local" {
		t.Errorf("LNH(2) = %q", got)
	}
}

// FuzzDecodeLRH: any 8 bytes decode; encoding the result gives the input
// with its reserved bits cleared, and decodes to the same header.
func FuzzDecodeLRH(f *testing.F) {
	f.Add(hextest.Bytes(f, "f002 ffff 0048 ffff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReencode[LRH](t, b, LRHLen, nil, func(want []byte) {
			want[1] &^= 0x0C // reserved 2 bits
			want[4] &^= 0xF8 // reserved 5 bits
		})
	})
}

func BenchmarkLRHDecode(b *testing.B) {
	in := hextest.Bytes(b, "f002 ffff 0048 ffff")
	var h LRH
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}
