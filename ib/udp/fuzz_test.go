package udp

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// seedDatagram encodes a UD SEND with a pseudo header of the given family,
// as the receive path sees it.
func seedDatagram(v6 bool, payload string) []byte {
	buf := make([]byte, 512)
	h := sendHeader{V6: v6, SrcPort: 49152}
	if v6 {
		h.Src = [16]byte{0xfe, 0x80, 15: 1}
		h.Dst = [16]byte{0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}
	} else {
		h.Src = [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 1}
		h.Dst = [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 2}
	}
	out, err := encodeDatagram(buf, &h, &ib.BTH{OpCode: ib.OpUDSendOnly, M: true, PKey: ib.PKeyDefault, DestQP: 0x12},
		&ib.DETH{QKey: 0x0B1B, SrcQP: 0x34}, [][]byte{[]byte(payload)})
	if err != nil {
		panic(err)
	}
	start := maxIPHeader - h.ipHeaderLen()
	return buf[start : maxIPHeader+ib.UDPHeaderLen+len(out)]
}

// TestDatagramRoundTrip: what encodeDatagram writes, decodeDatagram reads
// back, for both families and every pad length.
func TestDatagramRoundTrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, payload := range []string{"", "a", "ab", "abc", "abcd", "IPoIB payload"} {
			b := seedDatagram(v6, payload)
			var d datagram
			if err := decodeDatagram(b, &d); err != nil {
				t.Fatalf("v6=%v %q: %v", v6, payload, err)
			}
			if string(d.Payload) != payload || d.BTH.DestQP != 0x12 || d.DETH.SrcQP != 0x34 || d.DETH.QKey != 0x0B1B || d.SrcPort != 49152 {
				t.Errorf("v6=%v: decoded %+v", v6, d)
			}
			b[len(b)-5] ^= 1 // last pad or payload byte
			if err := decodeDatagram(b, &d); !errors.Is(err, ib.ErrBadICRC) {
				t.Errorf("v6=%v %q: corrupted datagram: %v, want a bad ICRC", v6, payload, err)
			}
		}
	}
}

// TestDecodeDatagramErrors: each malformation gets its error class.
func TestDecodeDatagramErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"truncated", func(b []byte) []byte { return b[:30] }, ErrMalformed},
		{"total length beyond the bytes", func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 2000); return b }, ErrMalformed},
		{"not UDP", func(b []byte) []byte { b[9] = 6; return b }, ErrNotRoCEv2},
		{"fragment", func(b []byte) []byte { b[6] |= 0x20; return b }, ErrNotRoCEv2},
		{"other port", func(b []byte) []byte { b[23] ^= 1; return b }, ErrNotRoCEv2},
		{"UDP length", func(b []byte) []byte { b[25]--; return b }, ErrMalformed},
		{"RC opcode", func(b []byte) []byte { b[28] = 0x04; return b }, ErrNotRoCEv2},
		{"TVer", func(b []byte) []byte { b[29] |= 1; return b }, ErrMalformed},
		{"version 5", func(b []byte) []byte { b[0] = 0x55; return b }, ErrMalformed},
		{"IPv4 options", func(b []byte) []byte { b[0] = 0x46; return b }, ErrNotRoCEv2},
	}
	for _, tt := range tests {
		var d datagram
		if err := decodeDatagram(tt.mod(seedDatagram(false, "payload")), &d); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// FuzzDecodeDatagram feeds the receive path's decoder arbitrary bytes: it
// must not panic, and what it accepts must be self-consistent.
func FuzzDecodeDatagram(f *testing.F) {
	f.Add(seedDatagram(false, "IPoIB ARP"))
	f.Add(seedDatagram(true, "broadcast"))
	f.Add(seedDatagram(false, ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d datagram
		err := decodeDatagram(b, &d)
		if err != nil {
			return
		}
		if len(d.Payload) > len(b) || d.BTH.DestQP > ib.QPNMask || d.DETH.SrcQP > ib.QPNMask {
			t.Fatalf("accepted an inconsistent datagram: %+v", d)
		}
		// An accepted datagram re-encodes to one that decodes the same.
		buf := make([]byte, len(b)+128)
		h := sendHeader{V6: b[0]>>4 == 6, Src: d.SGID, Dst: d.DGID, SrcPort: d.SrcPort}
		bth := d.BTH
		bth.OpCode = ib.OpUDSendOnly
		if _, err := encodeDatagram(buf, &h, &bth, &d.DETH, [][]byte{d.Payload}); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
