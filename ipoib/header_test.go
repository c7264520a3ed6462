package ipoib

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/netdev"
)

// bufWith returns a buffer holding data with room for headroom bytes in
// front.
func bufWith(headroom int, data []byte) *netdev.Buffer {
	b := netdev.NewBuffer(make([]byte, headroom+len(data)+8), nil)
	_ = b.Reserve(headroom)
	_ = b.Append(data)
	return b
}

func TestHeaderGolden(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		// want is written out from RFC 4391 section 6: Type, big-endian,
		// then the two reserved octets, which inside the host hold the
		// destination and source keys.
		want string
	}{
		// Wire form of the first frame of the tcpdump capture (an ICMP echo
		// over Linux IPoIB): 08 00 00 00.
		{"IPv4 on the wire", Header{Type: EtherTypeIPv4}, "0800 0000"},
		{"ARP on the wire", Header{Type: EtherTypeARP}, "0806 0000"},
		{"IPv6 keyed", Header{Type: EtherTypeIPv6, DstKey: 1, SrcKey: 2}, "86dd 0102"},
		{"highest keys", Header{Type: 0xffff, DstKey: 255, SrcKey: 254}, "ffff fffe"},
		{"smallest ethertype", Header{Type: 0x0600, DstKey: 7}, "0600 0700"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := hextest.Bytes(t, tc.want)
			if got := tc.h.AppendTo(nil); !bytes.Equal(got, want) {
				t.Errorf("AppendTo = %x, want %x", got, want)
			}
			enc := make([]byte, HeaderLen)
			if err := tc.h.Encode(enc); err != nil || !bytes.Equal(enc, want) {
				t.Errorf("Encode = %x, %v; want %x", enc, err, want)
			}
			var got Header
			if err := got.Decode(want); err != nil || got != tc.h {
				t.Errorf("Decode(%x) = %+v, %v; want %+v", want, got, err, tc.h)
			}

			payload := []byte{0x45, 0x00, 0x00, 0x54}
			b := bufWith(HeaderLen, payload)
			if err := PushHeader(b, tc.h); err != nil {
				t.Fatal(err)
			}
			if frame := append(append([]byte(nil), want...), payload...); !bytes.Equal(b.Bytes(), frame) {
				t.Fatalf("pushed frame %x, want %x", b.Bytes(), frame)
			}
			var pulled Header
			if err := PullHeader(b, &pulled); err != nil || pulled != tc.h {
				t.Fatalf("PullHeader = %+v, %v; want %+v", pulled, err, tc.h)
			}
			if !bytes.Equal(b.Bytes(), payload) || b.Headroom() != HeaderLen {
				t.Errorf("after pull: %x with headroom %d", b.Bytes(), b.Headroom())
			}
		})
	}
}

func TestHeaderErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  error
	}{
		{"empty", "", netdev.ErrShort},
		{"three bytes", "0800 00", netdev.ErrShort},
		// Below 0x0600 the field would be an 802.3 length.
		{"type zero", "0000 0000 4500", netdev.ErrBadHeader},
		{"type 0x05ff", "05ff 0000", netdev.ErrBadHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := hextest.Bytes(t, tc.frame)
			var h Header
			if err := h.Decode(frame); !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
			b := bufWith(0, frame)
			if err := PullHeader(b, &h); !errors.Is(err, tc.want) {
				t.Errorf("PullHeader: %v, want %v", err, tc.want)
			}
			if !bytes.Equal(b.Bytes(), frame) {
				t.Errorf("failed pull changed the frame to %x", b.Bytes())
			}
		})
	}
	if err := (Header{}).Encode(make([]byte, 3)); !errors.Is(err, netdev.ErrNoHeadroom) {
		t.Errorf("Encode into 3 bytes: %v", err)
	}
	b := bufWith(HeaderLen-1, []byte{1})
	if err := PushHeader(b, Header{Type: EtherTypeIPv4}); !errors.Is(err, netdev.ErrNoHeadroom) || b.Len() != 1 {
		t.Errorf("PushHeader with 3 bytes of headroom: %v, length %d", err, b.Len())
	}
	if _, _, err := ClearKeys(bufWith(0, []byte{8, 0, 1})); !errors.Is(err, netdev.ErrShort) {
		t.Errorf("ClearKeys on 3 bytes: %v", err)
	}
	if err := SetKeys(bufWith(0, nil), 1, 2); !errors.Is(err, netdev.ErrShort) {
		t.Errorf("SetKeys on an empty frame: %v", err)
	}
}

func TestKeysZeroedOnTheWire(t *testing.T) {
	// In-host frame: IPv4, destination key 0x2a, source key 0x01, then
	// the start of an IPv4 header.
	inHost := hextest.Bytes(t, "0800 2a01 4500 0054")
	onWire := hextest.Bytes(t, "0800 0000 4500 0054")
	b := bufWith(0, inHost)
	dst, src, err := ClearKeys(b)
	if err != nil || dst != 0x2a || src != 0x01 {
		t.Fatalf("ClearKeys = %d, %d, %v; want 42, 1", dst, src, err)
	}
	if !bytes.Equal(b.Bytes(), onWire) {
		t.Fatalf("frame for the wire %x, want %x", b.Bytes(), onWire)
	}
	// And back on the way in.
	if err := SetKeys(b, 0x2a, 0x01); err != nil || !bytes.Equal(b.Bytes(), inHost) {
		t.Fatalf("SetKeys: %x, %v; want %x", b.Bytes(), err, inHost)
	}
	var h Header
	if err := PeekHeader(b, &h); err != nil || h != (Header{Type: EtherTypeIPv4, DstKey: 0x2a, SrcKey: 1}) || b.Len() != len(inHost) {
		t.Errorf("PeekHeader = %+v, %v (length %d)", h, err, b.Len())
	}
}

