package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/stack"
	"golang.org/x/sys/unix"
)

// The control socket: a unix stream socket, mode 0600, speaking one JSON
// request and one JSON reply per connection. It is how ping, peers, stats
// and down reach a running `ipoibd up`.

// ctlRequest is what a client sends.
type ctlRequest struct {
	Cmd      string        `json:"cmd"`
	Addr     string        `json:"addr,omitempty"`
	Count    int           `json:"count,omitempty"`
	Interval time.Duration `json:"interval,omitempty"`
	Size     int           `json:"size,omitempty"`
	// Linger is ping -W: how long to wait for replies after the last
	// request. Deadline is ping -w: when to stop whatever is left.
	Linger   time.Duration `json:"linger,omitempty"`
	Deadline time.Duration `json:"deadline,omitempty"`
}

// ctlReply is what the daemon answers. A ping streams one reply per
// answered request (Reply set) before the final one.
type ctlReply struct {
	Error string         `json:"error,omitempty"`
	Reply *pingReplyJSON `json:"reply,omitempty"`
	Ping  *pingJSON      `json:"ping,omitempty"`
	Peers *peersJSON     `json:"peers,omitempty"`
	Stats *statsJSON     `json:"stats,omitempty"`
}

// pingJSON is ping's --json output: ping(8)'s statistics, every reply,
// and RTT percentiles; the RTT figures are null when nothing came back.
type pingJSON struct {
	Addr        string          `json:"addr"`
	DataBytes   int             `json:"data_bytes"`
	Transmitted int             `json:"transmitted"`
	Received    int             `json:"received"`
	Duplicates  int             `json:"duplicates"`
	Corrupt     int             `json:"corrupt"`
	LossPercent float64         `json:"loss_percent"`
	TimeMs      float64         `json:"time_ms"`
	MinMs       *float64        `json:"rtt_min_ms"`
	AvgMs       *float64        `json:"rtt_avg_ms"`
	MaxMs       *float64        `json:"rtt_max_ms"`
	MdevMs      *float64        `json:"rtt_mdev_ms"`
	P50Ms       *float64        `json:"rtt_p50_ms"`
	P99Ms       *float64        `json:"rtt_p99_ms"`
	Replies     []pingReplyJSON `json:"replies"`
}

// pingReplyJSON is one answered request; seq counts from 1 as ping(8)'s
// icmp_seq does.
type pingReplyJSON struct {
	Seq    int     `json:"seq"`
	Bytes  int     `json:"bytes"`
	TTL    int     `json:"ttl"`
	TimeMs float64 `json:"time_ms"`
}

type neighJSON struct {
	Addr     string `json:"addr"`
	LinkAddr string `json:"lladdr"`
	State    string `json:"state"`
}

type peersJSON struct {
	Neighbours []neighJSON `json:"neighbours"`
	Peers      []peerJSON  `json:"peers"`
	Group      groupJSON   `json:"group"`
}

// peerJSON is one peer-cache entry (ipoib.PeerInfo) in the convention.
type peerJSON struct {
	Key       int      `json:"key"`
	Addr      string   `json:"addr"`
	Multicast bool     `json:"multicast"`
	Pinned    bool     `json:"pinned"`
	State     string   `json:"state"`
	LID       *string  `json:"lid"`
	SL        int      `json:"sl"`
	MTU       *int     `json:"mtu"`
	Rate      *string  `json:"rate"`
	AgeMs     *float64 `json:"age_ms"`
	Pending   int      `json:"pending"`
}

// groupJSON is the broadcast group (ipoib.GroupInfo) in the convention.
type groupJSON struct {
	Joined    bool    `json:"joined"`
	MGID      string  `json:"mgid"`
	MLID      string  `json:"mlid"`
	QKey      string  `json:"qkey"`
	PKey      string  `json:"pkey"`
	MTU       int     `json:"mtu"`
	Rate      *string `json:"rate"`
	SL        int     `json:"sl"`
	FlowLabel int     `json:"flow_label"`
	TClass    int     `json:"tclass"`
	HopLimit  int     `json:"hop_limit"`
	JoinState int     `json:"join_state"`
	JoinedAt  *string `json:"joined_at"`
}

