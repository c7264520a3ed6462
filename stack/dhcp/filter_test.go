package dhcp

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// filterPacket builds an IPv4 packet carrying a UDP datagram to dstPort
// whose payload starts as a DHCP message with transaction ID xid.
func filterPacket(proto uint8, dstPort uint16, xid uint32, fragOff uint16, msgLen int) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+msgLen)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: proto, FragmentOffset: fragOff,
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: header.IPv4Broadcast,
	})
	u := header.UDP(pkt[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: ServerPort, DstPort: dstPort, Length: uint16(header.UDPMinimumSize + msgLen)})
	msg := pkt[header.IPv4MinimumSize+header.UDPMinimumSize:]
	if len(msg) >= 8 {
		msg[0] = 2 // BOOTREPLY
		binary.BigEndian.PutUint32(msg[4:8], xid)
	}
	return pkt
}

// TestClientFilter checks the receive filter a client attaches: it
// refuses only replies to the client port that carry another
// transaction's ID, and counts them as ignored.
func TestClientFilter(t *testing.T) {
	const mine, theirs = 0x11223344, 0x55667788
	tests := []struct {
		name  string
		proto tcpip.NetworkProtocolNumber
		pkt   []byte
		want  bool
	}{
		{"own reply", header.IPv4ProtocolNumber, filterPacket(17, ClientPort, mine, 0, 300), true},
		{"another client's reply", header.IPv4ProtocolNumber, filterPacket(17, ClientPort, theirs, 0, 300), false},
		{"to the server port", header.IPv4ProtocolNumber, filterPacket(17, ServerPort, theirs, 0, 300), true},
		{"not UDP", header.IPv4ProtocolNumber, filterPacket(6, ClientPort, theirs, 0, 300), true},
		{"a later fragment", header.IPv4ProtocolNumber, filterPacket(17, ClientPort, theirs, 1480, 300), true},
		{"too short to hold an ID", header.IPv4ProtocolNumber, filterPacket(17, ClientPort, theirs, 0, 4), true},
		{"truncated IPv4 header", header.IPv4ProtocolNumber, filterPacket(17, ClientPort, theirs, 0, 300)[:12], true},
		{"IPv6", header.IPv6ProtocolNumber, filterPacket(17, ClientPort, theirs, 0, 300), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Client
			c.curXID.Store(mine)
			if got := c.wants(tc.proto, tc.pkt); got != tc.want {
				t.Errorf("wants = %v, want %v", got, tc.want)
			}
			ignored := uint64(0)
			if !tc.want {
				ignored = 1
			}
			if got := c.Stats().Ignored; got != ignored {
				t.Errorf("ignored = %d, want %d", got, ignored)
			}
		})
	}
}

// FuzzClientFilter feeds the client's receive filter arbitrary packets: it
// never panics, and whatever it refuses is, read independently, an IPv4
// UDP datagram to the client port whose message carries another ID.
func FuzzClientFilter(f *testing.F) {
	const mine = 0x11223344
	f.Add(uint16(header.IPv4ProtocolNumber), filterPacket(17, ClientPort, mine, 0, 300))
	f.Add(uint16(header.IPv4ProtocolNumber), filterPacket(17, ClientPort, 7, 0, 300))
	f.Fuzz(func(t *testing.T, proto uint16, pkt []byte) {
		var c Client
		c.curXID.Store(mine)
		if c.wants(tcpip.NetworkProtocolNumber(proto), pkt) {
			return
		}
		if proto != uint16(header.IPv4ProtocolNumber) || len(pkt) < 20 || pkt[9] != 17 {
			t.Fatalf("refused a packet that is not IPv4 UDP: proto %#x, % x", proto, pkt)
		}
		hl := int(pkt[0]&0xf) * 4
		if len(pkt) < hl+16 || binary.BigEndian.Uint16(pkt[hl+2:]) != ClientPort || binary.BigEndian.Uint32(pkt[hl+12:]) == mine {
			t.Fatalf("refused a datagram that is not another transaction's reply: % x", pkt)
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
			t.Fatalf("refused a later fragment: % x", pkt)
		}
	})
}
