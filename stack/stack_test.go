package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/ipoib/arp"
	"github.com/ipoibd/ipoibd/netdev"
)

func ping(t *testing.T, from *testNode, to netip.Addr, count int) PingStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := Ping(ctx, from.S, to, count, time.Millisecond, 56)
	if err != nil {
		t.Fatalf("ping %v: %v", to, err)
	}
	return st
}

func TestPingResolvesThroughNeighbourCache(t *testing.T) {
	var w testWire
	a := newTestNode(t, &w, 1, "10.0.0.1/24", nil)
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)

	st := ping(t, a, b.Addr.Addr(), 20)
	if st.Received != 20 || st.Loss != 0 || st.Duplicates != 0 || st.Corrupt != 0 {
		t.Fatalf("ping: %+v", st)
	}
	if !(st.Min > 0 && st.Min <= st.P50 && st.P50 <= st.P99 && st.P99 <= st.Max && st.Min <= st.Avg && st.Avg <= st.Max) {
		t.Errorf("RTT figures out of order: %v", st)
	}
	if len(st.RTTs) != 20 {
		t.Errorf("%d RTTs recorded, want 20", len(st.RTTs))
	}

	// A asked by broadcast and had a unicast reply: B's address is
	// reachable in A's cache. B learnt A from the request.
	tests := []struct {
		name  string
		node  *testNode
		peer  *testNode
		state gvstack.NeighborState
	}{
		{"requester", a, b, gvstack.Reachable},
		{"responder", b, a, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := tc.node.Neighbors()
			if err != nil {
				t.Fatal(err)
			}
			var found *Neighbor
			for i := range ns {
				if ns[i].Addr == tc.peer.Addr.Addr() {
					found = &ns[i]
				}
			}
			if found == nil {
				t.Fatalf("no neighbour entry for %v in %+v", tc.peer.Addr.Addr(), ns)
			}
			if !bytes.Equal(found.LinkAddr, tc.peer.port.raw) {
				t.Errorf("link address %x, want %x", found.LinkAddr, tc.peer.port.raw)
			}
			if tc.state != 0 && found.State != tc.state {
				t.Errorf("state %v, want %v", found.State, tc.state)
			}
		})
	}
	as, bs := ARPProtocolOf(a.S).Stats(), ARPProtocolOf(b.S).Stats()
	if as.RequestsSent != 1 || as.Replies != 1 || bs.Requests != 1 || bs.RepliesSent != 1 {
		t.Errorf("ARP counters: requester %+v, responder %+v", as, bs)
	}
	if as.Malformed+bs.Malformed+as.WrongType+bs.WrongType != 0 {
		t.Errorf("ARP drops: %+v %+v", as, bs)
	}
}

func TestPingMesh(t *testing.T) {
	var w testWire
	nodes := []*testNode{
		newTestNode(t, &w, 1, "10.1.0.1/16", nil),
		newTestNode(t, &w, 2, "10.1.0.2/16", nil),
		newTestNode(t, &w, 3, "10.1.7.3/16", nil),
		newTestNode(t, &w, 4, "10.1.9.4/16", nil),
	}
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			st := ping(t, from, to.Addr.Addr(), 3)
			if st.Received != 3 {
				t.Errorf("%v -> %v: %v", from.Addr, to.Addr, st)
			}
		}
	}
}

// TestTCPTransferIsByteIdentical moves 4 MiB over TCP, with the
// receiver's segments coalesced (the default) and without, and checks
// every byte, that gVisor dropped nothing as malformed or for its
// checksum, and that coalescing, when on, merged most frames.
func TestTCPTransferIsByteIdentical(t *testing.T) {
	for _, noGRO := range []bool{false, true} {
		name := "coalesced"
		if noGRO {
			name = "not coalesced"
		}
		t.Run(name, func(t *testing.T) { tcpTransfer(t, noGRO) })
	}
}

