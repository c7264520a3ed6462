package stack

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/internal/gvtest"
	"github.com/ipoibd/ipoibd/netdev"
)

// tcpPair is a TCP connection between two stacks with a reader that
// reports how many bytes it has consumed.
type tcpPair struct {
	conn net.Conn
	read chan int
}

// newTCPPair connects dial to listen and starts the reading side.
func newTCPPair(tb testing.TB, listen func() (net.Listener, error), dial func(context.Context) (net.Conn, error)) *tcpPair {
	tb.Helper()
	l, err := listen()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	p := &tcpPair{read: make(chan int, 1024)}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.read <- n
			}
			if err != nil {
				close(p.read)
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.conn, err = dial(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.conn.Close() })
	return p
}

// transfer sends data and returns how long it took to be read.
func (p *tcpPair) transfer(tb testing.TB, data []byte) time.Duration {
	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := p.conn.Write(data); errc <- err }()
	for got := 0; got < len(data); {
		n, ok := <-p.read
		if !ok {
			tb.Fatal("reader stopped")
		}
		got += n
	}
	d := time.Since(start)
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return d
}

// newIPoIBPair joins two stacks by Endpoints over the test wire, each
// device on its own loop or both on one.
func newIPoIBPair(tb testing.TB, oneLoop bool) *tcpPair {
	w := &testWire{oneLoop: oneLoop}
	a := newTestNode(tb, w, 1, "10.0.0.1/24", nil)
	b := newTestNode(tb, w, 2, "10.0.0.2/24", nil)
	return newTCPPair(tb,
		func() (net.Listener, error) { return b.ListenTCP(5001) },
		func(ctx context.Context) (net.Conn, error) {
			return a.DialTCP(ctx, netip.AddrPortFrom(b.Addr.Addr(), 5001))
		})
}

// newChannelPair joins two stacks by gVisor channel endpoints at the
// same MTU, a goroutine per direction copying each packet once into a
// fresh packet buffer, as our endpoint copies once on each side.
func newChannelPair(tb testing.TB) *tcpPair {
	sa, sb := gvtest.ChannelPair(tb, testMTU, netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("10.9.0.2/24"))
	return newTCPPair(tb,
		func() (net.Listener, error) {
			return gonet.ListenTCP(sb, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), Port: 5001}, ipv4.ProtocolNumber)
		},
		func(ctx context.Context) (net.Conn, error) {
			return gonet.DialContextTCP(ctx, sa, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), Port: 5001}, ipv4.ProtocolNumber)
		})
}

// BenchmarkTCPThroughput moves 1 MiB per iteration over each of three
// stack pairs in turn, so all see the same machine conditions: ours
// (Endpoint, netdev, ipoib link, the test wire) with an aio loop per
// device ("ipoib"), ours with both devices on one loop ("ipoib1loop"),
// and gVisor's channel endpoints at the same MTU ("channel"). It reports
// the three rates and the ratios to channel.
func BenchmarkTCPThroughput(b *testing.B) {
	if v := os.Getenv("STACK_BENCH_POLL"); v != "" {
		d, _ := time.ParseDuration(v)
		testPollWindow = d
		defer func() { testPollWindow = 0 }()
	}
	pairs := []*tcpPair{newIPoIBPair(b, false), newIPoIBPair(b, true), newChannelPair(b)}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, p := range pairs { // warm up: ARP, congestion windows
		p.transfer(b, data)
	}
	took := make([]time.Duration, len(pairs))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i, p := range pairs {
			took[i] += p.transfer(b, data)
		}
	}
	b.StopTimer()
	mb := float64(b.N*len(data)) / 1e6
	rate := func(i int) float64 { return mb / took[i].Seconds() }
	b.ReportMetric(rate(0), "ipoib-MB/s")
	b.ReportMetric(rate(1), "ipoib1loop-MB/s")
	b.ReportMetric(rate(2), "channel-MB/s")
	b.ReportMetric(rate(0)/rate(2), "ratio")
	b.ReportMetric(rate(1)/rate(2), "ratio1loop")
}

// BenchmarkEndpointWritePackets measures the transmit path alone:
// WritePackets into the ring and the loop's drain into the device, for
// a 1400-byte packet to a known peer.
func BenchmarkEndpointWritePackets(b *testing.B) {
	var w testWire
	p := newTestPort(b, &w, 1)
	q := newTestPort(b, &w, 2)
	b.Cleanup(func() { p.shutdown(b); q.shutdown(b) })
	// q has no endpoint: its device counts what arrives and frees it.
	ep, err := NewEndpoint(p.dev, EndpointOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer ep.Close()
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{ReserveHeaderBytes: 64, Payload: buffer.MakeWithData(make([]byte, 1380))})
	defer pkt.DecRef()
	copy(pkt.NetworkHeader().Push(20), []byte{0x45})
	pkt.NetworkProtocolNumber = ipv4.ProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(q.raw)
	var list gvstack.PacketBufferList
	list.PushBack(pkt)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for {
			if n, _ := ep.WritePackets(list); n == 1 {
				break
			}
		}
	}
	b.StopTimer()
	waitFor(b, "queue drained", func() bool {
		return p.dev.Stats().Load(netdev.TxOK) >= uint64(b.N)
	})
}
