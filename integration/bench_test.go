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
// stacks joined by gVisor's own channel endpoints at the same MTU. The
// figure that matters is the ratio.
func BenchmarkTCPThroughput(b *testing.B) {
	b.Run("ipoib-sim", func(b *testing.B) {
		e := newEnv(b, star(2))
		e.up(defaults)
		w, r := dialPair(b, e.hosts[0].st.S, e.hosts[1].st.S, e.hosts[1].addr)
		runThroughput(b, w, r)
	})
	b.Run("channel", func(b *testing.B) {
		sa, sb := gvtest.ChannelPair(b, 2044, netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24"))
		w, r := dialPair(b, sa, sb, netip.MustParseAddr("10.0.0.2"))
		runThroughput(b, w, r)
	})
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

// runThroughput writes b.N chunks and waits until they have been read.
func runThroughput(b *testing.B, w io.Writer, r io.Reader) {
	buf := make([]byte, benchChunk)
	done := make(chan int64)
	b.ReportAllocs()
	b.SetBytes(benchChunk)
	b.ResetTimer()
	go func() {
		n, _ := io.CopyN(io.Discard, r, int64(b.N)*benchChunk)
		done <- n
	}()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-done; n != int64(b.N)*benchChunk {
		b.Fatalf("read %d bytes of %d", n, int64(b.N)*benchChunk)
	}
}

// BenchmarkPingRTT compares, in one run, an ICMP echo round trip between
// two hosts of the simulated fabric with one between two gVisor stacks on
// channel endpoints. Each op is one ping; p50-us is the median RTT.
func BenchmarkPingRTT(b *testing.B) {
	b.Run("ipoib-sim", func(b *testing.B) {
		e := newEnv(b, star(2))
		e.up(defaults)
		pingBench(b, e.hosts[0].st.S, e.hosts[1].addr)
	})
	b.Run("channel", func(b *testing.B) {
		sa, _ := gvtest.ChannelPair(b, 2044, netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24"))
		pingBench(b, sa, netip.MustParseAddr("10.0.0.2"))
	})
}

func pingBench(b *testing.B, s *gvstack.Stack, dst netip.Addr) {
	ctx := context.Background()
	// The first ping resolves the neighbour (and, on the fabric, the path).
	if st, err := stack.Ping(ctx, s, dst, 1, 0, 56); err != nil || st.Received != 1 {
		b.Fatalf("warm-up ping: %v %v", st, err)
	}
	rtts := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		st, err := stack.Ping(ctx, s, dst, 1, 0, 56)
		if err != nil || st.Received != 1 {
			b.Fatalf("ping: %v %v", st, err)
		}
		rtts = append(rtts, st.Min)
	}
	b.StopTimer()
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2].Nanoseconds())/1000, "p50-us")
}