func tcpTransfer(t *testing.T, noGRO bool) {
	var w testWire
	a := newTestNode(t, &w, 1, "10.0.0.1/24", nil)
	b := newTestNode(t, &w, 2, "10.0.0.2/24", func(o *Options) { o.NoGRO = noGRO })
	const size = 4 << 20
	data := make([]byte, size)
	_, _ = rand.Read(data)

	l, err := b.ListenTCP(5001)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil || n != size {
			t.Errorf("received %d bytes, err %v", n, err)
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(b.Addr.Addr(), 5001))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case sum := <-got:
		if sum != sha256.Sum256(data) {
			t.Fatal("sha256 of received data differs")
		}
	case <-ctx.Done():
		t.Fatal("transfer did not finish")
	}
	st := b.S.Stats()
	if n := st.IP.MalformedPacketsReceived.Value(); n != 0 {
		t.Errorf("%d packets dropped as malformed", n)
	}
	if n := st.TCP.ChecksumErrors.Value(); n != 0 {
		t.Errorf("%d segments dropped for their checksum", n)
	}
	// Every frame but an ARP one or two is a TCP segment.
	frames, packets := b.Endpoint.Stats().RxDelivered, st.IP.PacketsReceived.Value()
	if merged := packets*2 < frames; merged == noGRO {
		t.Errorf("%d frames reached gVisor as %d IPv4 packets (coalescing on: %v)", frames, packets, !noGRO)
	}
}

// udpSocket opens a gVisor UDP endpoint on s bound to port.
func udpSocket(t *testing.T, s *gvstack.Stack, port uint16) (tcpip.Endpoint, *waiter.Queue) {
	t.Helper()
	var wq waiter.Queue
	ep, e := s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if e != nil {
		t.Fatal(e)
	}
	t.Cleanup(ep.Close)
	if port != 0 {
		if e := ep.Bind(tcpip.FullAddress{Port: port}); e != nil {
			t.Fatal(e)
		}
	}
	return ep, &wq
}

// udpRecv waits for one datagram on ep.
func udpRecv(t *testing.T, ep tcpip.Endpoint, wq *waiter.Queue) []byte {
	t.Helper()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	deadline := time.After(5 * time.Second)
	for {
		var buf bytes.Buffer
		if _, e := ep.Read(&buf, tcpip.ReadOptions{}); e == nil {
			return buf.Bytes()
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("no datagram arrived")
		}
	}
}

func TestBroadcastAndMulticastMapping(t *testing.T) {
	var w testWire
	a := newTestNode(t, &w, 1, "10.0.0.1/24", nil)
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)
	group := netip.MustParseAddr("239.129.2.3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.JoinGroup(ctx, group); err != nil {
		t.Fatal(err)
	}
	// Hand-derived from RFC 4391 section 4: QPN 0xFFFFFF; MGID ff12:401b,
	// P_Key 0xffff, zeros, then the group's low 28 bits 0x0f810203.
	wantGroup := []byte{
		0x00, 0xff, 0xff, 0xff,
		0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x0f, 0x81, 0x02, 0x03,
	}
	// The broadcast group: ff12:401b:ffff::ffff:ffff.
	wantBcast := []byte{
		0x00, 0xff, 0xff, 0xff,
		0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
	}
	if got, ok := b.port.joinedAddr(group); !ok || !bytes.Equal(got, wantGroup) {
		t.Fatalf("link join for %v: %x (joined %v), want %x", group, got, ok, wantGroup)
	}
	waitFor(t, "all-hosts join", func() bool {
		_, ok := b.port.joinedAddr(netip.MustParseAddr("224.0.0.1"))
		return ok
	})

	tests := []struct {
		name string
		dst  netip.Addr
		want []byte
	}{
		{"subnet broadcast (gVisor hands ff:ff:ff:ff:ff:ff)", netip.MustParseAddr("10.0.0.255"), wantBcast},
		{"limited broadcast", netip.MustParseAddr("255.255.255.255"), wantBcast},
		{"IPv4 group", group, wantGroup},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := uint16(7000 + i)
			rx, rwq := udpSocket(t, b.S, port)
			_ = rx
			tx, _ := udpSocket(t, a.S, 0)
			tx.SocketOptions().SetBroadcast(true)
			a.port.txMu.Lock()
			a.port.txDst = nil
			a.port.txMu.Unlock()
			a.port.recording.Store(true)
			defer a.port.recording.Store(false)
			msg := []byte("hello " + tc.name)
			var r bytes.Reader
			r.Reset(msg)
			to := tcpip.FullAddress{Addr: addrToTCPIP(tc.dst), Port: port}
			if _, e := tx.Write(&r, tcpip.WriteOptions{To: &to}); e != nil {
				t.Fatalf("send to %v: %v", tc.dst, e)
			}
			if got := udpRecv(t, rx, rwq); !bytes.Equal(got, msg) {
				t.Fatalf("got %q", got)
			}
			a.port.txMu.Lock()
			defer a.port.txMu.Unlock()
			found := false
			for _, d := range a.port.txDst {
				found = found || bytes.Equal(d, tc.want)
			}
			if !found {
				t.Errorf("no frame sent to %x; sent to %x", tc.want, a.port.txDst)
			}
		})
	}
	if got := a.Endpoint.Stats().TxBadAddr; got != 0 {
		t.Errorf("TxBadAddr %d", got)
	}
	if err := b.LeaveGroup(ctx, group); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.port.joinedAddr(group); ok {
		t.Error("link still joined after leave")
	}
	if err := b.Endpoint.LeaveGroup(ctx, group); err == nil {
		t.Error("second leave succeeded")
	}
}

