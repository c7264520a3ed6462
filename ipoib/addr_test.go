package ipoib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// The address of 192.168.56.24 in the tcpdump IPoIB test capture (ARP
// reply, frame 7), as tshark prints it and as the wire carries it.
const (
	ipoibTestAddrHex   = "80000550fe800000000000000010e000664ab451"
	ipoibTestAddrColon = "80:00:05:50:fe:80:00:00:00:00:00:00:00:10:e0:00:66:4a:b4:51"
)

func ipoibTestAddr() Addr {
	return Addr{Flags: FlagConnected, QPN: 0x550, GID: ib.GIDFromParts(0xfe80000000000000, 0x0010e000664ab451)}
}

func TestAddrGolden(t *testing.T) {
	wire := hextest.Bytes(t,
		"80",       // flags: connected mode
		"00 05 50", // QPN 0x550
		"fe 80 00 00 00 00 00 00 00 10 e0 00 66 4a b4 51", // GID
	)
	want := ipoibTestAddr()
	var a Addr
	if err := a.Decode(wire); err != nil || a != want {
		t.Fatalf("Decode = %+v, %v; want %+v", a, err, want)
	}
	out := make([]byte, AddrLen)
	if err := want.Encode(out); err != nil || !bytes.Equal(out, wire) {
		t.Errorf("Encode = %x, %v; want %x", out, err, wire)
	}
	if got := want.String(); got != ipoibTestAddrColon {
		t.Errorf("String = %q, want %q", got, ipoibTestAddrColon)
	}
	if !want.ConnectedMode() || want.IsMulticast() {
		t.Errorf("ConnectedMode %v IsMulticast %v", want.ConnectedMode(), want.IsMulticast())
	}
	for _, s := range []string{ipoibTestAddrColon, ipoibTestAddrHex, "80:00:05:50:FE:80:00:00:00:00:00:00:00:10:E0:00:66:4A:B4:51"} {
		if got, err := ParseAddr(s); err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %+v, %v", s, got, err)
		}
	}
}

func TestAddrErrors(t *testing.T) {
	bad := []string{
		"",
		ipoibTestAddrHex[:38],
		ipoibTestAddrHex + "00",
		"80-00-05-50-fe-80-00-00-00-00-00-00-00-10-e0-00-66-4a-b4-51",
		"80:00:05:50:fe:80:00:00:00:00:00:00:00:10:e0:00:66:4a:b4:5g",
		"g0000550fe800000000000000010e000664ab451",
	}
	for _, s := range bad {
		if _, err := ParseAddr(s); !errors.Is(err, ErrAddr) {
			t.Errorf("ParseAddr(%q) = %v, want ErrAddr", s, err)
		}
	}
	var a Addr
	if err := a.Decode(make([]byte, 19)); !errors.Is(err, ib.ErrTruncated) {
		t.Errorf("Decode(19 bytes) = %v", err)
	}
	if err := ipoibTestAddr().Encode(make([]byte, 19)); !errors.Is(err, ib.ErrTruncated) {
		t.Errorf("Encode into 19 bytes = %v", err)
	}
	big := Addr{QPN: 0x1000000}
	if err := big.Encode(make([]byte, 20)); !errors.Is(err, ib.ErrFieldRange) {
		t.Errorf("Encode ib.QPN 2^24 = %v", err)
	}
}

