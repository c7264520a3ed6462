package main

// The ways in that `ipoibd up` opens for ordinary programs besides the Go
// API: --forward, --serve, --socks5 and --tun. They start once the
// interface is up and stop before it goes down.

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd"
)

// waysOptions are up's flags for the ways in.
type waysOptions struct {
	forwards forwardList
	serves   forwardList
	socks5   string
	tun      string
}

// register adds the ways' flags to up's flag set.
func (w *waysOptions) register(fs *flag.FlagSet) {
	w.serves.serve = true
	fs.Var(&w.forwards, "forward", "carry a kernel listener's connections onto the link: tcp:LISTEN=TARGET or udp:LISTEN=TARGET, e.g. tcp:127.0.0.1:8022=10.66.0.1:22 (repeatable)")
	fs.Var(&w.serves, "serve", "carry connections to the IPoIB address to a kernel service: tcp:LISTEN=TARGET or udp:..., e.g. tcp:0.0.0.0:80=127.0.0.1:8080 (repeatable)")
	fs.Func("socks5", "serve SOCKS5 CONNECT on this kernel address (e.g. 127.0.0.1:1080) onto the link", func(v string) error {
		if _, port, err := net.SplitHostPort(v); err != nil || checkPort(port, true) != nil {
			return fmt.Errorf("%q: want HOST:PORT, e.g. 127.0.0.1:1080", v)
		}
		w.socks5 = v
		return nil
	})
	fs.Func("tun", "create a kernel TUN interface of this name carrying the link's address (needs CAP_NET_ADMIN)", func(v string) error {
		if len(v) < 1 || len(v) >= unix.IFNAMSIZ || strings.ContainsAny(v, "/: \t\n") || v == "." || v == ".." {
			return fmt.Errorf("%q: an interface name has 1 to %d characters and no '/', ':' or spaces", v, unix.IFNAMSIZ-1)
		}
		w.tun = v
		return nil
	})
}

// way is one running way in.
type way interface {
	String() string
	Close()
}

// runningWays are the ways an `up` opened, closed in reverse order.
type runningWays []way

// startWays opens the ways in on ifc, printing a line for each to out. On
// failure it closes those already open.
func startWays(w waysOptions, ifc *ipoibd.Interface, out io.Writer, log *slog.Logger) (runningWays, error) {
	var ws runningWays
	fail := func(err error) (runningWays, error) {
		ws.Close()
		return nil, err
	}
	if w.tun != "" {
		t, err := startTUN(w.tun, ifc, log)
		if err != nil {
			return fail(err)
		}
		ws = append(ws, t)
	}
	for _, f := range append(append([]forwardSpec(nil), w.forwards.specs...), w.serves.specs...) {
		fw, err := startForward(f, ifc, log)
		if err != nil {
			return fail(err)
		}
		ws = append(ws, fw)
	}
	if w.socks5 != "" {
		s, err := startSOCKS5(w.socks5, ifc, log)
		if err != nil {
			return fail(err)
		}
		ws = append(ws, s)
	}
	for _, x := range ws {
		fmt.Fprintf(out, "%s: %s\n", ifc.Name(), x)
	}
	return ws, nil
}

// Close closes the ways, the last opened first.
func (ws runningWays) Close() {
	for i := len(ws) - 1; i >= 0; i-- {
		ws[i].Close()
	}
}