func TestLinkDstMapping(t *testing.T) {
	var w testWire
	p := newTestPort(t, &w, 1)
	t.Cleanup(func() { p.shutdown(t) })
	ep, err := NewEndpoint(p.dev, EndpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ipv4Pkt := func(dst [4]byte) []byte {
		h := make([]byte, 20)
		h[0] = 0x45
		copy(h[16:], dst[:])
		return h
	}
	ipv6Pkt := func(dst [16]byte) []byte {
		h := make([]byte, 40)
		h[0] = 0x60
		copy(h[24:], dst[:])
		return h
	}
	peer := []byte{0x80, 0, 0x12, 0x34, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xc9, 0x02, 0, 0x20, 0xb4, 0xdd}
	tests := []struct {
		name   string
		remote string
		proto  tcpip.NetworkProtocolNumber
		nh     []byte
		want   []byte // nil: refused
	}{
		{"IPoIB unicast passes", string(peer), ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 2}), peer},
		{"Ethernet broadcast", "\xff\xff\xff\xff\xff\xff", ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 255}),
			[]byte{0, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{"IPv4 group, 23 bits agree", "\x01\x00\x5e\x01\x02\x03", ipv4.ProtocolNumber, ipv4Pkt([4]byte{239, 129, 2, 3}),
			[]byte{0, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x0f, 0x81, 0x02, 0x03}},
		{"IGMPv3 report group", "\x01\x00\x5e\x00\x00\x16", ipv4.ProtocolNumber, ipv4Pkt([4]byte{224, 0, 0, 22}),
			[]byte{0, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x16}},
		{"IPv4 group disagreeing with the Ethernet bits", "\x01\x00\x5e\x01\x02\x03", ipv4.ProtocolNumber, ipv4Pkt([4]byte{239, 1, 2, 4}), nil},
		{"Ethernet group for a unicast IP", "\x01\x00\x5e\x00\x00\x02", ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 2}), nil},
		{"IPv6 group", "\x33\x33\x00\x00\x00\x01", 0x86dd, ipv6Pkt([16]byte{0xff, 0x02, 15: 1}),
			// ff12:601b:ffff, then the group's low 80 bits (RFC 4391 section 4).
			[]byte{0, 0xff, 0xff, 0xff, 0xff, 0x12, 0x60, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"Ethernet unicast", "\x02\x00\x00\x00\x00\x01", ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 2}), nil},
		{"no address", "", ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 2}), nil},
		{"odd length", "\x01\x02\x03", ipv4.ProtocolNumber, ipv4Pkt([4]byte{10, 0, 0, 2}), nil},
		{"IPv4 group, header missing", "\x01\x00\x5e\x01\x02\x03", ipv4.ProtocolNumber, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{ReserveHeaderBytes: 64})
			defer pkt.DecRef()
			if tc.nh != nil {
				copy(pkt.NetworkHeader().Push(len(tc.nh)), tc.nh)
			}
			pkt.NetworkProtocolNumber = tc.proto
			pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(tc.remote)
			var dst [maxLinkAddrLen]byte
			n, ok := ep.linkDst(pkt, &dst)
			if tc.want == nil {
				if ok {
					t.Fatalf("mapped to %x, want refusal", dst[:n])
				}
				return
			}
			if !ok || !bytes.Equal(dst[:n], tc.want) {
				t.Fatalf("mapped to %x (ok %v), want %x", dst[:n], ok, tc.want)
			}
		})
	}
}

// arpFrame builds an IPoIB ARP packet for the tests from its fields.
func arpFrame(op uint16, sha []byte, spa [4]byte, tha []byte, tpa [4]byte) []byte {
	a := arp.Packet{Op: op, SenderIP: spa, TargetIP: tpa}
	copy(a.SenderHW[:], sha)
	copy(a.TargetHW[:], tha)
	return a.AppendTo(nil)
}

