package main

// The ways in for kernel sockets: --forward carries connections made to a
// kernel listener onto the IPoIB link, --serve carries connections made to
// the IPoIB address to a kernel service. Both are a listener on one side
// and a dialer on the other, with the bytes copied between them; TCP keeps
// its half-closes, UDP keeps one session per client address.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipoibd/ipoibd"
)

// forwardSpec is one --forward or --serve: NETWORK:LISTEN=TARGET.
type forwardSpec struct {
	network string // "tcp" or "udp"
	listen  string // host:port to listen on
	target  string // host:port to dial
	serve   bool   // listen on the IPoIB link, dial the kernel
}

func (f forwardSpec) flag() string {
	if f.serve {
		return "--serve"
	}
	return "--forward"
}

// parseForward reads a --forward (serve false) or --serve value,
// "tcp:127.0.0.1:8022=10.66.0.1:22". The side on the link must be an IPv4
// literal, as the link resolves no names; the kernel side may name a host.
func parseForward(s string, serve bool) (forwardSpec, error) {
	f := forwardSpec{serve: serve}
	bad := func(why string) (forwardSpec, error) {
		return f, fmt.Errorf("%s %q: %s", f.flag(), s, why)
	}
	network, rest, ok := strings.Cut(s, ":")
	if !ok || (network != "tcp" && network != "udp") {
		return bad("want tcp:LISTEN=TARGET or udp:LISTEN=TARGET, e.g. tcp:127.0.0.1:8022=10.66.0.1:22")
	}
	f.network = network
	listen, target, ok := strings.Cut(rest, "=")
	if !ok {
		return bad("no '=': want " + network + ":LISTEN=TARGET")
	}
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil {
		return bad("listen address: " + err.Error())
	}
	thost, tport, err := net.SplitHostPort(target)
	if err != nil {
		return bad("target address: " + err.Error())
	}
	if err := checkPort(lport, true); err != nil {
		return bad("listen " + err.Error())
	}
	if err := checkPort(tport, false); err != nil {
		return bad("target " + err.Error())
	}
	link, linkWhat := thost, "target"
	if serve {
		link, linkWhat = lhost, "listen address"
	}
	if link != "" || !serve {
		a, err := netip.ParseAddr(link)
		if err != nil || !a.Is4() {
			return bad(fmt.Sprintf("%s %q on the IPoIB link must be an IPv4 address (the link resolves no names)", linkWhat, link))
		}
		if !serve && a.IsUnspecified() {
			return bad("target 0.0.0.0 is no destination")
		}
	}
	if serve && thost == "" {
		return bad("target needs a host, e.g. 127.0.0.1:8080")
	}
	f.listen, f.target = listen, target
	return f, nil
}

// checkPort checks a port number; zeroOK allows 0, which picks a free one.
func checkPort(p string, zeroOK bool) error {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || (n == 0 && !zeroOK) {
		least := 1
		if zeroOK {
			least = 0
		}
		return fmt.Errorf("port %q: want a number from %d to 65535", p, least)
	}
	return nil
}

// forwardList is a repeatable --forward or --serve flag.
type forwardList struct {
	serve bool
	specs []forwardSpec
}

func (l *forwardList) String() string {
	var s []string
	for _, f := range l.specs {
		s = append(s, f.network+":"+f.listen+"="+f.target)
	}
	return strings.Join(s, ",")
}

func (l *forwardList) Set(v string) error {
	f, err := parseForward(v, l.serve)
	if err != nil {
		return err
	}
	l.specs = append(l.specs, f)
	return nil
}

// side is where sockets are opened: the kernel's or the IPoIB link's.
type side struct {
	listen       func(network, address string) (net.Listener, error)
	listenPacket func(network, address string) (net.PacketConn, error)
	dial         func(ctx context.Context, network, address string) (net.Conn, error)
}

func kernelSide() side {
	var d net.Dialer
	return side{listen: net.Listen, listenPacket: net.ListenPacket, dial: d.DialContext}
}

func linkSide(ifc *ipoibd.Interface) side {
	return side{listen: ifc.Listen, listenPacket: ifc.ListenPacket, dial: ifc.DialContext}
}

// udpIdle is how long a UDP session lives without a datagram either way,
// as a NAT's UDP mapping does; udpMaxSessions bounds the sessions of one
// forward, so a flood of source addresses cannot exhaust the daemon.
const (
	udpIdle        = 2 * time.Minute
	udpMaxSessions = 1024
	dialTimeout    = 30 * time.Second
)

// forwarder runs one --forward or --serve until closed.
type forwarder struct {
	spec  forwardSpec
	from  side // where it listens
	to    side // where it dials
	log   *slog.Logger
	ln    net.Listener
	pc    net.PacketConn
	conns connSet
	wg    sync.WaitGroup
	// ctx ends with Close, cutting dials short.
	ctx    context.Context
	cancel context.CancelFunc
}

// startForward opens f's listener and serves it in the background.
func startForward(f forwardSpec, ifc *ipoibd.Interface, log *slog.Logger) (*forwarder, error) {
	fw := &forwarder{spec: f, from: kernelSide(), to: linkSide(ifc), log: log.With("way", f.flag()[2:], "network", f.network, "target", f.target)}
	if f.serve {
		fw.from, fw.to = fw.to, fw.from
	}
	var err error
	if f.network == "tcp" {
		fw.ln, err = fw.from.listen("tcp", f.listen)
	} else {
		fw.pc, err = fw.from.listenPacket("udp", f.listen)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s:%s=%s: %w", f.flag(), f.network, f.listen, f.target, err)
	}
	fw.ctx, fw.cancel = context.WithCancel(context.Background())
	fw.wg.Add(1)
	if fw.ln != nil {
		go fw.serveTCP()
	} else {
		go fw.serveUDP()
	}
	return fw, nil
}

