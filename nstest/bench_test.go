package nstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib/udp"
	"github.com/ipoibd/ipoibd/stack"
)

// hostSeq names the in-process IPoIB interfaces apart (netdev names are
// unique per process).
var hostSeq atomic.Int32

// benchChunk is what one TCP throughput iteration moves.
const benchChunk = 1 << 20

// udpHost is an IPoIB interface on a udp device inside a namespace, in
// this process: its loop's thread entered the namespace before the device
// opened its sockets.
type udpHost struct {
	ifc  *ipoibd.Interface
	st   *stack.Stack
	addr netip.Addr
}

// newUDPHost brings up IPoIB with address addr on udp:eth0 in ns, using
// GID index gid (0: link-local, IPv6; 1: IPv4-mapped, IPv4), with receive
// coalescing unless noGRO.
func newUDPHost(tb testing.TB, ns string, addr netip.Prefix, gid int, noGRO bool) *udpHost {
	tb.Helper()
	loop, err := aio.New(aio.WithName(ns))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	entered, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread is in ns for good
		if err := enterNetns(ns); err != nil {
			entered <- err
			return
		}
		entered <- nil
		_ = loop.Run(ctx)
	}()
	if err := <-entered; err != nil {
		tb.Fatal(err)
	}
	h := &udpHost{addr: addr.Addr()}
	tb.Cleanup(func() {
		if h.ifc != nil {
			h.ifc.Close()
		}
		stop()
		<-done
		loop.Close()
	})
	// The interface runs on the namespace's loop, so the udp device opens
	// its sockets there.
	octx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h.ifc, err = ipoibd.Open(octx, ipoibd.Config{
		Device: udp.DriverName + ":eth0", Name: fmt.Sprintf("ib%d", hostSeq.Add(1)), GIDIndex: gid, Addr: addr,
		Tuning: ipoibd.Tuning{Loop: loop, NoGRO: noGRO},
	}); err != nil {
		tb.Fatalf("%s: %v", ns, err)
	}
	h.st = h.ifc.Stack()
	return h
}

// ipoibPair brings up two udp IPoIB hosts on tp's first two namespaces.
func ipoibPair(b *testing.B, tp *topo, gid int, noGRO bool) (*udpHost, *udpHost) {
	a := newUDPHost(b, tp.hosts[0], netip.MustParsePrefix("10.66.0.1/24"), gid, noGRO)
	c := newUDPHost(b, tp.hosts[1], netip.MustParsePrefix("10.66.0.2/24"), gid, noGRO)
	return a, c
}

// BenchmarkVethTCP compares, in one run and over the same veth pair and
// bridge, TCP through IPoIB on two udp devices (gVisor TCP, IPoIB, RoCEv2
// with ICRC, raw and UDP sockets) with kernel TCP between the two
// namespaces, at the veth default MTU (1500: an IB MTU of 1024, so IPoIB
// packets of 1020 bytes) and at 9000 (IB MTU 4096, IPoIB MTU 4092), and
// IPoIB over IPv4 once more without receive coalescing (GRO). The ratio
// of the MB/s figures is the one that matters.
func BenchmarkVethTCP(b *testing.B) {
	for _, mtu := range []int{1500, 9000} {
		b.Run(fmt.Sprintf("mtu%d", mtu), func(b *testing.B) { vethTCP(b, mtu) })
	}
}

// vethTCP runs the comparison on veths of the given MTU.
func vethTCP(b *testing.B, mtu int) {
	tp := newTopo(b, 2, mtu)
	for _, fam := range []struct {
		name  string
		gid   int
		noGRO bool
	}{{"ipoib-udp-ipv4", 1, false}, {"ipoib-udp-ipv4-nogro", 1, true}, {"ipoib-udp-ipv6", 0, false}} {
		b.Run(fam.name, func(b *testing.B) {
			h0, h1 := ipoibPair(b, tp, fam.gid, fam.noGRO)
			ln, err := h1.st.ListenTCP(5002)
			w, r := connect(b, ln, err, func() (net.Conn, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return h0.st.DialTCP(ctx, netip.AddrPortFrom(h1.addr, 5002))
			})
			throughput(b, w, r)
			reportCounters(b, h0, h1)
		})
	}
	b.Run("kernel", func(b *testing.B) {
		var ln net.Listener
		err := inNetns(tp.hosts[1], func() (err error) {
			ln, err = net.Listen("tcp4", tp.addrs[1].Addr().String()+":5003")
			return err
		})
		w, r := connect(b, ln, err, func() (w net.Conn, err error) {
			err = inNetns(tp.hosts[0], func() (err error) {
				w, err = net.Dial("tcp4", tp.addrs[1].Addr().String()+":5003")
				return err
			})
			return w, err
		})
		throughput(b, w, r)
	})
}

