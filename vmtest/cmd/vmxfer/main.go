// Command vmxfer is a test helper for the vmtest package: it brings up
// its own IPoIB interface (ipoibd.Open, the public API) on an RDMA port
// and moves a TCP stream between two such interfaces, so the two-VM test
// can check that bytes cross the link unchanged and measure throughput
// without adding a command to ipoibd's control socket.
//
//	vmxfer -device rxe0 -addr 10.66.0.11/24 -sink
//	vmxfer -device rxe0 -addr 10.66.0.12/24 -source 10.66.0.11 -bytes 4194304
//	vmxfer -kernel -source 10.66.0.11 -bytes 4194304
//	vmxfer -kernel -sink
//
// With -kernel vmxfer opens no interface and uses the kernel's own
// sockets: a source reaches the link through `ipoibd up --tun`, a sink
// (on port 5001 of every kernel address) is reached through `ipoibd up
// --serve`.
//
// The source sends a deterministic pseudo-random stream (a SHA-256 counter
// sequence), so the sink can check every byte without a second channel.
// Both print one line the host parses:
//
//	VMXFER role=sink bytes=N sha256=HEX ok=true ms=T mbps=R
//
// The sink exits non-zero when the stream differs from what the source
// must have sent.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ipoibd/ipoibd"
)

// port is the TCP port the sink listens on.
const port = 5001

func main() {
	device := flag.String("device", "rxe0", "RDMA device, as NAME (verbs) or DRIVER:NAME")
	gidIndex := flag.Int("gid-index", 0, "index of the port GID the interface uses")
	addr := flag.String("addr", "", "this interface's IPv4 address and prefix")
	sink := flag.Bool("sink", false, "accept one connection and check the stream")
	source := flag.String("source", "", "connect to this address and send the stream")
	n := flag.Int64("bytes", 4<<20, "bytes to send (source) or expect (sink)")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	kernel := flag.Bool("kernel", false, "use kernel sockets instead of an interface of its own")
	flag.Parse()
	var err error
	if *kernel {
		err = runKernel(*sink, *source, *n, *timeout)
	} else {
		err = run(*device, *gidIndex, *addr, *sink, *source, *n, *timeout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmxfer: %v\n", err)
		os.Exit(1)
	}
}

// stream is the pseudo-random byte stream: block i is SHA-256(i), which
// any party can regenerate.
type stream struct {
	i   uint64
	buf []byte
}

// Read fills p from the stream.
func (s *stream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.buf) == 0 {
			var ctr [8]byte
			binary.BigEndian.PutUint64(ctr[:], s.i)
			s.i++
			sum := sha256.Sum256(ctr[:])
			s.buf = sum[:]
		}
		c := copy(p[n:], s.buf)
		s.buf = s.buf[c:]
		n += c
	}
	return n, nil
}

func run(device string, gidIndex int, addr string, sink bool, source string, n int64, timeout time.Duration) error {
	prefix, err := netip.ParsePrefix(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if sink == (source != "") {
		return errors.New("give exactly one of -sink and -source ADDR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !strings.Contains(device, ":") {
		device = "verbs:" + device
	}
	ifc, err := ipoibd.Open(ctx, ipoibd.Config{Device: device, Name: "xfer0", GIDIndex: gidIndex, Addr: prefix})
	if err != nil {
		return fmt.Errorf("open %s: %w", device, err)
	}
	defer ifc.Close()
	fmt.Printf("vmxfer: %s up as %s, MTU %d\n", device, prefix, ifc.MTU())

	return transfer(ctx, sink, source, n, ifc.Listen, ifc.DialContext)
}

// runKernel is run with the kernel's sockets.
func runKernel(sink bool, source string, n int64, timeout time.Duration) error {
	if sink == (source != "") {
		return errors.New("give exactly one of -sink and -source ADDR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	return transfer(ctx, sink, source, n, net.Listen, d.DialContext)
}

// transfer is the sink (listening with listen) or the source (sending to
// source with dial), on the Go API's sockets or the kernel's.
func transfer(ctx context.Context, sink bool, source string, n int64,
	listen func(network, addr string) (net.Listener, error),
	dial func(context.Context, string, string) (net.Conn, error)) error {
	if sink {
		l, err := listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		return runSink(ctx, l, n)
	}
	dst, err := netip.ParseAddr(source)
	if err != nil {
		return fmt.Errorf("-source: %w", err)
	}
	return runSource(ctx, dial, dst, n)
}

func runSink(ctx context.Context, l net.Listener, n int64) error {
	defer l.Close()
	fmt.Println("vmxfer: listening")
	go func() { <-ctx.Done(); l.Close() }()
	c, err := l.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer c.Close()
	start := time.Now()
	h := sha256.New()
	want := &stream{}
	buf, wbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	var got int64
	ok := true
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		k, rerr := c.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			_, _ = want.Read(wbuf[:k])
			if ok && !bytes.Equal(buf[:k], wbuf[:k]) {
				ok = false
				fmt.Printf("vmxfer: stream differs within bytes %d..%d\n", got, got+int64(k))
			}
			got += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read after %d bytes: %w", got, rerr)
		}
	}
	report("sink", got, h.Sum(nil), ok && got == n, time.Since(start))
	// gVisor sends the FIN of Close asynchronously; tearing the stack down
	// at once can lose it and leave the source waiting for it.
	_ = c.Close()
	time.Sleep(300 * time.Millisecond)
	if !ok || got != n {
		return fmt.Errorf("received %d bytes (want %d), identical %v", got, n, ok)
	}
	return nil
}

func runSource(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), dst netip.Addr, n int64) error {
	var c interface {
		io.WriteCloser
		CloseWrite() error
	}
	for {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := dial(dctx, "tcp", netip.AddrPortFrom(dst, port).String())
		cancel()
		if err == nil {
			// A TCP conn half-closes, as *net.TCPConn does.
			c = conn.(interface {
				io.WriteCloser
				CloseWrite() error
			})
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("dial: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer c.Close()
	start := time.Now()
	h := sha256.New()
	w := io.MultiWriter(c, h)
	if _, err := io.CopyBuffer(w, io.LimitReader(&stream{}, n), make([]byte, 64<<10)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	// Wait for the sink to close, so the figure covers delivery.
	_, _ = io.Copy(io.Discard, c.(io.Reader))
	report("source", n, h.Sum(nil), true, time.Since(start))
	return nil
}

// report prints the line the host test parses.
func report(role string, n int64, sum []byte, ok bool, d time.Duration) {
	mbps := float64(n) * 8 / d.Seconds() / 1e6
	fmt.Printf("VMXFER role=%s bytes=%d sha256=%x ok=%v ms=%d mbps=%.2f\n", role, n, sum, ok, d.Milliseconds(), mbps)
}
