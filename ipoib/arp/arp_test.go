package arp

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/ipoibd/ipoibd/internal/hextest"
)

// ARP packets from real captures, the ARP part of each frame as it was
// on the wire.
var arpCaptures = []struct {
	name string
	hex  string
	want Packet
}{
	{
		// ipoib/capture/testdata/tcpdump-tests-ipoib.pcap frame 6 (and 25):
		// "Who has 192.168.56.24? Tell 192.168.56.10", sent to the
		// broadcast group; the target hardware field holds a broadcast
		// address with MGID ff10:401b::ffff:ffff, which we carry as is.
		name: "tcpdump-request",
		hex:  "00200800140400018000004ffe800000000000000010e000014ad211c0a8380a00ffffffff10401b0000000000000000ffffffffc0a83818",
		want: Packet{
			Op:       Request,
			SenderHW: [20]byte{0x80, 0x00, 0x00, 0x4f, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0xe0, 0x00, 0x01, 0x4a, 0xd2, 0x11},
			SenderIP: [4]byte{192, 168, 56, 10},
			TargetHW: [20]byte{0x00, 0xff, 0xff, 0xff, 0xff, 0x10, 0x40, 0x1b, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
			TargetIP: [4]byte{192, 168, 56, 24},
		},
	},
	{
		// Same capture, frame 7: "192.168.56.24 is at
		// 80000550fe800000000000000010e000664ab451".
		name: "tcpdump-reply",
		hex:  "002008001404000280000550fe800000000000000010e000664ab451c0a838188000004ffe800000000000000010e000014ad211c0a8380a",
		want: Packet{
			Op:       Reply,
			SenderHW: [20]byte{0x80, 0x00, 0x05, 0x50, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0xe0, 0x00, 0x66, 0x4a, 0xb4, 0x51},
			SenderIP: [4]byte{192, 168, 56, 24},
			TargetHW: [20]byte{0x80, 0x00, 0x00, 0x4f, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0xe0, 0x00, 0x01, 0x4a, 0xd2, 0x11},
			TargetIP: [4]byte{192, 168, 56, 10},
		},
	},
	{
		// ib/testdata/softroce-demo-infiniband.pcap frame 5: "Who has
		// 10.0.0.58? Tell 10.0.1.34", target hardware field zero.
		name: "softroce-request",
		hex:  "002008001404000180000405fe800000000000000002c9020024f6360a00012200000000000000000000000000000000000000000a00003a",
		want: Packet{
			Op:       Request,
			SenderHW: [20]byte{0x80, 0x00, 0x04, 0x05, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x02, 0x00, 0x24, 0xf6, 0x36},
			SenderIP: [4]byte{10, 0, 1, 34},
			TargetIP: [4]byte{10, 0, 0, 58},
		},
	},
	{
		// Same capture, frame 6: "10.0.0.58 is at
		// 80000404fe800000000000000002c9020020b4dd".
		name: "softroce-reply",
		hex:  "002008001404000280000404fe800000000000000002c9020020b4dd0a00003a80000405fe800000000000000002c9020024f6360a000122",
		want: Packet{
			Op:       Reply,
			SenderHW: [20]byte{0x80, 0x00, 0x04, 0x04, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x02, 0x00, 0x20, 0xb4, 0xdd},
			SenderIP: [4]byte{10, 0, 0, 58},
			TargetHW: [20]byte{0x80, 0x00, 0x04, 0x05, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x02, 0x00, 0x24, 0xf6, 0x36},
			TargetIP: [4]byte{10, 0, 1, 34},
		},
	},
}

func TestARPDecodeCaptures(t *testing.T) {
	for _, tc := range arpCaptures {
		t.Run(tc.name, func(t *testing.T) {
			raw := hextest.Bytes(t, tc.hex)
			if len(raw) != Len {
				t.Fatalf("capture holds %d bytes, want %d", len(raw), Len)
			}
			var got Packet
			if err := got.Decode(raw); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, tc.want)
			}
			if enc := got.AppendTo(nil); !bytes.Equal(enc, raw) {
				t.Errorf("re-encoded %x\nwant        %x", enc, raw)
			}
			buf := make([]byte, Len+3)
			if err := got.Encode(buf); err != nil || !bytes.Equal(buf[:Len], raw) {
				t.Errorf("Encode: %v, %x", err, buf)
			}
			// gopacket's generic ARP decoder agrees on every field.
			p := gopacket.NewPacket(raw, layers.LayerTypeARP, gopacket.Default)
			l, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			if !ok {
				t.Fatalf("gopacket: %v", p.ErrorLayer())
			}
			if uint16(l.AddrType) != HardwareIPoIB || uint16(l.Protocol) != ProtocolIPv4 ||
				l.HwAddressSize != HardwareLen || l.ProtAddressSize != ProtocolLen || l.Operation != got.Op ||
				!bytes.Equal(l.SourceHwAddress, got.SenderHW[:]) || !bytes.Equal(l.SourceProtAddress, got.SenderIP[:]) ||
				!bytes.Equal(l.DstHwAddress, got.TargetHW[:]) || !bytes.Equal(l.DstProtAddress, got.TargetIP[:]) {
				t.Errorf("gopacket reads %+v", l)
			}
		})
	}
}

func TestARPDecodeErrors(t *testing.T) {
	good := hextest.Bytes(t, arpCaptures[1].hex)
	with := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"7 bytes", good[:7], ErrShort},
		{"fixed part only", good[:FixedLen], ErrShort},
		{"one byte short", good[:Len-1], ErrShort},
		{"Ethernet hardware type", with(1, 1), ErrHardwareType},
		{"IPv6 protocol type", with(2, 0x86), ErrProtocolType},
		{"hardware length 6", with(4, 6), ErrAddrLen},
		{"protocol length 16", with(5, 16), ErrAddrLen},
		{"trailing bytes are ignored", append(append([]byte(nil), good...), 1, 2, 3), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a Packet
			err := a.Decode(tc.in)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
	var a Packet
	if err := a.Encode(make([]byte, Len-1)); !errors.Is(err, ErrBuffer) {
		t.Errorf("Encode into a short buffer: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range arpCaptures {
		f.Add(hextest.Bytes(f, c.hex))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Packet
		if err := a.Decode(b); err != nil {
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrHardwareType) &&
				!errors.Is(err, ErrProtocolType) && !errors.Is(err, ErrAddrLen) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// The format is canonical: re-encoding reproduces the packet.
		enc := a.AppendTo(nil)
		if !bytes.Equal(enc, b[:Len]) {
			t.Fatalf("re-encoded %x from %x", enc, b[:Len])
		}
		var back Packet
		if err := back.Decode(enc); err != nil || back != a {
			t.Fatalf("round trip: %v, %+v != %+v", err, back, a)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	raw := hextest.Bytes(b, arpCaptures[0].hex)
	var a Packet
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}
