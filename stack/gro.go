// Receive coalescing: gVisor's generic receive offload over the endpoint.
//
// The rule of this room is io.go's: everything here runs on the device's
// loop. receive hands each TCP/IPv4 packet to the GRO engine (the rest
// go up at once), which holds segments to merge those of one flow that
// follow each other; a bottom half, scheduled by the first segment of a
// pass, delivers what is held once the pass's frames are in.
// gVisor's TCP then runs once per merged segment instead of once per
// frame, and acknowledges them together.

package stack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/counter"
)

// groFlushes is how many times flushGRO calls gro.GRO.Flush. At the
// pinned gVisor version Flush clears each held entry before it follows
// the entry's link to the next, so one call delivers only the first
// packet of each bucket; a bucket holds at most eight (the package's
// groBucketSize), so eight calls empty every bucket.
// TestPinnedGVisorGROQuirks notices when an upgrade changes this.
const groFlushes = 8

// groSink is the GRO engine's dispatcher: it sits between the engine and
// gVisor's NIC and mends the checksums of merged segments. The engine
// checks a segment's IPv4 and TCP checksums before it merges it (and
// marks it RXChecksumValidated), then rewrites the IPv4 total length
// without mending either checksum, trusting the NIC to skip them; but
// gVisor's NIC sets RXChecksumValidated from the link's capabilities,
// and this link does not offload checksums, so a merged segment would be
// dropped as malformed. groSink recomputes both for the segments the
// engine merged, which gVisor then checks again as it does every frame.
// TestPinnedGVisorGROQuirks notices when an upgrade makes this needless.
type groSink struct {
	e *Endpoint
	d gvstack.NetworkDispatcher // the NIC; nil once detached
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (s *groSink) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if s.d == nil {
		counter.Inc(&s.e.stats.V.RxDropped)
		return
	}
	if proto == header.IPv4ProtocolNumber && pkt.RXChecksumValidated {
		mendMerged(pkt)
	}
	s.d.DeliverNetworkPacket(proto, pkt)
}

// DeliverLinkPacket implements stack.NetworkDispatcher; the engine never
// calls it.
func (s *groSink) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if s.d != nil {
		s.d.DeliverLinkPacket(proto, pkt)
	}
}

// mendMerged recomputes the IPv4 header checksum and the TCP checksum of
// a segment the GRO engine validated, if it merged others into it. Only
// a merge changes the header of a validated segment, and it always breaks
// the header checksum: it adds between 1 and 65,495 to the total length,
// never a multiple of 0xFFFF, which a one's-complement sum would not see.
func mendMerged(pkt *gvstack.PacketBuffer) {
	hb, ok := pkt.Data().PullUp(header.IPv4MinimumSize)
	if !ok {
		return
	}
	ip := header.IPv4(hb)
	if ip.IsChecksumValid() || ip.TransportProtocol() != header.TCPProtocolNumber {
		return
	}
	hl := int(ip.HeaderLength())
	tb, ok := pkt.Data().PullUp(hl + header.TCPMinimumSize)
	if !ok || int(ip.TotalLength()) < hl+header.TCPMinimumSize {
		return
	}
	ip = header.IPv4(tb[:hl])
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(tb[hl:])
	tcp.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), ip.PayloadLength())
	tcp.SetChecksum(^checksum.Combine(sum, pkt.Data().ChecksumAtOffset(hl)))
}

// coalescible reports whether a frame of protocol proto may go through
// the GRO engine: TCP over IPv4 whose total length is the frame's. The
// others go up at once, without the engine's parsing or a flush to follow;
// a frame with bytes after its IPv4 packet among them, since the engine
// takes a packet's length from its buffer and would merge those bytes
// into the stream (gVisor's IPv4 trims them off a packet it is handed).
func coalescible(proto uint16, data []byte) bool {
	if tcpip.NetworkProtocolNumber(proto) != header.IPv4ProtocolNumber || len(data) < header.IPv4MinimumSize {
		return false
	}
	ip := header.IPv4(data)
	return ip.Protocol() == uint8(header.TCPProtocolNumber) && int(ip.TotalLength()) == len(data)
}

// coalesce hands a TCP/IPv4 packet to the GRO engine (which takes its own
// reference) and makes sure a flush follows.
func (e *Endpoint) coalesce(d gvstack.NetworkDispatcher, pkt *gvstack.PacketBuffer) {
	e.groSink.d = d
	e.gro.Enqueue(pkt)
	e.groBH.Schedule()
}

// flushGRO is the bottom half that delivers what the engine holds.
func (e *Endpoint) flushGRO() {
	for range groFlushes {
		e.gro.Flush()
	}
}

// dropGRO releases what the engine holds, on Close.
func (e *Endpoint) dropGRO() {
	e.groSink.d = nil
	e.flushGRO()
	e.groBH.Delete()
}
