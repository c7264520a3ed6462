package stack

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/ipoib/arp"
	"gvisor.dev/gvisor/pkg/buffer"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// FuzzARPHandle feeds arbitrary bytes to the ARP protocol of a live stack
// as a received frame. Whatever arrives, the handler must not panic, must
// count the frame once as received and under exactly one reason, and may
// answer only a well-formed request for the node's own address.
func FuzzARPHandle(f *testing.F) {
	var w testWire
	node := newTestNode(f, &w, 2, "10.0.0.2/24", nil)
	stranger := ipoib.Addr{QPN: 0x99, GID: ib.GID{0xfe, 0x80, 15: 0x99}}
	var sha [ipoib.AddrLen]byte
	_ = stranger.Encode(sha[:])
	f.Add(arpFrame(arp.Request, sha[:], [4]byte{10, 0, 0, 9}, nil, [4]byte{10, 0, 0, 2}))
	f.Add(arpFrame(arp.Request, sha[:], [4]byte{0, 0, 0, 0}, nil, [4]byte{10, 0, 0, 2}))
	f.Add(arpFrame(arp.Reply, sha[:], [4]byte{10, 0, 0, 9}, node.port.raw, [4]byte{10, 0, 0, 2}))
	f.Add(arpFrame(arp.Request, node.port.raw, [4]byte{10, 0, 0, 2}, nil, [4]byte{10, 0, 0, 2}))
	f.Add([]byte{0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01})

	nep, err := node.S.GetNetworkEndpoint(node.NIC, ARPProtocolNumber)
	if err != nil {
		f.Fatal(err)
	}
	proto := ARPProtocolOf(node.S)
	f.Fuzz(func(t *testing.T, b []byte) {
		before := proto.Stats()
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		pkt.NetworkProtocolNumber = ARPProtocolNumber
		nep.HandlePacket(pkt)
		pkt.DecRef()
		after := proto.Stats()
		if after.Received != before.Received+1 {
			t.Fatalf("received moved by %d", after.Received-before.Received)
		}
		reasons := (after.Malformed - before.Malformed) + (after.WrongType - before.WrongType) +
			(after.Requests - before.Requests) + (after.Replies - before.Replies) +
			(after.Looped - before.Looped) + (after.UnknownOp - before.UnknownOp) +
			(after.Disabled - before.Disabled) + (after.NoLink - before.NoLink)
		if reasons != 1 {
			t.Fatalf("frame counted under %d reasons: before %+v after %+v", reasons, before, after)
		}
		if after.RepliesSent+after.SendErrors > before.RepliesSent+before.SendErrors {
			var a arp.Packet
			if a.Decode(b) != nil || a.Op != arp.Request || a.TargetIP != [4]byte{10, 0, 0, 2} || a.Check(node.port.raw) != nil {
				t.Fatalf("answered %x", b)
			}
		}
	})
}
