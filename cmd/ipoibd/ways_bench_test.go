package main

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/proxy"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/internal/streamtest"
)

// waysChunk is what one op of BenchmarkWaysIn sends.
const waysChunk = 1 << 20

// BenchmarkWaysIn measures a TCP transfer to a sink on another IPoIB host
// of a simulated fabric by each way in, one process, one fabric:
//
//   - api: a Go program's own Interface dials the sink (the in-process
//     figure the others are held against);
//   - forward: a kernel socket to the daemon's --forward on 127.0.0.1;
//   - socks5: a kernel socket through the daemon's --socks5;
//   - tun: a kernel socket through the daemon's --tun interface, run only
//     as root inside a network namespace of the benchmark's own, which
//     IPOIBD_TEST_IN_NETNS=1 says it is.
//
// Each op sends 1 MiB on one connection in 32 KiB writes, as io.Copy
// makes them (gVisor takes one 1 MiB write at about half the rate),
// after one untimed MiB; x-api is the way's rate over the
// api's in the same run: with -count, against the api's last run, so
// repeat the command rather than -count for ratios.
//
//	IPOIBD_TEST_IN_NETNS=1 unshare --net go test -run '^$' -bench WaysIn -benchtime 100x ./cmd/ipoibd
func BenchmarkWaysIn(b *testing.B) {
	fab, err := ipoibd.NewSimFabric(ipoibd.SimConfig{Name: "waysbench", Hosts: 3})
	if err != nil {
		b.Fatal(err)
	}
	defer fab.Close()
	inNetns := os.Getenv(tunNetnsEnv) != "" && os.Geteuid() == 0
	if inNetns {
		// A fresh namespace's loopback is down; --forward and --socks5
		// listen on it.
		if lo, err := netlink.LinkByName("lo"); err == nil {
			netlink.LinkSetUp(lo)
		}
	}
	open := func(i int, name, addr string) *ipoibd.Interface {
		ifc, err := ipoibd.Open(b.Context(), ipoibd.Config{Device: fab.Device(i), Name: name, Addr: netip.MustParsePrefix(addr)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ifc.Close() })
		return ifc
	}
	sink := open(1, "sink", "10.15.0.2/24")
	api := open(2, "api", "10.15.0.3/24")
	ln, err := sink.Listen("tcp", ":9")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go serveSink(ln)
	args := []string{"--forward", "tcp:127.0.0.1:0=10.15.0.2:9", "--socks5", "127.0.0.1:0"}
	if inNetns {
		args = append(args, "--tun", "ipb0")
	}
	d := startDaemon(b, "waysbench", 0, "10.15.0.1/24", args...)
	fwd := d.listening(b, `forward tcp kernel (\S+) ->`)
	socks, err := proxy.SOCKS5("tcp", d.listening(b, `socks5 kernel (\S+) ->`), nil, proxy.Direct)
	if err != nil {
		b.Fatal(err)
	}
	ways := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"api", func() (net.Conn, error) { return api.Dial("tcp", "10.15.0.2:9") }},
		{"forward", func() (net.Conn, error) { return net.Dial("tcp", fwd) }},
		{"socks5", func() (net.Conn, error) { return socks.Dial("tcp", "10.15.0.2:9") }},
		{"tun", func() (net.Conn, error) { return net.Dial("tcp", "10.15.0.2:9") }},
	}
	rates := map[string]float64{}
	for _, w := range ways {
		b.Run(w.name, func(b *testing.B) {
			if w.name == "tun" && !inNetns {
				b.Skip("the TUN way runs as root in a network namespace of its own: IPOIBD_TEST_IN_NETNS=1 unshare --net go test ...")
			}
			c, err := w.dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, waysChunk)
			// One chunk before the clock starts: ARP, the path and
			// TCP's slow start are not what is measured.
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(waysChunk)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for off := 0; off < len(buf); off += 32 << 10 {
					if _, err := c.Write(buf[off : off+32<<10]); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := c.(closeWriter).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			var got uint64
			if err := binary.Read(c, binary.BigEndian, &got); err != nil {
				b.Fatalf("the sink's count: %v", err)
			}
			b.StopTimer()
			if want := uint64(b.N+1) * waysChunk; got != want {
				b.Fatalf("the sink got %d bytes, not %d", got, want)
			}
			rates[w.name] = float64(b.N*waysChunk) / b.Elapsed().Seconds()
			if w.name != "api" && rates["api"] > 0 {
				b.ReportMetric(rates[w.name]/rates["api"], "x-api")
			}
		})
	}
}

// serveSink reads each connection to its end and answers with the number
// of bytes read.
func serveSink(ln net.Listener) {
	streamtest.AcceptEach(ln, func(c net.Conn) {
		if n, err := io.Copy(io.Discard, c); err == nil {
			binary.Write(c, binary.BigEndian, uint64(n))
		}
	})
}
