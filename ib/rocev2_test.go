package ib_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// TestICRCRoCEv2Capture checks ICRCRoCEv2 against every RoCEv2 packet of
// a capture taken on a real RoCE link (RC traffic between two hosts; the
// ICRC rule does not depend on the transport), and that a flipped bit in
// an invariant field changes it while one in a variant field does not.
func TestICRCRoCEv2Capture(t *testing.T) {
	const ethLen = 14
	n := 0
	for i, fr := range pcaptest.Read(t, "testdata/rocev2-rc.pcap", layers.LinkTypeEthernet) {
		if len(fr) < ethLen+ib.IPv4HeaderLen+ib.UDPHeaderLen || binary.BigEndian.Uint16(fr[12:]) != 0x0800 {
			continue
		}
		ip := fr[ethLen:]
		if ip[9] != 17 || binary.BigEndian.Uint16(ip[22:]) != ib.RoCEv2Port {
			continue
		}
		end := int(binary.BigEndian.Uint16(ip[2:]))
		pkt := ip[:end]
		want := binary.LittleEndian.Uint32(pkt[end-ib.ICRCLen:])
		got, err := ib.ICRCRoCEv2(pkt[:end-ib.ICRCLen])
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if got != want {
			t.Errorf("frame %d: ICRC computed %#08x, on the wire %#08x", i+1, got, want)
		}
		n++
		if n > 1 {
			continue
		}
		// Variant fields: TOS, TTL, header and UDP checksums, BTH byte 4.
		body := append([]byte(nil), pkt[:end-ib.ICRCLen]...)
		for _, off := range []int{1, 8, 10, 11, 26, 27, 28 + 4} {
			body[off] ^= 0x5A
		}
		if got, _ := ib.ICRCRoCEv2(body); got != want {
			t.Errorf("frame %d: changing variant fields changed the ICRC to %#08x", i+1, got)
		}
		// Invariant ones: the IP ID, an address, the UDP port, the BTH QPN.
		for _, off := range []int{4, 12, 20, 28 + 7} {
			body := append([]byte(nil), pkt[:end-ib.ICRCLen]...)
			body[off] ^= 1
			if got, _ := ib.ICRCRoCEv2(body); got == want {
				t.Errorf("frame %d: flipping byte %d left the ICRC unchanged", i+1, off)
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d RoCEv2 packets in the capture", n)
	}
	t.Logf("%d RoCEv2 ICRCs match", n)
}

// TestICRCRoCEv2Errors: what cannot be a RoCEv2 packet gets an error.
func TestICRCRoCEv2Errors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ib.ErrTruncated},
		{"short IPv4", append([]byte{0x45}, make([]byte, 30)...), ib.ErrTruncated},
		{"IPv4 options", append([]byte{0x46}, make([]byte, 60)...), ib.ErrLength},
		{"short IPv6", append([]byte{0x60}, make([]byte, 50)...), ib.ErrTruncated},
		{"version 5", append([]byte{0x50}, make([]byte, 80)...), ib.ErrVersion},
	}
	for _, tt := range tests {
		if _, err := ib.ICRCRoCEv2(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
}