func toPeerJSON(p ipoib.PeerInfo) peerJSON {
	out := peerJSON{Key: int(p.Key), Addr: p.Addr, Multicast: p.Multicast, Pinned: p.Pinned, State: p.State,
		SL: int(p.SL), Rate: rateJSON(p.Rate), Pending: p.Pending, AgeMs: optMS(p.Age, p.Age > 0)}
	if p.LID != 0 {
		out.LID = optLID(p.LID)
	}
	if p.MTU > 0 {
		out.MTU = &p.MTU
	}
	return out
}

func toGroupJSON(g ipoib.GroupInfo) groupJSON {
	out := groupJSON{Joined: g.Joined, MGID: gidJSON(g.MGID), MLID: lidJSON(g.MLID), QKey: qkeyJSON(g.QKey),
		PKey: pkeyJSON(g.PKey), MTU: g.MTU.Bytes(), Rate: rateJSON(g.Rate), SL: int(g.SL),
		FlowLabel: int(g.FlowLabel), TClass: int(g.TClass), HopLimit: int(g.HopLimit), JoinState: int(g.JoinState)}
	if !g.JoinedAt.IsZero() {
		out.JoinedAt = optString(g.JoinedAt.UTC().Format(time.RFC3339Nano))
	}
	return out
}

// statsJSON is the daemon's counters: the link's by name, then the
// endpoint's and ARP's (zero until the stack exists).
type statsJSON = ipoibd.Stats

// ctlServer serves the control socket of one daemon.
type ctlServer struct {
	ln       net.Listener
	sock     *ctlSocket // nil in tests that serve a bare listener
	d        *daemon
	shutdown func() // asks the daemon to leave and exit
	// ctx ends when the server closes: running pings stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	// privileged reports whether the peer of c is root, who may ask for
	// pings faster than ctlMinUserInterval, as ping(8) allows root.
	privileged func(c net.Conn) bool
	// warn logs a problem the server carries on after: a message and
	// slog key-value pairs.
	warn func(msg string, args ...any)
	wg   sync.WaitGroup
	// downs counts 'down' requests waiting for the teardown, which
	// close does not wait for (it is part of the teardown).
	downs sync.WaitGroup
	// conns holds the open connections, for close to end.
	conns connSet
}

// Limits of the control server. A client may be slow or stuck, but not
// for long, and a closing daemon waits for no one.
var (
	// ctlReadTimeout bounds how long the daemon waits for a request.
	ctlReadTimeout = 10 * time.Second
	// ctlWriteTimeout bounds each write of an answer: a client that
	// stops reading loses its connection, and its ping stops.
	ctlWriteTimeout = 10 * time.Second
	// ctlCloseWait bounds how long close waits for connections it has
	// cancelled and closed to finish.
	ctlCloseWait = 2 * time.Second
	// ctlAcceptBackoffMax caps the pause after failed Accepts (a full
	// file table: EMFILE, ENFILE), which double from 5 ms.
	ctlAcceptBackoffMax = time.Second
)

// ctlMaxRequest is the largest request the daemon reads, in bytes.
const ctlMaxRequest = 64 << 10

// listenControl opens the control socket at path (see listenSocket). With
// checkDir (the default path) the socket's directory is first made, or
// checked, as the user's own.
func listenControl(path string, checkDir bool, d *daemon, shutdown func(), warn func(string, ...any)) (*ctlServer, error) {
	if checkDir {
		if err := privateDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	sock, err := listenSocket(path)
	if err != nil {
		return nil, err
	}
	s := newCtlServer(sock.ln, d, shutdown, warn)
	s.sock = sock
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// newCtlServer returns a server for ln that has not started serving.
func newCtlServer(ln net.Listener, d *daemon, shutdown func(), warn func(string, ...any)) *ctlServer {
	ctx, cancel := context.WithCancel(context.Background())
	if warn == nil {
		warn = func(string, ...any) {}
	}
	return &ctlServer{ln: ln, d: d, shutdown: shutdown, ctx: ctx, cancel: cancel,
		privileged: peerIsRoot, warn: warn}
}

// serve accepts connections until the listener closes. Any other Accept
// error (a full file table, most often) is logged and retried after a
// pause that doubles up to ctlAcceptBackoffMax, so the control socket
// outlives a burst of clients.
func (s *ctlServer) serve() {
	defer s.wg.Done()
	var pause time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), ctlAcceptBackoffMax)
			s.warn("control socket: accept failed; retrying", "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		pause = 0
		if !s.conns.add(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			done := sync.OnceFunc(s.wg.Done)
			defer done()
			defer s.conns.remove(c)
			defer c.Close()
			s.handle(c, func() { s.conns.remove(c); done() })
		}()
	}
}

