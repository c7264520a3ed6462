package stack

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// groFuzzMaxPackets bounds how many packets one fuzz input holds.
const groFuzzMaxPackets = 32

// splitGROInput reads a fuzz input as packets, each behind a 2-byte
// big-endian length; a last, short one takes what is left.
func splitGROInput(data []byte) [][]byte {
	var pkts [][]byte
	for len(data) >= 2 && len(pkts) < groFuzzMaxPackets {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		pkts = append(pkts, data[:n:n])
		data = data[n:]
	}
	return pkts
}

// joinGROInput is splitGROInput's inverse, for seeds.
func joinGROInput(pkts ...[]byte) []byte {
	var b []byte
	for _, p := range pkts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// streamBytes is how many bytes of a packet belong to a TCP stream's
// data if the GRO engine merges it (its TCP payload), or all of them if
// it cannot be merged: merging moves the former into another packet and
// drops the headers, so the sum over a run's packets is the same before
// and after.
func streamBytes(b []byte) int {
	if !coalescible(uint16(header.IPv4ProtocolNumber), b) {
		return len(b)
	}
	ip := header.IPv4(b)
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize || len(b) < hl+header.TCPMinimumSize {
		return len(b)
	}
	off := int(header.TCP(b[hl:]).DataOffset())
	if off < header.TCPMinimumSize || hl+off > len(b) {
		return len(b)
	}
	return len(b) - hl - off
}

// FuzzGRO runs received packets through the endpoint's coalescing as one
// pass of the loop would (what coalescible admits goes to the engine, the
// rest up at once; then the flush), and checks that it never panics,
// that every packet comes out (the stream's bytes add up), and that every
// packet handed on is either one that went in, unchanged, or a merge
// whose IPv4 and TCP checksums hold.
func FuzzGRO(f *testing.F) {
	ack, psh := header.TCPFlagAck, header.TCPFlagAck|header.TCPFlagPsh
	data := bytes.Repeat([]byte("ipoib"), 200)
	f.Add(joinGROInput(
		tcpSegment(1000, 1, ack, data, false),
		tcpSegment(1000, 1001, ack, data, false),
		tcpSegment(1000, 2001, psh, data, false)))
	f.Add(joinGROInput(
		tcpSegment(1000, 1, ack, data, false),
		tcpSegment(1008, 1, ack, data, false),
		tcpSegment(1000, 1001, ack, data, false),
		tcpSegment(1008, 1001, ack, data, true)))
	f.Add(joinGROInput(
		tcpSegment(1000, 1, ack, data[:10], false),
		tcpSegment(1000, 11, ack, data, false),
		append(tcpSegment(1000, 1011, ack, data, false), 0, 0)))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkts := splitGROInput(in)
		var rec groRecorder
		e := &Endpoint{}
		e.gro.Init(true)
		e.gro.Dispatcher = &e.groSink
		e.groSink = groSink{e: e, d: &rec}
		want := 0
		for _, p := range pkts {
			want += streamBytes(p)
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
			if coalescible(uint16(header.IPv4ProtocolNumber), p) {
				e.gro.Enqueue(pkt)
			} else {
				rec.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
			}
			pkt.DecRef()
		}
		e.flushGRO()
		got := 0
		for i, d := range rec.pkts {
			got += streamBytes(d)
			if slicesContain(pkts, d) {
				continue
			}
			ip := header.IPv4(d)
			if !coalescible(uint16(header.IPv4ProtocolNumber), d) || !ip.IsChecksumValid() || !tcpChecksumHolds(d) {
				t.Fatalf("packet %d of %d handed on is neither one that went in nor a sound merge: % x", i, len(rec.pkts), d[:min(len(d), 60)])
			}
		}
		if got != want {
			t.Fatalf("%d bytes of stream came out of %d packets, %d went in with %d", got, len(rec.pkts), want, len(pkts))
		}
	})
}

// slicesContain reports whether b is one of bs, byte for byte.
func slicesContain(bs [][]byte, b []byte) bool {
	for _, x := range bs {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}
