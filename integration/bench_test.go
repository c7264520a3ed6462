package integration

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/internal/gvtest"
	"github.com/ipoibd/ipoibd/stack"
)

// benchChunk is what one benchmark iteration moves.
const benchChunk = 1 << 20

// BenchmarkTCPThroughput compares, in one run, gVisor TCP between two
// hosts of the simulated fabric (stack endpoint, netdev, IPoIB driver, sim
// UD delivery with real packets and CRCs) with TCP between two gVisor
// stacks joined by gVisor's own channel endpoints at the same MTU. Each op
// moves 1 MiB over each, in turn, so all see the same machine; the figure
// that matters is the ratio (ratio = IPoIB MB/s ÷ channel MB/s). Two more
// streams run IPoIB without gVisor's software segmentation (GSO) and
// without receive coalescing (GRO), to show what each is worth, and a
// fifth gives each host its own loop (the fabric keeps a third), as two
// daemons would have.
func BenchmarkTCPThroughput(b *testing.B) {
	type variant struct{ noGSO, noGRO, hostLoops bool }
	fabric := func(v variant) *stream {
		e := newEnv(b, star(2))
		e.noGSO, e.noGRO, e.hostLoops = v.noGSO, v.noGRO, v.hostLoops
		e.up(defaults)
		w, r := dialPair(b, e.hosts[0].st.S, e.hosts[1].st.S, e.hosts[1].addr)
		s := newStream(b, w, r)
		s.e = e
		return s
	}
	ipoib, nogso, nogro := fabric(variant{}), fabric(variant{noGSO: true}), fabric(variant{noGRO: true})
	loops := fabric(variant{hostLoops: true})
	sa, sb := gvtest.ChannelPair(b, 2044, netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24"))
	cw, cr := dialPair(b, sa, sb, netip.MustParseAddr("10.0.0.2"))
	channel := newStream(b, cw, cr)
	all := []*stream{ipoib, nogso, nogro, loops, channel}
	for range 8 { // warm all up: windows open, buffers pooled
		for _, s := range all {
			s.chunk()
		}
	}
	for _, s := range all {
		s.spent = 0
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(all)) * benchChunk)
	b.ResetTimer()
	for range b.N {
		for _, s := range all {
			s.chunk()
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchChunk / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(ipoib.spent), "ipoib-MB/s")
	b.ReportMetric(mbps(nogso.spent), "ipoib-nogso-MB/s")
	b.ReportMetric(mbps(nogro.spent), "ipoib-nogro-MB/s")
	b.ReportMetric(mbps(loops.spent), "ipoib-3loops-MB/s")
	b.ReportMetric(mbps(channel.spent), "channel-MB/s")
	b.ReportMetric(channel.spent.Seconds()/ipoib.spent.Seconds(), "ratio")
	b.ReportMetric(channel.spent.Seconds()/nogso.spent.Seconds(), "ratio-nogso")
	b.ReportMetric(channel.spent.Seconds()/nogro.spent.Seconds(), "ratio-nogro")
	b.ReportMetric(channel.spent.Seconds()/loops.spent.Seconds(), "ratio-3loops")
	for _, s := range []struct {
		name string
		s    *stream
	}{{"ipoib", ipoib}, {"ipoib-nogso", nogso}, {"ipoib-nogro", nogro}, {"ipoib-3loops", loops}} {
		s.s.report(s.name)
	}
}

// report logs what was dropped on the way and what the sender's TCP
// retransmitted, so that a slow figure with losses behind it says so.
func (s *stream) report(name string) {
	tcp := s.e.hosts[0].st.S.Stats().TCP
	var full uint64
	for _, h := range s.e.hosts {
		full += h.ifc.Stats().Endpoint.Count("tx_queue_full")
	}
	s.b.Logf("%s: sender's TCP retransmitted %d of %d segments (%d fast retransmits, %d timeouts, %d tail-loss probes, %d spurious recoveries); endpoint queue drops %d; fabric %v",
		name, tcp.Retransmits.Value(), tcp.SegmentsSent.Value(), tcp.FastRetransmit.Value(), tcp.Timeouts.Value(),
		tcp.TLPRecovery.Value(), tcp.SpuriousRecovery.Value(), full, s.e.f.Counters())
}

// stream moves chunks over one TCP connection and adds up the time each
// took from the first byte written to the last byte read.
type stream struct {
	b     *testing.B
	e     *env // the fabric's; nil for the channel pair
	w     io.Writer
	buf   []byte
	got   chan error
	next  chan struct{}
	spent time.Duration
}

func newStream(b *testing.B, w io.Writer, r io.Reader) *stream {
	s := &stream{b: b, w: w, buf: make([]byte, benchChunk), got: make(chan error), next: make(chan struct{})}
	go func() {
		for range s.next {
			_, err := io.CopyN(io.Discard, r, benchChunk)
			s.got <- err
		}
	}()
	b.Cleanup(func() { close(s.next) })
	return s
}

// chunk writes one chunk and waits until the reader has all of it.
func (s *stream) chunk() {
	t0 := time.Now()
	s.next <- struct{}{}
	if _, err := s.w.Write(s.buf); err != nil {
		s.b.Fatal(err)
	}
	if err := <-s.got; err != nil {
		s.b.Fatal(err)
	}
	s.spent += time.Since(t0)
}

// dialPair connects a TCP stream from s to peer (on d).
func dialPair(b *testing.B, s, d *gvstack.Stack, peer netip.Addr) (io.WriteCloser, io.ReadCloser) {
	addr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(peer.As4()), Port: 5002}
	ln, err := gonet.ListenTCP(d, addr, ipv4.ProtocolNumber)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	acc := make(chan io.ReadCloser, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := gonet.DialContextTCP(ctx, s, addr, ipv4.ProtocolNumber)
	if err != nil {
		b.Fatal(err)
	}
	r := <-acc
	if r == nil {
		b.Fatal("accept failed")
	}
	b.Cleanup(func() { w.Close(); r.Close() })
	return w, r
}

// BenchmarkPingRTT compares, in one run, an ICMP echo round trip between
// two hosts of the simulated fabric with one between two gVisor stacks on
// channel endpoints, alternating one ping each per op. The figures are the
// median round trips and their ratio (IPoIB ÷ channel).
func BenchmarkPingRTT(b *testing.B) {
	e := newEnv(b, star(2))
	e.up(defaults)
	sa, _ := gvtest.ChannelPair(b, 2044, netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24"))
	ipoib := pinger{b: b, s: e.hosts[0].st.S, dst: e.hosts[1].addr}
	channel := pinger{b: b, s: sa, dst: netip.MustParseAddr("10.0.0.2")}
	// The first pings resolve the neighbour (and, on the fabric, the path).
	for range 10 {
		ipoib.ping()
		channel.ping()
	}
	ipoib.rtts, channel.rtts = make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ipoib.ping()
		channel.ping()
	}
	b.StopTimer()
	pi, pc := ipoib.p50(), channel.p50()
	b.ReportMetric(float64(pi.Nanoseconds())/1000, "ipoib-p50-us")
	b.ReportMetric(float64(pc.Nanoseconds())/1000, "channel-p50-us")
	b.ReportMetric(float64(pi)/float64(pc), "ratio")
}

// pinger pings one destination through one stack and keeps the RTTs.
type pinger struct {
	b    *testing.B
	s    *gvstack.Stack
	dst  netip.Addr
	rtts []time.Duration
}

func (p *pinger) ping() {
	st, err := stack.Ping(context.Background(), p.s, p.dst, 1, 0, 56)
	if err != nil || st.Received != 1 {
		p.b.Fatalf("ping %v: %v %v", p.dst, st, err)
	}
	p.rtts = append(p.rtts, st.Min)
}

func (p *pinger) p50() time.Duration {
	slices.Sort(p.rtts)
	return p.rtts[len(p.rtts)/2]
}