// close stops accepting, stops running pings, closes every connection
// but those of 'down' requests (they answer once the teardown is done)
// and waits at most ctlCloseWait for their handlers; then it removes the
// socket this daemon created, keeping its lock (see release).
func (s *ctlServer) close() {
	s.cancel()
	s.ln.Close()
	s.conns.closeAll()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ctlCloseWait):
		s.warn("control socket: connections still open; leaving them", "after", ctlCloseWait)
	}
	if s.sock != nil {
		s.sock.remove()
	}
}

// release gives up the socket path's lock, once the daemon has torn down:
// until then no other daemon may take the path.
func (s *ctlServer) release() {
	if s.sock != nil {
		s.sock.unlock()
	}
}

// waitDown waits, a bounded time, for the answers to 'down' requests,
// once the daemon is torn down.
func (s *ctlServer) waitDown() {
	done := make(chan struct{})
	go func() { s.downs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// ctlWriter writes answers with a deadline per write; once one fails it
// cancels the connection's work (a ping) and drops the rest.
type ctlWriter struct {
	c      net.Conn
	enc    *json.Encoder
	cancel context.CancelFunc
	failed bool
}

func (w *ctlWriter) send(rep ctlReply) {
	if w.failed {
		return
	}
	w.c.SetWriteDeadline(time.Now().Add(ctlWriteTimeout))
	if err := w.enc.Encode(rep); err != nil {
		w.failed = true
		w.cancel()
	}
}

// handle serves one connection; detach tells close not to wait for it.
func (s *ctlServer) handle(c net.Conn, detach func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	w := &ctlWriter{c: c, enc: json.NewEncoder(c), cancel: cancel}
	var req ctlRequest
	// A client that never finishes its request must not hold the
	// connection, and with it the daemon's shutdown, for ever.
	c.SetReadDeadline(time.Now().Add(ctlReadTimeout))
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, ctlMaxRequest))).Decode(&req); err != nil {
		w.send(ctlReply{Error: "bad request: " + err.Error()})
		return
	}
	if req.Cmd == "down" {
		// Answer only once the group is left, the lease released and
		// the device closed, so 'ipoibd down && ...' sees it gone.
		// Detached first, so that close, which the shutdown sets off,
		// neither waits for this connection nor closes it.
		s.downs.Add(1)
		defer s.downs.Done()
		detach()
		s.shutdown()
		select {
		case <-s.d.finished:
			w.send(ctlReply{})
		case <-time.After(downTimeout):
			w.send(ctlReply{Error: fmt.Sprintf("the daemon did not finish leaving within %v", downTimeout)})
		}
		return
	}
	if req.Cmd == "ping" {
		privileged := s.privileged != nil && s.privileged(c)
		w.send(s.ping(ctx, req, privileged, func(r pingReplyJSON) { w.send(ctlReply{Reply: &r}) }))
		return
	}
	w.send(s.exec(req))
}

// peerIsRoot reports whether the process at the other end of a unix
// socket runs as root (SO_PEERCRED).
func peerIsRoot(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	root := false
	_ = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		root = err == nil && cred.Uid == 0
	})
	return root
}

// Bounds on what a ping request may ask, after ping(8): only root may
// send faster than every 200 ms; no one faster than every millisecond
// (the CLI's -i floor), and a ping ends within a day.
const (
	ctlMinUserInterval = 200 * time.Millisecond
	ctlMinInterval     = time.Millisecond
	ctlMaxCount        = 100000
)