func TestMulticastGIDs(t *testing.T) {
	gid := func(s string) ib.GID {
		g, err := ib.ParseGID(s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// Broadcast MGIDs: the real one is in the soft-RoCE capture (frames 3
	// and 5), the others follow RFC 4391 section 4 with the full-member
	// bit forced on.
	bcast := []struct {
		pkey ib.PKey
		want string
	}{
		{0xffff, "ff12:401b:ffff::ffff:ffff"},
		{0x7fff, "ff12:401b:ffff::ffff:ffff"},
		{0x8001, "ff12:401b:8001::ffff:ffff"},
		{0x0001, "ff12:401b:8001::ffff:ffff"},
	}
	for _, tt := range bcast {
		if got := BroadcastGID(tt.pkey); got != gid(tt.want) {
			t.Errorf("BroadcastGID(%v) = %v, want %s", tt.pkey, got, tt.want)
		}
	}
	ba := BroadcastAddr(ib.PKeyDefault)
	if got := ba.String(); got != "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff" {
		t.Errorf("broadcast address = %s", got)
	}
	if !ba.IsMulticast() || ba.ConnectedMode() {
		t.Errorf("broadcast IsMulticast %v ConnectedMode %v", ba.IsMulticast(), ba.ConnectedMode())
	}

	mc := []struct {
		pkey  ib.PKey
		group string
		want  string
	}{
		{0xffff, "224.0.0.1", "ff12:401b:ffff::1"},
		{0xffff, "239.255.255.250", "ff12:401b:ffff::fff:fffa"}, // top 4 bits of 0xef dropped
		{0x8002, "224.0.0.251", "ff12:401b:8002::fb"},
		// From frame 26 of the soft-RoCE capture: a Linux host sending a
		// neighbour solicitation to this solicited-node group.
		{0xffff, "ff02::1:ff00:1895", "ff12:601b:ffff::1:ff00:1895"},
		{0xffff, "ff02::1", "ff12:601b:ffff::1"},
		{0x0002, "ff05::1:3", "ff12:601b:8002::1:3"},
	}
	for _, tt := range mc {
		g := netip.MustParseAddr(tt.group)
		var got ib.GID
		var err error
		if g.Is4() {
			got, err = IPv4MulticastGID(tt.pkey, g)
		} else {
			got, err = IPv6MulticastGID(tt.pkey, g)
		}
		if err != nil || got != gid(tt.want) {
			t.Errorf("MGID(%v, %s) = %v, %v; want %s", tt.pkey, tt.group, got, err, tt.want)
		}
		if a := MulticastAddr(got); !a.IsMulticast() {
			t.Errorf("MulticastAddr(%v) is not multicast", got)
		}
	}
	for _, s := range []string{"10.0.0.1", "255.255.255.255", "::ffff:224.0.0.1", "fe80::1"} {
		g := netip.MustParseAddr(s)
		if _, err := IPv4MulticastGID(0xffff, g); !errors.Is(err, ErrNotMulticast) {
			t.Errorf("IPv4MulticastGID(%s) = %v", s, err)
		}
		if _, err := IPv6MulticastGID(0xffff, g); !errors.Is(err, ErrNotMulticast) {
			t.Errorf("IPv6MulticastGID(%s) = %v", s, err)
		}
	}
	if _, err := IPv6MulticastGID(0xffff, netip.MustParseAddr("224.0.0.1")); !errors.Is(err, ErrNotMulticast) {
		t.Errorf("IPv6MulticastGID(224.0.0.1) = %v", err)
	}
}

// TestAddrCapture decodes the ARP hardware addresses of the IPoIB ARP
// exchange in the soft-RoCE capture (frames 5 and 6) and checks the sender
// address against the packet's own headers: its QPN is the DETH source QP
// and, where a GRH is present, its GID the GRH source GID.
func TestAddrCapture(t *testing.T) {
	const linkTypeERF = 197 // LINKTYPE_ERF: the capture holds ERF records
	frames := pcaptest.Read(t, "../ib/testdata/softroce-demo-infiniband.pcap", linkTypeERF)
	want := map[int][2]string{ // sender, target as tshark prints them
		5: {"80000405fe800000000000000002c9020024f636", "0000000000000000000000000000000000000000"},
		6: {"80000404fe800000000000000002c9020020b4dd", "80000405fe800000000000000002c9020024f636"},
	}
	seen := 0
	for i, data := range frames {
		n := i + 1 // frame numbers count from 1, as tshark's do
		w, ok := want[n]
		if !ok {
			continue
		}
		wlen := int(binary.BigEndian.Uint16(data[14:]))
		var p ib.Packet
		if err := ib.DecodePacket(data[16:16+wlen], &p); err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		// IPoIB header (ethertype 0x0806), then ARP: htype 32, ptype,
		// hlen 20, plen 4, op, sha, spa, tha, tpa.
		arp := p.Payload[4:]
		if binary.BigEndian.Uint16(p.Payload) != 0x0806 || binary.BigEndian.Uint16(arp) != 32 || arp[4] != AddrLen {
			t.Fatalf("frame %d is not IPoIB ARP: %x", n, p.Payload[:12])
		}
		var sha, tha Addr
		if err := sha.Decode(arp[8:]); err != nil {
			t.Fatal(err)
		}
		if err := tha.Decode(arp[8+20+4:]); err != nil {
			t.Fatal(err)
		}
		for i, a := range []Addr{sha, tha} {
			parsed, err := ParseAddr(w[i])
			if err != nil || parsed != a {
				t.Errorf("frame %d address %d = %v, tshark says %s", n, i, a, w[i])
			}
		}
		if sha.QPN != p.DETH.SrcQP || !sha.ConnectedMode() {
			t.Errorf("frame %d: sender QPN %v, DETH SrcQP %v", n, sha.QPN, p.DETH.SrcQP)
		}
		if p.HasGRH && sha.GID != p.GRH.SGID {
			t.Errorf("frame %d: sender ib.GID %v, GRH SGID %v", n, sha.GID, p.GRH.SGID)
		}
		if p.HasGRH && p.GRH.DGID != BroadcastGID(p.BTH.PKey) {
			t.Errorf("frame %d: ARP request to %v, want the broadcast MGID of %v", n, p.GRH.DGID, p.BTH.PKey)
		}
		seen++
	}
	if seen != len(want) {
		t.Errorf("found %d of %d ARP frames", seen, len(want))
	}
}

func FuzzDecodeAddr(f *testing.F) {
	seed := make([]byte, AddrLen)
	_ = ipoibTestAddr().Encode(seed)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Addr
		err := a.Decode(b)
		if (err != nil) != (len(b) < AddrLen) {
			t.Fatalf("Decode(%d bytes) = %v", len(b), err)
		}
		if err != nil {
			return
		}
		out := make([]byte, AddrLen)
		if err := a.Encode(out); err != nil || !bytes.Equal(out, b[:AddrLen]) {
			t.Fatalf("re-encode = %x, %v; want %x", out, err, b[:AddrLen])
		}
		s := a.String()
		back, err := ParseAddr(s)
		if err != nil || back != a {
			t.Fatalf("ParseAddr(%q) = %+v, %v; want %+v", s, back, err, a)
		}
	})
}
