package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/ipoibd/ipoibd/internal/streamtest"
)

// TestForwardServeSOCKS5 carries kernel sockets across a simulated fabric
// and back: a kernel client on 127.0.0.1 reaches daemon A's --forward (or
// its --socks5), which dials daemon B's IPoIB address, where B's --serve
// hands the connection to a kernel echo server on 127.0.0.1 (or, for
// curl --socks5 where curl is installed, a kernel web server). The bytes
// that come back must be the bytes sent, and each end of stream must pass
// through as a half-close.
func TestForwardServeSOCKS5(t *testing.T) {
	startFabric(t, "ways", 2, nil)
	// Restored after the daemons stop (cleanups run last first).
	old := socksHandshake
	t.Cleanup(func() { socksHandshake = old })
	socksHandshake = 500 * time.Millisecond
	tcpEcho := kernelTCPEcho(t)
	udpEcho := kernelUDPEcho(t)

	blob := make([]byte, 1<<20)
	rand.Read(blob)
	web := kernelHTTP(t, blob)
	b := startDaemon(t, "ways", 1, "10.12.0.2/24",
		"--serve", "tcp:0.0.0.0:7="+tcpEcho, "--serve", "udp::7="+udpEcho, "--serve", "tcp::80="+web)
	a := startDaemon(t, "ways", 0, "10.12.0.1/24",
		"--forward", "tcp:127.0.0.1:0=10.12.0.2:7", "--forward", "udp:127.0.0.1:0=10.12.0.2:7",
		"--socks5", "127.0.0.1:0")
	for _, want := range []string{"serve tcp IPoIB :7 -> " + tcpEcho, "serve udp IPoIB"} {
		if !strings.Contains(b.out.String(), want) {
			t.Errorf("B's progress lacks %q:\n%s", want, b.out.String())
		}
	}
	fwdTCP := a.listening(t, `forward tcp kernel (\S+) -> 10\.12\.0\.2:7`)
	fwdUDP := a.listening(t, `forward udp kernel (\S+) -> 10\.12\.0\.2:7`)
	socks := a.listening(t, `socks5 kernel (\S+) -> IPoIB`)

	t.Run("forward-tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", fwdTCP)
		if err != nil {
			t.Fatal(err)
		}
		streamtest.Check(t, c, 1<<20)
	})
	t.Run("socks5", func(t *testing.T) {
		d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.Dial("tcp", "10.12.0.2:7")
		if err != nil {
			t.Fatal(err)
		}
		streamtest.Check(t, c, 1<<20)
		// Nothing listens on B's port 9: the SOCKS5 reply says so.
		if c, err := d.Dial("tcp", "10.12.0.2:9"); err == nil {
			c.Close()
			t.Error("SOCKS5 CONNECT to a closed port succeeded")
		}
		// A client that never sends its greeting is let go.
		idle, err := net.Dial("tcp", socks)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		idle.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("a silent SOCKS5 client: read %d, %v; want the server to close", n, err)
		}
	})
	t.Run("curl-socks5", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("no curl")
		}
		out := filepath.Join(t.TempDir(), "blob")
		cmd := exec.Command(curl, "--silent", "--show-error", "--fail", "--max-time", "30",
			"--socks5", socks, "--output", out, "http://10.12.0.2/blob")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("curl --socks5 %s: %v\n%s", socks, err, b)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, blob) {
			t.Fatalf("curl fetched %d bytes, not the %d served (or different)", len(got), len(blob))
		}
	})
	t.Run("forward-udp", func(t *testing.T) {
		c, err := net.Dial("udp", fwdUDP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 2000)
		for i := range 5 {
			msg := make([]byte, 100+300*i)
			rand.Read(msg)
			// The first datagram may race B's neighbour resolution;
			// send until the answer comes.
			var n int
			for try := 0; ; try++ {
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				n, err = c.Read(buf)
				if err == nil || try == 10 {
					break
				}
			}
			if err != nil {
				t.Fatalf("datagram %d: no answer: %v", i, err)
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("datagram %d: %d bytes back, not the %d sent", i, n, len(msg))
			}
		}
	})
}

// kernelTCPEcho runs a kernel TCP echo server on 127.0.0.1 that passes
// the client's end of stream back as its own.
func kernelTCPEcho(t *testing.T) string { return tcpEchoOn(t, net.Listen, "127.0.0.1:0") }

// tcpEchoOn runs that echo server on a listener listen opens at addr.
func tcpEchoOn(t *testing.T, listen func(network, address string) (net.Listener, error), addr string) string {
	ln, err := listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return streamtest.Echo(t, ln)
}

// kernelHTTP serves blob at /blob over HTTP on a kernel socket on
// 127.0.0.1.
func kernelHTTP(t *testing.T, blob []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/blob" {
			http.NotFound(w, r)
			return
		}
		w.Write(blob)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// kernelUDPEcho runs a kernel UDP echo server on 127.0.0.1.
func kernelUDPEcho(t *testing.T) string { return udpEchoOn(t, net.ListenPacket, "127.0.0.1:0") }

// udpEchoOn runs a UDP echo server on a socket listen opens at addr.
func udpEchoOn(t *testing.T, listen func(network, address string) (net.PacketConn, error), addr string) string {
	pc, err := listen("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestWaysBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--forward", "sctp:127.0.0.1:1=10.0.0.1:2"}, "want tcp:LISTEN=TARGET"},
		{[]string{"--forward", "tcp:127.0.0.1:1"}, "no '='"},
		{[]string{"--forward", "tcp:127.0.0.1:1=host.example:22"}, "must be an IPv4 address (the link resolves no names)"},
		{[]string{"--forward", "tcp:127.0.0.1:1=0.0.0.0:22"}, "no destination"},
		{[]string{"--forward", "tcp:127.0.0.1:1=10.0.0.1:0"}, `target port "0": want a number from 1 to 65535`},
		{[]string{"--forward", "udp:127.0.0.1:99999=10.0.0.1:7"}, `listen port "99999"`},
		{[]string{"--serve", "tcp:localhost:80=127.0.0.1:8080"}, "listen address \"localhost\" on the IPoIB link must be an IPv4 address"},
		{[]string{"--serve", "tcp::80=:8080"}, "target needs a host"},
		{[]string{"--socks5", "1080"}, `invalid value "1080" for flag -socks5: "1080": want HOST:PORT`},
		{[]string{"--tun", "a-name-far-too-long"}, "an interface name has 1 to 15 characters"},
		{[]string{"--tun", "a/b"}, "no '/'"},
	}
	for _, tt := range tests {
		args := append([]string{"up", "--device", "sim:none/host0", "--addr", "10.0.0.1/24"}, tt.args...)
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want usage error with %q", tt.args, code, stderr, tt.want)
		}
	}
}
