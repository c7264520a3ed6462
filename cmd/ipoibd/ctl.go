package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/stack"
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
}

// ctlReply is what the daemon answers.
type ctlReply struct {
	Error string           `json:"error,omitempty"`
	Ping  *pingJSON        `json:"ping,omitempty"`
	Peers *peersJSON       `json:"peers,omitempty"`
	Stats *statsJSON       `json:"stats,omitempty"`
	Group *ipoib.GroupInfo `json:"group,omitempty"`
}

type pingJSON struct {
	Addr     string  `json:"addr"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	Loss     float64 `json:"loss"`
	MinUs    float64 `json:"rtt_min_us"`
	AvgUs    float64 `json:"rtt_avg_us"`
	MaxUs    float64 `json:"rtt_max_us"`
	P50Us    float64 `json:"rtt_p50_us"`
	P99Us    float64 `json:"rtt_p99_us"`
	Summary  string  `json:"summary"`
}

type neighJSON struct {
	Addr     string `json:"addr"`
	LinkAddr string `json:"lladdr"`
	State    string `json:"state"`
}

type peersJSON struct {
	Neighbours []neighJSON      `json:"neighbours"`
	Peers      []ipoib.PeerInfo `json:"peers"`
	Group      *ipoib.GroupInfo `json:"group,omitempty"`
}

type statsJSON struct {
	Interface string              `json:"interface"`
	Netdev    netdev.Snapshot     `json:"netdev"`
	Endpoint  stack.EndpointStats `json:"endpoint"`
	ARP       stack.ARPStats      `json:"arp"`
}

// ctlServer serves the control socket of one daemon.
type ctlServer struct {
	ln       net.Listener
	path     string
	d        *daemon
	shutdown func() // asks the daemon to leave and exit
	wg       sync.WaitGroup
}

func listenControl(path string, d *daemon, shutdown func()) (*ctlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	// A socket left by a daemon that died is in the way; one that answers
	// belongs to a live daemon and is not ours to take.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another ipoibd is serving it", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &ctlServer{ln: ln, path: path, d: d, shutdown: shutdown}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *ctlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(c)
		}()
	}
}

func (s *ctlServer) close() {
	s.ln.Close()
	s.wg.Wait()
	os.Remove(s.path)
}

func (s *ctlServer) handle(c net.Conn) {
	var req ctlRequest
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, 64<<10))).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(ctlReply{Error: "bad request: " + err.Error()})
		return
	}
	rep := s.exec(req)
	json.NewEncoder(c).Encode(rep)
}

// errNotReady answers requests that need the IP stack while the daemon is
// still joining or leasing.
const errNotReady = "the interface is not configured yet (still joining the broadcast group or leasing); try 'ipoibd stats'"

func (s *ctlServer) exec(req ctlRequest) ctlReply {
	d := s.d
	st := d.st.Load()
	switch req.Cmd {
	case "ping":
		if st == nil {
			return ctlReply{Error: errNotReady}
		}
		dst, err := netip.ParseAddr(req.Addr)
		if err != nil || !dst.Is4() {
			return ctlReply{Error: fmt.Sprintf("ping: %q is not an IPv4 address", req.Addr)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.Count)*req.Interval+stack.PingLinger+5*time.Second)
		defer cancel()
		ps, err := stack.Ping(ctx, st.S, dst, req.Count, req.Interval, req.Size)
		if err != nil {
			return ctlReply{Error: err.Error()}
		}
		return ctlReply{Ping: &pingJSON{
			Addr: dst.String(), Sent: ps.Sent, Received: ps.Received, Loss: ps.Loss,
			MinUs: us(ps.Min), AvgUs: us(ps.Avg), MaxUs: us(ps.Max), P50Us: us(ps.P50), P99Us: us(ps.P99),
			Summary: ps.String(),
		}}
	case "peers":
		if st == nil {
			return ctlReply{Error: errNotReady}
		}
		var p peersJSON
		var err error
		d.onLoop(func() { p.Peers, err = d.link.Peers() })
		if err != nil {
			return ctlReply{Error: err.Error()}
		}
		neigh, err := st.Neighbors()
		if err != nil {
			return ctlReply{Error: err.Error()}
		}
		for _, n := range neigh {
			p.Neighbours = append(p.Neighbours, neighJSON{Addr: n.Addr.String(), LinkAddr: d.link.AddrString(n.LinkAddr), State: n.State.String()})
		}
		g := d.link.Group()
		p.Group = &g
		return ctlReply{Peers: &p}
	case "stats":
		// The link's counters exist from the start; the stack's once it is.
		stats := &statsJSON{Interface: d.opt.name, Netdev: d.link.NetDev().Stats().Snapshot()}
		if st != nil {
			stats.Endpoint = st.Endpoint.Stats()
			stats.ARP = stack.ARPProtocolOf(st.S).Stats()
		}
		return ctlReply{Stats: stats}
	case "down":
		s.shutdown()
		return ctlReply{}
	}
	return ctlReply{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
}

// ctlCall sends one request to the daemon behind socket.
func ctlCall(socket string, req ctlRequest, timeout time.Duration) (ctlReply, error) {
	var rep ctlReply
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return rep, fmt.Errorf("no ipoibd at %s (is 'ipoibd up' running?): %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return rep, err
	}
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return rep, fmt.Errorf("reading the daemon's answer: %w", err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
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

func socketPath(name, socket string) string {
	if socket != "" {
		return socket
	}
	return defaultSocketDir() + "/" + name + ".sock"
}

func runPing(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ping", "[-c N] [-i INTERVAL] [-s SIZE] ADDR", stderr)
	count := fs.Int("c", 4, "number of echo requests")
	interval := fs.Duration("i", time.Second, "interval between requests")
	size := fs.Int("s", 56, "payload bytes")
	name, socket, asJSON := socketFlags(fs)
	// ping(8) takes its flags before or after the address; so do we.
	if len(args) > 1 && !strings.HasPrefix(args[0], "-") {
		args = append(append([]string{}, args[1:]...), args[0])
	}
	if code, ok := parseFlagsN(fs, args, stdout, 1); !ok {
		return code
	}
	addr := fs.Arg(0)
	if a, err := netip.ParseAddr(addr); err != nil || !a.Is4() {
		fmt.Fprintf(stderr, "ipoibd ping: want an IPv4 address as the last argument, got %q\n", addr)
		return exitUsage
	}
	if *count < 1 || *count > 100000 || *interval < time.Millisecond || *size < 0 || *size > stack.PingMaxSize {
		fmt.Fprintf(stderr, "ipoibd ping: -c 1..100000, -i at least 1ms, -s 0..%d\n", stack.PingMaxSize)
		return exitUsage
	}
	req := ctlRequest{Cmd: "ping", Addr: addr, Count: *count, Interval: *interval, Size: *size}
	rep, err := ctlCall(socketPath(*name, *socket), req, time.Duration(*count)*(*interval)+stack.PingLinger+10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "ipoibd ping: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		printJSON(stdout, rep.Ping)
	} else {
		fmt.Fprintf(stdout, "PING %s: %s\n", addr, rep.Ping.Summary)
	}
	if rep.Ping.Received == 0 {
		return exitFailure
	}
	return exitOK
}

func runPeers(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("peers", "[--json]", stderr)
	name, socket, asJSON := socketFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	rep, err := ctlCall(socketPath(*name, *socket), ctlRequest{Cmd: "peers"}, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "ipoibd peers: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		printJSON(stdout, rep.Peers)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tLLADDR\tSTATE")
	for _, n := range rep.Peers.Neighbours {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Addr, n.LinkAddr, n.State)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tIPOIB ADDRESS\tSTATE\tLID\tSL\tMTU\tAGE\tPENDING")
	for _, p := range rep.Peers.Peers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%#x\t%d\t%d\t%s\t%d\n", p.Key, p.Addr, p.State, uint16(p.LID), p.SL, p.MTU, p.Age.Round(time.Millisecond), p.Pending)
	}
	return flushErr(tw, stderr)
}

func runStats(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("stats", "[--json]", stderr)
	name, socket, asJSON := socketFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	rep, err := ctlCall(socketPath(*name, *socket), ctlRequest{Cmd: "stats"}, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "ipoibd stats: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		printJSON(stdout, rep.Stats)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, c := range rep.Stats.Netdev {
		if c.Value != 0 {
			fmt.Fprintf(tw, "%s\t%d\n", c.Name, c.Value)
		}
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.Encode(rep.Stats.Endpoint)
	enc.Encode(rep.Stats.ARP)
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if v, ok := m[k].(float64); ok && v != 0 {
					fmt.Fprintf(tw, "%s\t%v\n", k, v)
				}
			}
		}
	}
	return flushErr(tw, stderr)
}

func runDown(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("down", "[--name NAME]", stderr)
	name, socket, _ := socketFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if _, err := ctlCall(socketPath(*name, *socket), ctlRequest{Cmd: "down"}, 10*time.Second); err != nil {
		fmt.Fprintf(stderr, "ipoibd down: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func flushErr(tw *tabwriter.Writer, stderr io.Writer) int {
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	return exitOK
}
