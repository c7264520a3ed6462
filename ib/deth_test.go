package ib

import (
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
)

// TestDETHGolden decodes and encodes DETHs laid out by hand from IBA
// 9.3.3: Q_Key, reserved byte, SrcQP.
func TestDETHGolden(t *testing.T) {
	tests := []golden[DETH]{
		{"IPoIB (capture frame 6)", "00000b1b 00 000404", DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x404}},
		{"GSI", "80010000 00 000001", DETH{QKey: QKeyGSI, SrcQP: QPNGSI}},
		{"widest", "ffffffff 00 ffffff", DETH{QKey: 0xFFFFFFFF, SrcQP: 0xFFFFFF}},
	}
	checkGolden(t, DETHLen, tests)
}

func TestDETHErrors(t *testing.T) {
	checkCodecErrors(t, DETHLen, DETH{SrcQP: 1 << 24})
}

// FuzzDecodeDETH: any 8 bytes re-encode to themselves with the reserved
// byte cleared.
func FuzzDecodeDETH(f *testing.F) {
	f.Add(hextest.Bytes(f, "00000b1b 00 000404"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReencode[DETH](t, b, DETHLen, nil, func(want []byte) { want[4] = 0 })
	})
}
