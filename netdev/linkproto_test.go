package netdev

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestEtherPushPullGolden(t *testing.T) {
	tests := []struct {
		name     string
		dst, src []byte
		proto    uint16
		payload  []byte
		// want is the frame written out by hand from IEEE 802.3 clause
		// 3.2: destination, source, ethertype, payload.
		want []byte
	}{
		{
			name: "IPv4 unicast", dst: hwB, src: hwA, proto: 0x0800, payload: []byte{0x45, 0x00},
			want: []byte{
				0x02, 0x00, 0x00, 0x00, 0x00, 0x0b,
				0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
				0x08, 0x00,
				0x45, 0x00,
			},
		},
		{
			name: "ARP broadcast", dst: etherBroadcast, src: hwA, proto: 0x0806, payload: []byte{0x00, 0x01},
			want: []byte{
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
				0x08, 0x06,
				0x00, 0x01,
			},
		},
	}
	var lp etherLink
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuffer(make([]byte, 64), nil)
			_ = b.Reserve(etherHdrLen)
			_ = b.Append(tc.payload)
			if err := lp.Push(b, tc.dst, tc.src, tc.proto); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), tc.want) {
				t.Fatalf("frame %x\nwant  %x", b.Bytes(), tc.want)
			}
			dst, src, proto, err := lp.Pull(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, tc.dst) || !bytes.Equal(src, tc.src) || proto != tc.proto || !bytes.Equal(b.Bytes(), tc.payload) {
				t.Errorf("pull: dst %x src %x proto %#x payload %x", dst, src, proto, b.Bytes())
			}
		})
	}
}

func TestEtherPushNoHeadroom(t *testing.T) {
	b := NewBuffer(make([]byte, 64), nil)
	_ = b.Reserve(etherHdrLen - 1)
	err := etherLink{}.Push(b, hwB, hwA, 0x0800)
	if !errors.Is(err, ErrNoHeadroom) {
		t.Fatalf("push with %d bytes of headroom: %v", etherHdrLen-1, err)
	}
	if b.Headroom() != etherHdrLen-1 {
		t.Errorf("failed push moved the data: headroom %d", b.Headroom())
	}
}

func TestKeyLinkPushPull(t *testing.T) {
	lp := &keyLink{limit: 3}
	peer := bytes.Repeat([]byte{0x11}, keyAddrLen)
	self := bytes.Repeat([]byte{0x22}, keyAddrLen)
	b := NewBuffer(make([]byte, 64), nil)
	_ = b.Reserve(keyHdrLen)
	_ = b.Append([]byte{0x45})
	if err := lp.Push(b, peer, self, 0x0800); err != nil {
		t.Fatal(err)
	}
	// Ethertype 0x0800, destination key 1, source key 2.
	if want := []byte{0x08, 0x00, 0x01, 0x02, 0x45}; !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("frame %x, want %x", b.Bytes(), want)
	}
	dst, src, proto, err := lp.Pull(b)
	if err != nil || !bytes.Equal(dst, peer) || !bytes.Equal(src, self) || proto != 0x0800 {
		t.Fatalf("pull: %x %x %#x %v", dst, src, proto, err)
	}
	// Table full: a fourth address has no key.
	_ = lp.Push(NewBuffer(make([]byte, 8), nil), keyBroadcast, self, 0x0800)
	b2 := NewBuffer(make([]byte, 8), nil)
	_ = b2.Reserve(keyHdrLen)
	if err := lp.Push(b2, bytes.Repeat([]byte{0x33}, keyAddrLen), self, 0x0800); !errors.Is(err, ErrNoPeer) {
		t.Errorf("push to a fourth peer: %v, want ErrNoPeer", err)
	}
}

func TestMulticastMapping(t *testing.T) {
	tests := []struct {
		group   string
		want    []byte
		wantErr error
	}{
		// RFC 1112 section 6.4: the low 23 bits go under 01:00:5e.
		{"224.0.0.1", []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}, nil},
		{"239.255.255.250", []byte{0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa}, nil},
		{"224.128.0.1", []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}, nil},
		// RFC 2464 section 7: 33:33 and the low 32 bits.
		{"ff02::1:ff00:1234", []byte{0x33, 0x33, 0xff, 0x00, 0x12, 0x34}, nil},
		{"10.0.0.1", nil, ErrNoMulticast},
		{"fe80::1", nil, ErrNoMulticast},
	}
	for _, tc := range tests {
		t.Run(tc.group, func(t *testing.T) {
			got, err := etherLink{}.Multicast(netip.MustParseAddr(tc.group), nil)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("mapped to %x, want %x", got, tc.want)
			}
		})
	}
}

func TestFrameLen(t *testing.T) {
	if got := FrameLen(etherLink{}, 1500); got != 1514 {
		t.Errorf("ether frame for MTU 1500: %d, want 1514", got)
	}
	if got := FrameLen(&keyLink{}, 2044); got != 2044+4+2 {
		t.Errorf("keyed frame for MTU 2044: %d, want 2050", got)
	}
	if MTUOverhead(etherLink{}) != 0 || MTUOverhead(&keyLink{}) != 2 {
		t.Error("MTUOverhead")
	}
}

func TestAddrString(t *testing.T) {
	if got := (etherLink{}).AddrString(hwA); got != "02:00:00:00:00:0a" {
		t.Errorf("AddrString = %q", got)
	}
	if got := (etherLink{}).AddrString([]byte{1}); got != "bad-ether-addr(01)" {
		t.Errorf("AddrString of a short address = %q", got)
	}
}
