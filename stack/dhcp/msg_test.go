package dhcp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/ipoibd/ipoibd/ib"
)

func TestNewClientIDGolden(t *testing.T) {
	tests := []struct {
		name string
		iaid uint32
		guid ib.GUID
		want []byte
	}{
		{
			// RFC 4361 section 6.1: 0xff, IAID; RFC 3315 section 9.4:
			// DUID type 3 (DUID-LL), hardware type 32, then the GUID.
			name: "default IAID",
			iaid: DefaultIAID(0x0002c90300a1b2c3),
			guid: 0x0002c90300a1b2c3,
			want: []byte{0xff, 0x00, 0xa1, 0xb2, 0xc3, 0x00, 0x03, 0x00, 0x20, 0x00, 0x02, 0xc9, 0x03, 0x00, 0xa1, 0xb2, 0xc3},
		},
		{
			name: "explicit IAID",
			iaid: 0x01020304,
			guid: 0xfe80000000000001,
			want: []byte{0xff, 0x01, 0x02, 0x03, 0x04, 0x00, 0x03, 0x00, 0x20, 0xfe, 0x80, 0, 0, 0, 0, 0, 0x01},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NewClientID(tc.iaid, tc.guid)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("NewClientID = % x, want % x", got, tc.want)
			}
			iaid, duid, err := ParseClientID(got)
			if err != nil || iaid != tc.iaid || !bytes.Equal(duid, tc.want[5:]) {
				t.Fatalf("ParseClientID = %#x, % x, %v", iaid, duid, err)
			}
		})
	}
}

func TestParseClientIDRejects(t *testing.T) {
	for _, id := range [][]byte{nil, {0xff}, {0xff, 0, 0, 0, 1, 0, 3}, {0x01, 0, 2, 0xc9, 1, 2, 3, 4}, {0, 'a', 'b', 'c', 'd', 'e', 'f', 'g'}} {
		if _, _, err := ParseClientID(id); err == nil {
			t.Errorf("ParseClientID(% x) accepted", id)
		}
	}
}

// TestClientMessageShape decodes, byte by byte at the offsets of RFC 2131
// section 2 figure 1, what the client sends: the RFC 4390 section 2.1
// fields and the section 2.2 flag in every message, and option 61.
func TestClientMessageShape(t *testing.T) {
	d := newDriven(t, ClientConfig{Hostname: "node1"})
	d.exchange(t) // DISCOVER -> OFFER, client sends REQUEST
	d.exchange(t) // REQUEST -> ACK, client bound
	if d.c.state != StateBound {
		t.Fatalf("state %v after DISCOVER/REQUEST, want BOUND", d.c.state)
	}
	d.advance(30 * time.Minute) // T1: renewal REQUEST
	d.c.shutdown()              // RELEASE
	want := NewClientID(DefaultIAID(testGUID(0)), testGUID(0))
	types := []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease}
	if len(d.rec.sent) != len(types) {
		t.Fatalf("client sent %d messages, want %d", len(d.rec.sent), len(types))
	}
	for i, s := range d.rec.sent {
		b := s.b
		if len(b) < 300 {
			t.Fatalf("message %d: %d bytes, BOOTP minimum is 300", i, len(b))
		}
		checks := []struct {
			what      string
			got, want []byte
		}{
			{"op (BOOTREQUEST)", b[0:1], []byte{1}},
			{"htype (IPoIB)", b[1:2], []byte{32}},
			{"hlen", b[2:3], []byte{0}},
			{"flags (BROADCAST)", b[10:12], []byte{0x80, 0x00}},
			{"chaddr", b[28:44], make([]byte, 16)},
			{"magic cookie", b[236:240], []byte{99, 130, 83, 99}},
		}
		for _, c := range checks {
			if !bytes.Equal(c.got, c.want) {
				t.Errorf("message %d %s = % x, want % x", i, c.what, c.got, c.want)
			}
		}
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.MessageType() != types[i] {
			t.Errorf("message %d is %v, want %v", i, m.MessageType(), types[i])
		}
		if got := m.Options.Get(dhcpv4.OptionClientIdentifier); !bytes.Equal(got, want) {
			t.Errorf("message %d option 61 = % x, want % x", i, got, want)
		}
	}
	// Where each went: broadcast until bound, then the server.
	dsts := []netip.AddrPort{serverBroadcast, serverBroadcast, netip.AddrPortFrom(testServerID, 67), netip.AddrPortFrom(testServerID, 67)}
	for i, s := range d.rec.sent {
		if s.dst != dsts[i] {
			t.Errorf("message %d sent to %v, want %v", i, s.dst, dsts[i])
		}
	}
}

// TestClientIDStable checks the identifier survives a restart for the
// same GUID and differs between GUIDs.
func TestClientIDStable(t *testing.T) {
	first := func(guid ib.GUID, seed uint64) []byte {
		d := newDriven(t, ClientConfig{GUID: guid, Seed: seed})
		m, _ := d.rec.last(t)
		return m.Options.Get(dhcpv4.OptionClientIdentifier)
	}
	a1, a2 := first(testGUID(1), 1), first(testGUID(1), 2)
	b := first(testGUID(2), 1)
	if !bytes.Equal(a1, a2) {
		t.Errorf("same GUID, two runs: % x and % x", a1, a2)
	}
	if bytes.Equal(a1, b) {
		t.Errorf("two GUIDs share identifier % x", a1)
	}
}