// ping runs a ping for a client, calling each for every reply as it
// comes.
func (s *ctlServer) ping(ctx context.Context, req ctlRequest, privileged bool, each func(pingReplyJSON)) ctlReply {
	// The socket is open to any client of the user, not only 'ipoibd
	// ping': the same limits apply here.
	if req.Count < 1 || req.Count > ctlMaxCount || req.Interval < ctlMinInterval || req.Interval > time.Hour || req.Size < 0 ||
		req.Size > stack.PingMaxSize || req.Linger < 0 || req.Linger > time.Hour || req.Deadline < 0 || req.Deadline > 24*time.Hour {
		return ctlReply{Error: fmt.Sprintf("ping: count %d, interval %v, size %d, linger %v, deadline %v: out of range (count 1..%d, interval %v..1h, linger up to 1h, size up to %d, deadline up to 24h)",
			req.Count, req.Interval, req.Size, req.Linger, req.Deadline, ctlMaxCount, ctlMinInterval, stack.PingMaxSize)}
	}
	if req.Interval < ctlMinUserInterval && !privileged {
		return ctlReply{Error: fmt.Sprintf("ping: cannot flood; minimal interval allowed for user is %v", ctlMinUserInterval)}
	}
	if !s.d.ready.Load() {
		return ctlReply{Error: errNotReady}
	}
	dst, err := netip.ParseAddr(req.Addr)
	if err != nil || !dst.Is4() {
		return ctlReply{Error: fmt.Sprintf("ping: %q is not an IPv4 address", req.Addr)}
	}
	limit := time.Duration(req.Count)*req.Interval + req.Linger + 5*time.Second
	if req.Deadline > 0 {
		limit = req.Deadline
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	ps, err := s.d.ifc.Load().Ping(ctx, dst, ipoibd.PingOptions{
		Count: req.Count, Interval: req.Interval, Size: req.Size, Linger: req.Linger,
		OnReply: func(r stack.PingReply) {
			each(pingReplyJSON{Seq: r.Seq + 1, Bytes: r.Bytes, TTL: int(r.TTL), TimeMs: msJSON(r.RTT)})
		},
	})
	if s.ctx.Err() != nil {
		return ctlReply{Error: "ping: the daemon is shutting down"}
	}
	// -w ends a ping early by design; only other failures are errors.
	if err != nil && !(req.Deadline > 0 && errors.Is(err, context.DeadlineExceeded)) {
		return ctlReply{Error: err.Error()}
	}
	got := ps.Received > 0
	return ctlReply{Ping: &pingJSON{
		Addr: dst.String(), DataBytes: req.Size, Transmitted: ps.Sent, Received: ps.Received,
		Duplicates: ps.Duplicates, Corrupt: ps.Corrupt, LossPercent: math.Round(ps.Loss*1e5) / 1e3,
		TimeMs: msJSON(time.Since(start)),
		MinMs:  optMS(ps.Min, got), AvgMs: optMS(ps.Avg, got), MaxMs: optMS(ps.Max, got),
		MdevMs: optMS(ps.StdDev, got), P50Ms: optMS(ps.P50, got), P99Ms: optMS(ps.P99, got),
		Replies: []pingReplyJSON{},
	}}
}

// downTimeout bounds how long 'down' waits for the daemon's teardown
// (leaving the groups, releasing the lease: a few seconds at most).
const downTimeout = 20 * time.Second

// downExitWait bounds how long 'down' waits, after the daemon's answer,
// for its process to let go of the socket's lock.
const downExitWait = 5 * time.Second

// errNotReady answers requests that need the IP stack while the daemon is
// still joining or leasing.
const errNotReady = "the interface is not configured yet (still joining the broadcast group or leasing); try 'ipoibd stats'"

func (s *ctlServer) exec(req ctlRequest) ctlReply {
	d := s.d
	switch req.Cmd {
	case "peers":
		if !d.ready.Load() {
			return ctlReply{Error: errNotReady}
		}
		peers, err := d.ifc.Load().Peers()
		if err != nil {
			return ctlReply{Error: err.Error()}
		}
		p := peersJSON{Neighbours: []neighJSON{}, Peers: []peerJSON{}, Group: toGroupJSON(peers.Group)}
		for _, pi := range peers.Peers {
			p.Peers = append(p.Peers, toPeerJSON(pi))
		}
		for _, n := range peers.Neighbours {
			p.Neighbours = append(p.Neighbours, neighJSON{Addr: n.Addr.String(), LinkAddr: n.LinkAddr, State: n.State})
		}
		return ctlReply{Peers: &p}
	case "stats":
		// The link's counters exist from the start; the stack's once it is.
		stats := statsJSON(d.stats())
		return ctlReply{Stats: &stats}
	}
	return ctlReply{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
}

// ctlCall sends one request to the daemon behind socket.
func ctlCall(socket string, req ctlRequest, timeout time.Duration) (ctlReply, error) {
	return ctlStream(socket, req, timeout, nil)
}

// ctlDial connects to the control socket; tests replace it.
var ctlDial = func(socket string) (net.Conn, error) {
	return net.DialTimeout("unix", socket, 5*time.Second)
}

// ctlStream is ctlCall for requests whose answer comes in parts: each
// ping reply goes to each as it arrives, the final answer is returned.
// Whatever the daemon sends, the answer returned without an error holds
// what req.Cmd's output needs (see checkReply).
func ctlStream(socket string, req ctlRequest, timeout time.Duration, each func(pingReplyJSON)) (ctlReply, error) {
	var rep ctlReply
	c, err := ctlDial(socket)
	if err != nil {
		return rep, fmt.Errorf("no ipoibd at %s (is 'ipoibd up' running?): %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return rep, err
	}
	dec := json.NewDecoder(io.LimitReader(c, ctlMaxAnswer))
	for {
		rep = ctlReply{}
		if err := dec.Decode(&rep); err != nil {
			return rep, fmt.Errorf("reading the daemon's answer: %w", err)
		}
		if rep.Reply == nil {
			break
		}
		if each != nil {
			each(*rep.Reply)
		}
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, checkReply(req.Cmd, &rep)
}

// ctlMaxAnswer bounds what the CLI reads from a daemon: a day of ping
// replies at the fastest interval fits many times over.
const ctlMaxAnswer = 256 << 20

// checkReply makes sure an answer without an error carries what cmd
// prints, so a daemon of another version (or anything else listening
// on the socket) gets a clear error rather than a crash.
func checkReply(cmd string, rep *ctlReply) error {
	bad := func(what string) error {
		return fmt.Errorf("the daemon's answer to %q has no %s (a daemon of another version?)", cmd, what)
	}
	switch cmd {
	case "ping":
		p := rep.Ping
		if p == nil {
			return bad("ping statistics")
		}
		if p.Received > 0 && (p.MinMs == nil || p.AvgMs == nil || p.MaxMs == nil || p.MdevMs == nil) {
			return bad("round-trip times")
		}
		if p.Replies == nil {
			p.Replies = []pingReplyJSON{}
		}
	case "peers":
		if rep.Peers == nil {
			return bad("peer table")
		}
	case "stats":
		if rep.Stats == nil {
			return bad("counters")
		}
	}
	return nil
}

func init() {
	register(command{name: "ping", summary: "ping an address through a running daemon", run: runPing})
	register(command{name: "peers", summary: "show the neighbour, peer and path table of a running daemon", run: runPeers})
	register(command{name: "stats", summary: "show the counters of a running daemon", run: runStats})
	register(command{name: "down", summary: "stop a running daemon: leave the group and exit", run: runDown})
}

// socketFlags adds the flags every client command shares.
func socketFlags(fs interface {
	String(string, string, string) *string
	Bool(string, bool, string) *bool
}) (name, socket *string, asJSON *bool) {
	name = fs.String("name", "ib0", "interface name of the daemon")
	socket = fs.String("socket", "", "control socket path (default "+defaultSocketDir()+"/NAME.sock)")
	asJSON = fs.Bool("json", false, "print JSON")
	return
}

// socketPath is the control socket of the daemon named name, or socket
// when given.
func socketPath(name, socket string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	if err := checkIfName(name); err != nil {
		return "", err
	}
	return filepath.Join(defaultSocketDir(), name+".sock"), nil
}

func runPing(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ping", "[-c COUNT] [-i INTERVAL] [-W TIMEOUT] [-w DEADLINE] [-s SIZE] [-q] [--json] ADDRESS", stderr)
	count := fs.Int("c", 4, "number of requests; with -w and no -c, as many as fit before the deadline")
	interval := fs.Float64("i", 1, "seconds between requests (fractional, at least 0.001)")
	linger := fs.Float64("W", stack.PingLinger.Seconds(), "seconds to wait for replies after the last request")
	deadline := fs.Float64("w", 0, "seconds before ping exits, however many requests were sent (0: no deadline)")
	size := fs.Int("s", 56, "payload bytes of each request")
	quiet := fs.Bool("q", false, "quiet: print only the header and the summary")
	name, socket, asJSON := socketFlags(fs)
	code, ok := parseFlagsN(fs, interspersed(fs, args), stdout, 1)
	if !ok {
		return code
	}
	countSet := false
	fs.Visit(func(f *flag.Flag) { countSet = countSet || f.Name == "c" })
	addr := fs.Arg(0)
	if a, err := netip.ParseAddr(addr); err != nil || !a.Is4() {
		fmt.Fprintf(stderr, "ipoibd ping: want an IPv4 address, got %q\n", addr)
		return exitUsage
	}
	if *count < 1 || *count > 100000 || !(*interval >= 0.001 && *interval <= 3600) || !(*linger > 0 && *linger <= 3600) ||
		!(*deadline >= 0 && *deadline <= 86400) || *size < 0 || *size > stack.PingMaxSize {
		fmt.Fprintf(stderr, "ipoibd ping: -c 1..100000, -i 0.001..3600, -W above 0 up to 3600, -w 0..86400, -s 0..%d\n", stack.PingMaxSize)
		return exitUsage
	}
	secs := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	req := ctlRequest{Cmd: "ping", Addr: addr, Count: *count, Interval: secs(*interval), Size: *size,
		Linger: secs(*linger), Deadline: secs(*deadline)}
	if *deadline > 0 && !countSet {
		req.Count = min(100000, int(*deadline / *interval)+1)
	}
	timeout := time.Duration(req.Count)*req.Interval + req.Linger + 10*time.Second
	if req.Deadline > 0 {
		timeout = req.Deadline + 10*time.Second
	}
	if !*asJSON {
		// ping(8)'s header: payload and IPv4 datagram sizes.
		fmt.Fprintf(stdout, "PING %s (%s) %d(%d) bytes of data.\n", addr, addr, *size, *size+28)
	}
	var replies []pingReplyJSON
	path, err := socketPath(*name, *socket)
	if err != nil {
		return fail(stdout, stderr, *asJSON, "ping", err, exitUsage)
	}
	rep, err := ctlStream(path, req, timeout, func(r pingReplyJSON) {
		replies = append(replies, r)
		if !*asJSON && !*quiet {
			fmt.Fprintf(stdout, "%d bytes from %s: icmp_seq=%d ttl=%d time=%s ms\n", r.Bytes, addr, r.Seq, r.TTL, rttMs(r.TimeMs))
		}
	})
	if err != nil {
		return fail(stdout, stderr, *asJSON, "ping", err, exitUsage)
	}
	p := rep.Ping
	if replies != nil {
		p.Replies = replies
	}
	code = exitOK
	if p.Received == 0 {
		code = exitFailure
	}
	if *asJSON {
		return emit(stdout, stderr, "ping", p, code)
	}
	printPingSummary(stdout, p)
	return code
}

// printPingSummary prints ping(8)'s closing lines.
func printPingSummary(w io.Writer, p *pingJSON) {
	fmt.Fprintf(w, "\n--- %s ping statistics ---\n", p.Addr)
	fmt.Fprintf(w, "%d packets transmitted, %d received", p.Transmitted, p.Received)
	if p.Duplicates > 0 {
		fmt.Fprintf(w, ", +%d duplicates", p.Duplicates)
	}
	if p.Corrupt > 0 {
		fmt.Fprintf(w, ", +%d corrupted", p.Corrupt)
	}
	fmt.Fprintf(w, ", %s%% packet loss, time %.0fms\n", strconv.FormatFloat(p.LossPercent, 'g', 4, 64), p.TimeMs)
	if p.Received > 0 {
		fmt.Fprintf(w, "rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", *p.MinMs, *p.AvgMs, *p.MaxMs, *p.MdevMs)
	}
}

// rttMs formats a reply's time as ping(8) does: three significant digits
// below 100 ms.
func rttMs(ms float64) string {
	switch {
	case ms < 1:
		return strconv.FormatFloat(ms, 'f', 3, 64)
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	case ms < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	}
	return strconv.FormatFloat(ms, 'f', 0, 64)
}

// queryDaemon is what the commands that only read the daemon's state
// (peers, stats) share: parse args (--name, --socket, --json), ask the
// daemon for cmd and, with --json, print the part of its reply that
// section picks. It returns the reply for the command to print as text,
// or done and the exit code when there is nothing left to do.
func queryDaemon(cmd string, args []string, stdout, stderr io.Writer, section func(*ctlReply) any) (rep ctlReply, code int, done bool) {
	fs := newFlagSet(cmd, "[--json]", stderr)
	name, socket, asJSON := socketFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return rep, code, true
	}
	path, err := socketPath(*name, *socket)
	if err != nil {
		return rep, fail(stdout, stderr, *asJSON, cmd, err, exitUsage), true
	}
	rep, err = ctlCall(path, ctlRequest{Cmd: cmd}, 10*time.Second)
	if err != nil {
		return rep, fail(stdout, stderr, *asJSON, cmd, err, exitFailure), true
	}
	if *asJSON {
		return rep, emit(stdout, stderr, cmd, section(&rep), exitOK), true
	}
	return rep, exitOK, false
}

func runPeers(args []string, stdout, stderr io.Writer) int {
	rep, code, done := queryDaemon("peers", args, stdout, stderr, func(r *ctlReply) any { return r.Peers })
	if done {
		return code
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tLLADDR\tSTATE")
	for _, n := range rep.Peers.Neighbours {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Addr, n.LinkAddr, n.State)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tIPOIB ADDRESS\tSTATE\tLID\tSL\tMTU\tAGE (ms)\tPENDING")
	for _, p := range rep.Peers.Peers {
		age := "-"
		if p.AgeMs != nil {
			age = strconv.FormatFloat(*p.AgeMs, 'f', 0, 64)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", p.Key, p.Addr, p.State, orDash(p.LID), p.SL, orDash(p.MTU), age, p.Pending)
	}
	return flushErr(tw, stderr)
}

func runStats(args []string, stdout, stderr io.Writer) int {
	rep, code, done := queryDaemon("stats", args, stdout, stderr, func(r *ctlReply) any { return r.Stats })
	if done {
		return code
	}
	// Like ip -s link: the non-zero counters, group by group, in the
	// order each layer declares them.
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, g := range rep.Stats.Groups() {
		for _, c := range g.Counters {
			if c.Value != 0 {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", g.Name, c.Name, c.Value)
			}
		}
	}
	return flushErr(tw, stderr)
}

func runDown(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("down", "[--name NAME] [--json]", stderr)
	name, socket, asJSON := socketFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	path, err := socketPath(*name, *socket)
	if err != nil {
		return fail(stdout, stderr, *asJSON, "down", err, exitUsage)
	}
	if _, err := ctlCall(path, ctlRequest{Cmd: "down"}, downTimeout+5*time.Second); err != nil {
		return fail(stdout, stderr, *asJSON, "down", err, exitFailure)
	}
	// The daemon has torn down; its lock goes when it exits.
	if !waitUnlocked(path, downExitWait) {
		return fail(stdout, stderr, *asJSON, "down", fmt.Errorf("the daemon at %s left the link but has not exited after %v", path, downExitWait), exitFailure)
	}
	if *asJSON {
		return emit(stdout, stderr, "down", struct {
			Stopped bool `json:"stopped"`
		}{true}, exitOK)
	}
	return exitOK
}

func flushErr(tw *tabwriter.Writer, stderr io.Writer) int {
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	return exitOK
}