func TestARPDropsAndCounts(t *testing.T) {
	var w testWire
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)
	stranger := ipoib.Addr{QPN: 0x99, GID: ib.GID{0xfe, 0x80, 15: 0x99}}
	var sha [20]byte
	_ = stranger.Encode(sha[:])
	bcast := ipoib.BroadcastAddr(testPKey)
	var bcastRaw [20]byte
	_ = bcast.Encode(bcastRaw[:])
	ethARP := []byte{ // RFC 826 Ethernet request: htype 1, 6-byte addresses
		0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
		0x02, 0, 0, 0, 0, 1, 10, 0, 0, 9,
		0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
	}
	good := arpFrame(arp.Request, sha[:], [4]byte{10, 0, 0, 9}, nil, [4]byte{10, 0, 0, 2})
	badHLen := append([]byte(nil), good...)
	badHLen[4] = 6

	tests := []struct {
		name  string
		frame []byte
		check func(ARPStats) uint64
	}{
		{"request for a non-local address", arpFrame(arp.Request, sha[:], [4]byte{10, 0, 0, 9}, nil, [4]byte{10, 0, 0, 77}),
			func(s ARPStats) uint64 { return s.NotForUs }},
		{"truncated", good[:40], func(s ARPStats) uint64 { return s.Malformed }},
		{"fixed part only", good[:8], func(s ARPStats) uint64 { return s.Malformed }},
		{"Ethernet ARP", ethARP, func(s ARPStats) uint64 { return s.WrongType }},
		{"hardware length 6 under type 32", badHLen, func(s ARPStats) uint64 { return s.Malformed }},
		{"multicast sender", arpFrame(arp.Request, bcastRaw[:], [4]byte{10, 0, 0, 9}, nil, [4]byte{10, 0, 0, 2}),
			func(s ARPStats) uint64 { return s.Malformed }},
		{"broadcast sender IP", arpFrame(arp.Reply, sha[:], [4]byte{255, 255, 255, 255}, nil, [4]byte{10, 0, 0, 2}),
			func(s ARPStats) uint64 { return s.Malformed }},
		{"looped own request", arpFrame(arp.Request, b.port.raw, [4]byte{10, 0, 0, 2}, nil, [4]byte{10, 0, 0, 2}),
			func(s ARPStats) uint64 { return s.Looped }},
		{"unknown opcode", arpFrame(8, sha[:], [4]byte{10, 0, 0, 9}, nil, [4]byte{10, 0, 0, 2}),
			func(s ARPStats) uint64 { return s.UnknownOp }},
	}
	proto := ARPProtocolOf(b.S)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := proto.Stats()
			txBefore := b.Endpoint.Stats().TxQueued
			b.port.inject(stranger, bcast, arp.EtherType, tc.frame)
			// Received moves before the reason's counter does; wait for
			// the frame to be counted, then give the handler time to
			// finish counting it (a wrong reason shows as a timeout with
			// the counters in the message below).
			waitFor(t, "ARP counted", func() bool { return proto.Stats().Received > before.Received })
			deadline := time.Now().Add(2 * time.Second)
			for tc.check(proto.Stats()) == tc.check(before) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			after := proto.Stats()
			if tc.check(after) != tc.check(before)+1 {
				t.Errorf("counter did not move: before %+v after %+v", before, after)
			}
			if after.RepliesSent != before.RepliesSent || b.Endpoint.Stats().TxQueued != txBefore {
				t.Errorf("answered a frame it should have dropped")
			}
		})
	}
	// The neighbour cache learnt nothing from all that.
	ns, err := b.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 0 {
		t.Errorf("neighbour entries from dropped ARP: %+v", ns)
	}
}