// Addr is the address the forward listens on (the port chosen, for 0).
func (fw *forwarder) Addr() net.Addr {
	if fw.ln != nil {
		return fw.ln.Addr()
	}
	return fw.pc.LocalAddr()
}

// String describes the forward for up's progress lines.
func (fw *forwarder) String() string {
	where := "kernel"
	if fw.spec.serve {
		where = "IPoIB"
	}
	return fmt.Sprintf("%s %s %s %s -> %s", fw.spec.flag()[2:], fw.spec.network, where, fw.Addr(), fw.spec.target)
}

// Close stops listening, ends the forward's connections and waits for
// its goroutines.
func (fw *forwarder) Close() {
	fw.cancel()
	fw.conns.closeAll()
	if fw.ln != nil {
		fw.ln.Close()
	} else {
		fw.pc.Close()
	}
	fw.wg.Wait()
}

func (fw *forwarder) serveTCP() {
	defer fw.wg.Done()
	acceptLoop(fw.ln, &fw.conns, &fw.wg, fw.log, func(c net.Conn) {
		ctx, cancel := context.WithTimeout(fw.ctx, dialTimeout)
		t, err := fw.to.dial(ctx, "tcp", fw.spec.target)
		cancel()
		if err != nil {
			fw.log.Warn("connection refused onward", "from", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		if !fw.conns.add(t) {
			c.Close()
			t.Close()
			return
		}
		defer fw.conns.remove(t)
		splice(c, t)
	})
}

// acceptLoop accepts connections on ln until it is closed, handling each
// on a goroutine counted in wg while conns tracks it.
func acceptLoop(ln net.Listener, conns *connSet, wg *sync.WaitGroup, log *slog.Logger, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !conns.isClosed() {
				log.Warn("accept failed; this way in stops", "err", err)
			}
			return
		}
		if !conns.add(c) {
			c.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			handle(c)
		}()
	}
}

// closeWriter is a connection that can half-close, as *net.TCPConn and
// gVisor's TCP conns can.
type closeWriter interface{ CloseWrite() error }

// splice copies a to b and b to a until both directions end, passing each
// end of stream on as a half-close, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		pipe(b, a)
		close(done)
	}()
	pipe(a, b)
	<-done
	a.Close()
	b.Close()
}

// pipe copies src to dst; at src's end it half-closes dst, or closes both
// if dst cannot half-close or the copy failed (the peer reset).
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
	src.Close()
}

// udpSession is one client's UDP flow through a forward.
type udpSession struct {
	conn net.Conn // dialed towards the target
	last time.Time
}

func (fw *forwarder) serveUDP() {
	defer fw.wg.Done()
	var mu sync.Mutex
	sessions := map[string]*udpSession{}
	buf := make([]byte, 65535)
	for {
		n, from, err := fw.pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !fw.conns.isClosed() {
				fw.log.Warn("read failed; the forward stops", "err", err)
			}
			mu.Lock()
			for _, s := range sessions {
				s.conn.Close()
			}
			mu.Unlock()
			return
		}
		key := from.String()
		mu.Lock()
		s := sessions[key]
		if s == nil {
			if len(sessions) >= udpMaxSessions {
				mu.Unlock()
				fw.log.Warn("too many UDP sessions; datagram dropped", "from", key, "max", udpMaxSessions)
				continue
			}
			ctx, cancel := context.WithTimeout(fw.ctx, dialTimeout)
			c, err := fw.to.dial(ctx, "udp", fw.spec.target)
			cancel()
			if err != nil {
				mu.Unlock()
				fw.log.Warn("UDP session refused onward", "from", key, "err", err)
				continue
			}
			s = &udpSession{conn: c}
			sessions[key] = s
			fw.wg.Add(1)
			go func() {
				defer fw.wg.Done()
				fw.udpReplies(s, from, &mu)
				mu.Lock()
				delete(sessions, key)
				mu.Unlock()
				c.Close()
			}()
		}
		s.last = time.Now()
		mu.Unlock()
		if _, err := s.conn.Write(buf[:n]); err != nil {
			fw.log.Debug("UDP datagram not sent onward", "from", key, "err", err)
		}
	}
}

// udpReplies carries the target's answers in s back to the client at from
// until the session has been idle for udpIdle or is closed.
func (fw *forwarder) udpReplies(s *udpSession, from net.Addr, mu *sync.Mutex) {
	buf := make([]byte, 65535)
	for {
		s.conn.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				idle := time.Since(s.last)
				mu.Unlock()
				if idle < udpIdle {
					continue
				}
			}
			return
		}
		mu.Lock()
		s.last = time.Now()
		mu.Unlock()
		if _, err := fw.pc.WriteTo(buf[:n], from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			fw.log.Debug("UDP answer not delivered", "to", from.String(), "err", err)
		}
	}
}

// connSet tracks open connections (a way's, the control socket's) so that
// shutting down ends them.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// add records c; it reports false once the set is closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}
