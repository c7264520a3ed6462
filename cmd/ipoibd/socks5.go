package main

// --socks5: a SOCKS5 server (RFC 1928) on a kernel address whose CONNECT
// requests are dialed on the IPoIB link, so curl --socks5, ssh's
// ProxyCommand and browsers reach IPoIB hosts. The protocol is
// github.com/armon/go-socks5's; this file gives it the link as its dialer
// and keeps track of its connections so that the daemon's exit ends them.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	socks5 "github.com/armon/go-socks5"

	"github.com/ipoibd/ipoibd"
)

// socksServer is a running --socks5.
type socksServer struct {
	ln    net.Listener
	srv   *socks5.Server
	log   *slog.Logger
	conns connSet
	wg    sync.WaitGroup
}

// startSOCKS5 listens on the kernel address addr and serves SOCKS5
// CONNECT, without authentication, onto ifc's link. BIND and UDP
// ASSOCIATE are refused with the reply RFC 1928 has for them.
func startSOCKS5(addr string, ifc *ipoibd.Interface, log *slog.Logger) (*socksServer, error) {
	log = log.With("way", "socks5")
	srv, err := socks5.New(&socks5.Config{
		Rules: &socks5.PermitCommand{EnableConnect: true},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ifc.DialContext(ctx, network, addr)
		},
		// The library logs each failed request; they are the client's
		// business, so they go out at debug level.
		Logger: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	})
	if err != nil {
		return nil, fmt.Errorf("--socks5 %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--socks5 %s: %w", addr, err)
	}
	s := &socksServer{ln: ln, srv: srv, log: log}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *socksServer) serve() {
	defer s.wg.Done()
	acceptLoop(s.ln, &s.conns, &s.wg, s.log, func(c net.Conn) {
		if err := s.srv.ServeConn(c); err != nil {
			s.log.Debug("SOCKS5 request ended", "from", c.RemoteAddr().String(), "err", err)
		}
		c.Close()
	})
}

// Addr is the address the server listens on.
func (s *socksServer) Addr() net.Addr { return s.ln.Addr() }

// Close stops listening, ends the open connections and waits for them.
// The connections dialed on the link close as the library sees their
// partners go.
func (s *socksServer) Close() {
	s.conns.closeAll()
	s.ln.Close()
	s.wg.Wait()
}

// String describes the server for up's progress lines.
func (s *socksServer) String() string { return fmt.Sprintf("socks5 kernel %s -> IPoIB", s.Addr()) }