// FuzzPullHeader checks the header decoder on arbitrary frames: it never
// panics, accepts exactly the frames with a 4-byte header and an
// ethertype, reproduces the header bytes when re-encoding, leaves a frame
// it refuses untouched, round-trips the keys through ClearKeys and
// SetKeys, and makes Link.Pull return the addresses whose keys the frame
// carries. The seeds are frames of the tcpdump IPoIB capture (the bytes
// after its 40-byte pseudo-header) and keyed in-host frames.
func FuzzPullHeader(f *testing.F) {
	f.Add(hextest.Bytes(f, "0800 0000 4500 0054 aefe 0000 ff01 1b37 c0a8 380a"))
	f.Add(hextest.Bytes(f, "0806 0102 0020 0800 1404 0001"))
	f.Add([]byte{0x08})
	cache := NewPeerCache(nil)
	link, err := NewProtocol(cache, 0xffff)
	if err != nil {
		f.Fatal(err)
	}
	peerA, peerB := testAddr(1), testAddr(2)
	pa, _ := cache.Enter(peerA)
	pb, _ := cache.Enter(peerB)
	if pa.Key() != 1 || pb.Key() != 2 {
		f.Fatalf("keys %d and %d, want 1 and 2", pa.Key(), pb.Key())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Header
		err := h.Decode(data)
		switch {
		case len(data) < HeaderLen:
			if !errors.Is(err, netdev.ErrShort) {
				t.Fatalf("Decode of %d bytes: %v, want ErrShort", len(data), err)
			}
		case uint16(data[0])<<8|uint16(data[1]) < minEtherType:
			if !errors.Is(err, netdev.ErrBadHeader) {
				t.Fatalf("Decode of type %x: %v, want ErrBadHeader", data[:2], err)
			}
		case err != nil:
			t.Fatalf("Decode(%x): %v", data[:HeaderLen], err)
		}

		b := bufWith(0, data)
		var pulled Header
		perr := PullHeader(b, &pulled)
		if (perr == nil) != (err == nil) {
			t.Fatalf("PullHeader error %v, Decode error %v", perr, err)
		}
		if err != nil {
			if !bytes.Equal(b.Bytes(), data) {
				t.Fatalf("refused frame changed to %x", b.Bytes())
			}
			// Link.Pull decodes the header itself; it must refuse the same
			// frames for the same reason.
			want := netdev.ErrShort
			if len(data) >= HeaderLen {
				want = netdev.ErrBadHeader
			}
			if _, _, _, lerr := link.Pull(b); !errors.Is(lerr, want) || !bytes.Equal(b.Bytes(), data) {
				t.Fatalf("Link.Pull of a frame Decode refuses: %v, want %v", lerr, want)
			}
			return
		}
		if pulled != h || !bytes.Equal(b.Bytes(), data[HeaderLen:]) {
			t.Fatalf("PullHeader = %+v leaving %x; Decode = %+v", pulled, b.Bytes(), h)
		}
		if enc := h.AppendTo(nil); !bytes.Equal(enc, data[:HeaderLen]) {
			t.Fatalf("re-encoded header %x, frame starts %x", enc, data[:HeaderLen])
		}
		if err := PushHeader(b, h); err != nil || !bytes.Equal(b.Bytes(), data) {
			t.Fatalf("push back: %x, %v", b.Bytes(), err)
		}

		dk, sk, err := ClearKeys(b)
		if err != nil || dk != h.DstKey || sk != h.SrcKey {
			t.Fatalf("ClearKeys = %d, %d, %v; header %+v", dk, sk, err, h)
		}
		if p := b.Bytes(); p[DstKeyOffset] != 0 || p[SrcKeyOffset] != 0 {
			t.Fatalf("keys not zeroed: %x", p[:HeaderLen])
		}
		if err := SetKeys(b, dk, sk); err != nil || !bytes.Equal(b.Bytes(), data) {
			t.Fatalf("SetKeys did not restore the frame: %x, %v", b.Bytes(), err)
		}

		dst, src, proto, err := link.Pull(b)
		known := func(k Key) bool { return k == 1 || k == 2 }
		// A source of NoKey is an unknown sender, delivered without a
		// source address; an unknown destination never is.
		if !known(h.DstKey) || !known(h.SrcKey) && h.SrcKey != NoKey {
			if !errors.Is(err, netdev.ErrUnknownKey) || b.Len() != len(data) {
				t.Fatalf("Pull with keys %d, %d: %v, length %d", h.DstKey, h.SrcKey, err, b.Len())
			}
			return
		}
		addrOf := func(k Key) []byte {
			switch k {
			case NoKey:
				return nil
			case 1:
				return peerA
			}
			return peerB
		}
		if err != nil || proto != h.Type || !bytes.Equal(dst, addrOf(h.DstKey)) || !bytes.Equal(src, addrOf(h.SrcKey)) {
			t.Fatalf("Pull = %x, %x, %#x, %v for header %+v", dst, src, proto, err, h)
		}
	})
}
