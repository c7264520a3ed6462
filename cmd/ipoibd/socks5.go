package main

// --socks5: a SOCKS5 server (RFC 1928) on a kernel address whose CONNECT
// requests are dialed on the IPoIB link, so curl --socks5, ssh's
// ProxyCommand and browsers reach IPoIB hosts. The protocol is
// github.com/armon/go-socks5's; this file gives it the link as its dialer
// and keeps track of its connections so that the daemon's exit ends them.
//
// armon/go-socks5 has had no release since 2016, and the project prefers
// maintained libraries; it stays because no maintained one fits yet. Its
// maintained fork, github.com/things-go/go-socks5, is not available from
// the module proxy the project builds with. tailscale.com/net/socks5 is,
// but at v1.102.5, the newest that builds with the project's Go 1.26, it
// ends a CONNECT as soon as one direction's copy ends, so a client that
// half-closes loses what the destination still sends; it also brings some
// forty tailscale packages into the daemon. armon's keeps half-closes,
// which TestForwardServeSOCKS5 checks. Move to the fork when it can be had.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"

	"github.com/ipoibd/ipoibd"
)

// socksHandshake bounds a client's greeting and request: a connection
// that has not asked for a destination by then is closed. Once the
// destination is dialed the stream has no deadline.
var socksHandshake = 30 * time.Second

// socksServer is a running --socks5.
type socksServer struct {
	ln net.Listener
	// dial opens a connection on the link.
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	log   *slog.Logger
	conns connSet
	wg    sync.WaitGroup
	// ctx ends with Close, cutting dials short.
	ctx    context.Context
	cancel context.CancelFunc
}

// startSOCKS5 listens on the kernel address addr and serves SOCKS5
// CONNECT, without authentication, onto ifc's link. BIND and UDP
// ASSOCIATE are refused with the reply RFC 1928 has for them.
func startSOCKS5(addr string, ifc *ipoibd.Interface, log *slog.Logger) (*socksServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--socks5 %s: %w", addr, err)
	}
	s := newSOCKSServer(ifc.DialContext, log)
	s.ln = ln
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// newSOCKSServer returns a server, not yet listening, whose CONNECTs
// dial with dial.
func newSOCKSServer(dial func(ctx context.Context, network, address string) (net.Conn, error), log *slog.Logger) *socksServer {
	s := &socksServer{dial: dial, log: log.With("way", "socks5")}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *socksServer) serve() {
	defer s.wg.Done()
	acceptLoop(s.ln, &s.conns, &s.wg, s.log, s.serveConn)
}

// serveConn serves one client with a server of its own, whose dialer
// lifts the handshake's deadline from the client's connection once the
// request is read.
func (s *socksServer) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(socksHandshake))
	srv, err := socks5.New(&socks5.Config{
		Rules: &socks5.PermitCommand{EnableConnect: true},
		// The library's context is its own background one; the
		// server's ends with Close.
		Dial: func(_ context.Context, network, addr string) (net.Conn, error) {
			_ = c.SetDeadline(time.Time{})
			ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
			defer cancel()
			return s.dial(ctx, network, addr)
		},
		// The library logs each failed request; they are the client's
		// business, so they go out at debug level.
		Logger: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	})
	if err == nil {
		err = srv.ServeConn(c)
	}
	if err != nil {
		s.log.Debug("SOCKS5 request ended", "from", c.RemoteAddr().String(), "err", err)
	}
}

// Addr is the address the server listens on.
func (s *socksServer) Addr() net.Addr { return s.ln.Addr() }

// Close stops listening, ends the open connections and waits for them.
// The connections dialed on the link close as the library sees their
// partners go.
func (s *socksServer) Close() {
	s.cancel()
	s.conns.closeAll()
	s.ln.Close()
	s.wg.Wait()
}

// String describes the server for up's progress lines.
func (s *socksServer) String() string { return fmt.Sprintf("socks5 kernel %s -> IPoIB", s.Addr()) }