func TestTxQueueFullDropsAndCounts(t *testing.T) {
	// A device whose loop never runs: the transmit bottom half cannot
	// drain, so the ring fills.
	var w testWire
	p := newTestPort(t, &w, 1)
	t.Cleanup(func() { p.shutdown(t) })
	p.sl.stop()
	<-p.sl.done
	const qlen = 8
	ep, err := NewEndpoint(p.dev, EndpointOptions{TxQueueLen: qlen})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		n        int
		wantSent int
		wantFull uint64
	}{
		{"fills the queue", qlen - 2, qlen - 2, 0},
		{"overflows", 5, 2, 3},
		{"full", 3, 0, 6},
	}
	var held []*gvstack.PacketBuffer
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pkts gvstack.PacketBufferList
			for i := range tc.n {
				pkt := seqPacket(p, uint32(i))
				held = append(held, pkt.IncRef())
				pkts.PushBack(pkt)
			}
			n, e := ep.WritePackets(pkts)
			pkts.Reset()
			if n != tc.wantSent {
				t.Errorf("queued %d, want %d", n, tc.wantSent)
			}
			if tc.wantSent < tc.n {
				if _, ok := e.(*tcpip.ErrNoBufferSpace); !ok {
					t.Errorf("error %v, want no buffer space", e)
				}
			}
			if got := ep.Stats().TxQueueFull; got != tc.wantFull {
				t.Errorf("TxQueueFull %d, want %d", got, tc.wantFull)
			}
		})
	}
	// Restart the loop so Close can release the queue and shutdown works.
	ctx, cancel := context.WithCancel(context.Background())
	p.sl.stop, p.sl.done = cancel, make(chan struct{})
	go func() { defer close(p.sl.done); _ = p.loop.Run(ctx) }()
	ep.Close()
	waitFor(t, "queue released", func() bool {
		for _, pkt := range held {
			if pkt.ReadRefs() != 1 {
				return false
			}
		}
		return true
	})
	for _, pkt := range held {
		pkt.DecRef()
	}
	if st := ep.Stats(); st.TxQueued != qlen || st.TxSent != 0 {
		t.Errorf("stats after close: %+v", st)
	}
}

// seqPacket is a packet for the test port's own address whose last 4
// bytes are seq, so the order frames leave in can be read off the wire.
func seqPacket(p *testPort, seq uint32) *gvstack.PacketBuffer {
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		ReserveHeaderBytes: 64, Payload: buffer.MakeWithData(binary.BigEndian.AppendUint32(nil, seq)),
	})
	copy(pkt.NetworkHeader().Push(20), []byte{0x45})
	pkt.NetworkProtocolNumber = ipv4.ProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(p.raw)
	return pkt
}

// writeSeq hands the endpoint packets first..first+n-1 in batches of
// batch and returns how many it queued.
func writeSeq(ep *Endpoint, p *testPort, first uint32, n, batch int) int {
	queued := 0
	for i := 0; i < n; i += batch {
		var pkts gvstack.PacketBufferList
		for j := i; j < min(i+batch, n); j++ {
			pkts.PushBack(seqPacket(p, first+uint32(j)))
		}
		k, _ := ep.WritePackets(pkts)
		pkts.DecRef()
		queued += k
	}
	return queued
}

// sentSeqs returns the sequence numbers of the frames the port sent.
func sentSeqs(p *testPort) []uint32 {
	p.txMu.Lock()
	defer p.txMu.Unlock()
	out := make([]uint32, len(p.txEnd))
	for i, b := range p.txEnd {
		out[i] = binary.BigEndian.Uint32(b)
	}
	return out
}