// connect accepts one connection on ln (which failed to open if lnErr is
// set) while dial connects to it; both ends close when b ends.
func connect(b *testing.B, ln net.Listener, lnErr error, dial func() (net.Conn, error)) (w, r net.Conn) {
	if lnErr != nil {
		b.Fatal(lnErr)
	}
	b.Cleanup(func() { ln.Close() })
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	w, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	if r = <-acc; r == nil {
		b.Fatal("accept failed")
	}
	b.Cleanup(func() { w.Close(); r.Close() })
	return w, r
}

// throughput writes b.N chunks to w and waits until r has read them.
func throughput(b *testing.B, w io.Writer, r io.Reader) {
	chunk := make([]byte, benchChunk)
	done := make(chan int64, 1)
	b.ReportAllocs()
	b.SetBytes(benchChunk)
	b.ResetTimer()
	go func() {
		n, _ := io.CopyBuffer(io.Discard, io.LimitReader(r, int64(b.N)*benchChunk), make([]byte, 64<<10))
		done <- n
	}()
	for range b.N {
		if _, err := w.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-done; n != int64(b.N)*benchChunk {
		b.Fatalf("read %d of %d bytes", n, int64(b.N)*benchChunk)
	}
	b.StopTimer()
}

// reportCounters logs what drops there were on the way, and the
// sender's TCP recovery counters: a throughput figure with losses or
// retransmission timeouts behind it says so.
func reportCounters(b *testing.B, sender, receiver *udpHost) {
	for _, h := range []struct {
		role string
		h    *udpHost
	}{{"sender", sender}, {"receiver", receiver}} {
		st := h.h.ifc.Stats()
		c := st.Driver
		b.Logf("%s: udp device %v; endpoint tx_queue_full %d", h.role, c, st.Endpoint.Count("tx_queue_full"))
		if c.Count("rx_bad_icrc") != 0 || c.Count("rx_malformed") != 0 {
			b.Errorf("bad datagrams on a clean link: %v", c)
		}
	}
	tcp := sender.st.S.Stats().TCP
	b.Logf("sender's TCP: %d segments, %d retransmitted (%d fast retransmits, %d timeouts, %d tail-loss probes, %d spurious recoveries)",
		tcp.SegmentsSent.Value(), tcp.Retransmits.Value(), tcp.FastRetransmit.Value(), tcp.Timeouts.Value(),
		tcp.TLPRecovery.Value(), tcp.SpuriousRecovery.Value())
}

// BenchmarkVethPing compares, in one run, an ICMP echo round trip through
// IPoIB on two udp devices with a kernel ICMP echo (what ping(8) sends,
// from a raw ICMP socket) between the same namespaces over the same veth
// pair. Each op is one echo; p50-us is the median round trip.
func BenchmarkVethPing(b *testing.B) {
	tp := newTopo(b, 2, 0)
	b.Run("ipoib-udp-ipv4", func(b *testing.B) {
		h0, h1 := ipoibPair(b, tp, 1, false)
		ctx := context.Background()
		if st, err := stack.Ping(ctx, h0.st.S, h1.addr, 1, 0, 56); err != nil || st.Received != 1 {
			b.Fatalf("warm-up ping: %v %v", st, err)
		}
		rtts := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			st, err := stack.Ping(ctx, h0.st.S, h1.addr, 1, 0, 56)
			if err != nil || st.Received != 1 {
				b.Fatalf("ping: %v %v", st, err)
			}
			rtts = append(rtts, st.Min)
		}
		b.StopTimer()
		reportP50(b, rtts)
	})
	b.Run("kernel", func(b *testing.B) {
		var c *icmp.PacketConn
		if err := inNetns(tp.hosts[0], func() (err error) {
			c, err = icmp.ListenPacket("ip4:icmp", tp.addrs[0].Addr().String())
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		dst := &net.IPAddr{IP: tp.addrs[1].Addr().AsSlice()}
		id := os.Getpid() & 0xFFFF
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Data: make([]byte, 56)}}
		rbuf := make([]byte, 1500)
		echo := func(seq int) time.Duration {
			msg.Body.(*icmp.Echo).Seq = seq
			wb, err := msg.Marshal(nil)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := c.WriteTo(wb, dst); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				n, _, err := c.ReadFrom(rbuf)
				if err != nil {
					b.Fatalf("echo %d: %v", seq, err)
				}
				m, err := icmp.ParseMessage(1, rbuf[:n])
				if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
					return time.Since(start)
				}
			}
		}
		echo(0)
		rtts := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			rtts = append(rtts, echo((i+1)&0xFFFF))
		}
		b.StopTimer()
		reportP50(b, rtts)
	})
}

// reportP50 reports the median of rtts in microseconds.
func reportP50(b *testing.B, rtts []time.Duration) {
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2].Nanoseconds())/1000, "p50-us")
}
