package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

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

// cmsg encodes one control message as the kernel writes it: the header in
// host byte order, the data, padding to the platform's alignment.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, cmsgAlign(unix.SizeofCmsghdr+len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.SizeofCmsghdr + len(data))
	copy(b[unix.SizeofCmsghdr:], data)
	return b
}

// u32 is v in host byte order, as the kernel writes an int or u32 option.
func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// pktinfo is an in6_pktinfo: the destination address, then the ifindex.
var pktinfo = append([]byte{0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}, u32(2)...)

// TestParseControl reads the control messages of the raw sockets: the
// IPv6 destination and hop limit, and the socket's drop count, in any
// order and among others; a length that runs short of the header or past
// the buffer is refused.
func TestParseControl(t *testing.T) {
	all := bytes.Join([][]byte{
		cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pktinfo),
		cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, u32(1)),
		cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(42)),
	}, nil)
	tooLong := cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(7))
	(*unix.Cmsghdr)(unsafe.Pointer(&tooLong[0])).SetLen(len(tooLong) + 1)
	tooShort := cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(7))
	(*unix.Cmsghdr)(unsafe.Pointer(&tooShort[0])).SetLen(unix.SizeofCmsghdr - 1)
	tests := []struct {
		name  string
		ctrl  []byte
		ok    bool
		want  control
		dstOK bool
	}{
		{"none", nil, true, control{}, false},
		{"IPv6 and drops", all, true, control{hop: 1, drops: 42, hasDrops: true}, true},
		{"drops alone (IPv4)", cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(3)), true, control{drops: 3, hasDrops: true}, false},
		{"other messages skipped", bytes.Join([][]byte{
			cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16)),
			cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, u32(64)),
		}, nil), true, control{hop: 64}, false},
		{"short drop count ignored", cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, []byte{1, 2}), true, control{}, false},
		{"length past the buffer", tooLong, false, control{}, false},
		{"length inside the header", tooShort, false, control{}, false},
	}
	for _, tt := range tests {
		var c control
		ok := parseControl(tt.ctrl, &c)
		if ok != tt.ok || c.hop != tt.want.hop || c.drops != tt.want.drops || c.hasDrops != tt.want.hasDrops || (c.dst != nil) != tt.dstOK {
			t.Errorf("%s: ok %v, %+v; want ok %v, %+v (destination %v)", tt.name, ok, c, tt.ok, tt.want, tt.dstOK)
		}
		if tt.dstOK && !bytes.Equal(c.dst, pktinfo[:16]) {
			t.Errorf("%s: destination %x, want %x", tt.name, c.dst, pktinfo[:16])
		}
	}
}

// FuzzParseControl feeds the control-message reader arbitrary bytes: it
// must not panic, and a destination it reports is 16 bytes of the input.
func FuzzParseControl(f *testing.F) {
	f.Add(cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(42)))
	f.Add(bytes.Join([][]byte{
		cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pktinfo),
		cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, u32(1)),
	}, nil))
	f.Fuzz(func(t *testing.T, ctrl []byte) {
		var c control
		if !parseControl(ctrl, &c) || c.dst == nil {
			return
		}
		if len(c.dst) != 16 || !bytes.Contains(ctrl, c.dst) {
			t.Fatalf("destination %x is not 16 bytes of the input", c.dst)
		}
	})
}
