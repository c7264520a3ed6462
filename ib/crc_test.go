package ib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// TestCRCsOnCapture recomputes both CRCs of all 43 frames of the real
// capture, local and global, UD and RC, and compares them with what the
// HCAs put on the wire.
func TestCRCsOnCapture(t *testing.T) {
	for i, frame := range pktReadCapture(t) {
		end := len(frame) - VCRCLen
		if want := int(binary.BigEndian.Uint16(frame[4:6])&0x7FF)*4 + 2; want != len(frame) {
			t.Errorf("frame %d: %d bytes, PktLen*4+2 = %d", i+1, len(frame), want)
		}
		icrc, err := ICRC(frame[:end-ICRCLen])
		if err != nil {
			t.Errorf("frame %d: ICRC: %v", i+1, err)
		} else if wire := binary.LittleEndian.Uint32(frame[end-ICRCLen:]); icrc != wire {
			t.Errorf("frame %d: ICRC %#08x, wire %#08x", i+1, icrc, wire)
		}
		if vcrc, wire := VCRC(frame[:end]), binary.LittleEndian.Uint16(frame[end:]); vcrc != wire {
			t.Errorf("frame %d: VCRC %#04x, wire %#04x", i+1, vcrc, wire)
		}
	}
}

// TestVCRCBitwise checks the table-driven VCRC against the CRC-16 written
// out one bit at a time from its definition (IBA 7.8.2: polynomial 0x100B,
// seed 0xFFFF, result inverted, bits taken least significant first), over
// lengths that exercise every tail of the word-at-a-time loop.
func TestVCRCBitwise(t *testing.T) {
	bitwise := func(b []byte) uint16 {
		c := uint16(0xFFFF)
		for _, x := range b {
			for i := range 8 {
				in := uint16(x>>i) & 1
				top := c & 1
				c >>= 1
				if top^in != 0 {
					c ^= 0xD008 // 0x100B with its 16 bits reversed
				}
			}
		}
		return ^c
	}
	data := make([]byte, 300)
	for i := range data {
		data[i] = byte(i*131 + 7)
	}
	for n := 0; n <= len(data); n++ {
		if got, want := VCRC(data[:n]), bitwise(data[:n]); got != want {
			t.Fatalf("VCRC of %d bytes %#04x, bitwise %#04x", n, got, want)
		}
	}
}

// TestICRCErrors checks ICRC refuses what has no ICRC or too few bytes.
func TestICRCErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"half an LRH", make([]byte, 4), ErrTruncated},
		{"raw packet", make([]byte, 40), ErrNotIBATransport},
		{"IP non-IBA", append([]byte{0, 1}, make([]byte, 40)...), ErrNotIBATransport},
		{"local without full BTH", append([]byte{0, 2}, make([]byte, 17)...), ErrTruncated},
		{"global without full BTH", append([]byte{0, 3}, make([]byte, 57)...), ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ICRC(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkICRC(b *testing.B) {
	for _, grh := range []bool{false, true} {
		b.Run(map[bool]string{false: "local", true: "global"}[grh], func(b *testing.B) {
			frame, err := pktBenchPacket(grh).AppendTo(nil)
			if err != nil {
				b.Fatal(err)
			}
			covered := frame[:len(frame)-ICRCLen-VCRCLen]
			b.SetBytes(int64(len(covered)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ICRC(covered); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVCRC(b *testing.B) {
	frame, err := pktBenchPacket(false).AppendTo(nil)
	if err != nil {
		b.Fatal(err)
	}
	covered := bytes.Clone(frame[:len(frame)-VCRCLen])
	b.SetBytes(int64(len(covered)))
	b.ReportAllocs()
	for b.Loop() {
		VCRC(covered)
	}
}
