package udp

import (
	"net/netip"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// TestIPv4GIDRoundTrip settles a suspicion (issue #14, point 6): the IPv4
// addresses RoCEv2 puts in the IPv4 header are the last four bytes of the
// IPv4-mapped GIDs (::ffff:a.b.c.d), and the GIDs decoded from a received
// header are the same mapped GIDs, for addresses whatever their bytes
// (high bits set, zeros, 255s).
func TestIPv4GIDRoundTrip(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{
		{"10.0.0.1", "10.0.0.2"},
		{"192.168.255.254", "172.31.0.129"},
		{"255.254.253.252", "1.0.0.0"},
		{"100.64.0.0", "223.255.255.255"},
	} {
		src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
		sg, dg := ib.GID(src.As16()), ib.GID(dst.As16())
		h := sendHeader{SrcPort: 49152, Src: sg, Dst: dg}
		if !sg.IsIPv4Mapped() || !dg.IsIPv4Mapped() {
			t.Fatalf("%v, %v: As16 is not IPv4-mapped", src, dst)
		}
		buf := make([]byte, 512)
		out, err := encodeDatagram(buf, &h, &ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: 2},
			&ib.DETH{QKey: 0x0B1B, SrcQP: 3}, [][]byte{[]byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		b := buf[maxIPHeader-h.ipHeaderLen() : maxIPHeader+ib.UDPHeaderLen+len(out)]
		if got := netip.AddrFrom4([4]byte(b[12:16])); got != src {
			t.Errorf("IPv4 source %v, want %v", got, src)
		}
		if got := netip.AddrFrom4([4]byte(b[16:20])); got != dst {
			t.Errorf("IPv4 destination %v, want %v", got, dst)
		}
		var d datagram
		if err := decodeDatagram(b, &d); err != nil {
			t.Fatal(err)
		}
		if d.SGID != sg || d.DGID != dg || !d.SGID.IsIPv4Mapped() {
			t.Errorf("decoded SGID %v DGID %v, want %v %v", d.SGID, d.DGID, sg, dg)
		}
		info := ifaceInfo{v4: src}
		if g := info.gids()[1]; g != sg {
			t.Errorf("GID index 1 of %v: %v", src, g)
		}
	}
}