// TestTxQueueGrows fills the transmit queue past its first size while
// the loop cannot drain it: the ring grows to the bound, refuses only
// beyond it, and what it held leaves in the order it came.
func TestTxQueueGrows(t *testing.T) {
	var w testWire
	p := newTestPort(t, &w, 1)
	t.Cleanup(func() { p.shutdown(t) })
	p.recording.Store(true)
	p.sl.stop()
	<-p.sl.done
	const qlen = 3*txQueueStart + 5 // two doublings, the last one cut to the bound
	ep, err := NewEndpoint(p.dev, EndpointOptions{TxQueueLen: qlen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Close)
	if n := writeSeq(ep, p, 0, qlen+1, 7); n != qlen {
		t.Fatalf("queued %d of %d, want the bound %d", n, qlen+1, qlen)
	}
	if st := ep.Stats(); st.TxQueueFull != 1 || st.TxQueued != qlen {
		t.Fatalf("stats %+v, want %d queued and 1 refused", st, qlen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.sl.stop, p.sl.done = cancel, make(chan struct{})
	go func() { defer close(p.sl.done); _ = p.loop.Run(ctx) }()
	waitFor(t, "every queued packet sent", func() bool { return len(sentSeqs(p)) == qlen })
	for i, s := range sentSeqs(p) {
		if s != uint32(i) {
			t.Fatalf("frame %d carries packet %d: the queue reordered", i, s)
		}
	}
}

// TestTxQueueGrowsWhileDraining has four goroutines write at once to an
// endpoint whose loop is draining, so that the queue grows while the
// transmit bottom half holds slots it claimed: every packet leaves once,
// each writer's in its order. They write fewer packets in all than the
// bound, so none may be refused however slowly the loop drains.
func TestTxQueueGrowsWhileDraining(t *testing.T) {
	var w testWire
	p := newTestPort(t, &w, 1)
	t.Cleanup(func() { p.shutdown(t) })
	p.recording.Store(true)
	ep, err := NewEndpoint(p.dev, EndpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Close)
	const writers, each = 4, (DefaultTxQueueLen - 1) / 4
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeSeq(ep, p, uint32(i)<<24, each, 64)
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for len(sentSeqs(p)) < writers*each {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d packets sent; endpoint %+v", len(sentSeqs(p)), writers*each, ep.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	next := make([]uint32, writers)
	for _, s := range sentSeqs(p) {
		wi, n := s>>24, s&0xFFFFFF
		if n != next[wi] {
			t.Fatalf("writer %d's packet %d left after %d: lost or reordered", wi, n, next[wi])
		}
		next[wi]++
	}
	if st := ep.Stats(); st.TxQueueFull != 0 {
		t.Errorf("%d packets refused under the default bound", st.TxQueueFull)
	}
	ep.txMu.Lock()
	size := len(ep.txq)
	ep.txMu.Unlock()
	t.Logf("the queue grew to %d slots", size)
}

func TestCloseStopsDelivery(t *testing.T) {
	var w testWire
	a := newTestNode(t, &w, 1, "10.0.0.1/24", nil)
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)
	if st := ping(t, a, b.Addr.Addr(), 2); st.Received != 2 {
		t.Fatalf("ping before close: %v", st)
	}
	delivered := b.Endpoint.Stats().RxDelivered
	b.Endpoint.Close()
	if b.Endpoint.IsAttached() {
		t.Error("still attached after Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := Ping(ctx, a.S, b.Addr.Addr(), 3, time.Millisecond, 8)
	if err != nil {
		t.Fatal(err)
	}
	if st.Received != 0 || st.Loss != 1 {
		t.Errorf("ping after close: %v", st)
	}
	if got := b.Endpoint.Stats().RxDelivered; got != delivered {
		t.Errorf("%d frames delivered after close", got-delivered)
	}
	dropped := b.Endpoint.Stats().RxDropped + b.port.dev.Stats().Load(netdev.RxNoReceiver)
	if dropped < 3 {
		t.Errorf("%d frames counted as dropped after close, want 3", dropped)
	}
	if _, e := b.Endpoint.WritePackets(gvstack.PacketBufferList{}); e != nil {
		t.Errorf("empty write: %v", e)
	}
}

func TestNewStackRejectsBadOptions(t *testing.T) {
	var w testWire
	p := newTestPort(t, &w, 1)
	t.Cleanup(func() { p.shutdown(t) })
	tests := []struct {
		name string
		opts Options
	}{
		{"gateway without an address", Options{Gateway: netip.MustParseAddr("10.0.0.1")}},
		{"IPv6 address", Options{Addr: netip.MustParsePrefix("fd00::1/64")}},
		{"gateway outside the subnet", Options{Addr: netip.MustParsePrefix("10.0.0.1/24"), Gateway: netip.MustParseAddr("10.0.1.1")}},
		{"pcap on a bad writer", Options{Addr: netip.MustParsePrefix("10.0.0.1/24"), Pcap: failWriter{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := NewStack(p.dev, tc.opts); err == nil {
				s.Close()
				t.Fatal("accepted")
			}
		})
	}
	if _, err := Ping(context.Background(), nil, netip.MustParseAddr("::1"), 1, 0, 8); err == nil {
		t.Error("Ping accepted an IPv6 destination")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestGatewayRoute(t *testing.T) {
	// B is the gateway for A: a ping to an off-link address is resolved
	// to B's link address and reaches B's link.
	var w testWire
	a := newTestNode(t, &w, 1, "10.0.0.1/24", func(o *Options) { o.Gateway = netip.MustParseAddr("10.0.0.2") })
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = Ping(ctx, a.S, netip.MustParseAddr("192.0.2.7"), 1, 0, 8)
	}()
	waitFor(t, "gateway resolved", func() bool {
		ns, _ := a.Neighbors()
		for _, n := range ns {
			if n.Addr == b.Addr.Addr() && bytes.Equal(n.LinkAddr, b.port.raw) {
				return true
			}
		}
		return false
	})
	cancel()
	wg.Wait()
}
