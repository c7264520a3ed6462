package dhcp

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/svctest"
)

// testNIC is the NIC number every test stack uses.
const testNIC tcpip.NICID = 1

// wire is a shared broadcast segment of gVisor stacks, each on a channel
// endpoint: a pump goroutine per stack takes what the stack sends and
// injects it into every other stack. Unicast goes to everyone as well
// (a hub); IPv4 drops what is not addressed to it, which is all the
// test needs. Loss, if set, drops each copy independently.
type wire struct {
	t     *testing.T
	mu    sync.Mutex
	ports []*wirePort
	loss  float64
	rng   *rand.Rand
	// tap, if set, sees every IPv4 packet sent, once.
	tap func(pkt []byte)
}

type wirePort struct {
	ep *channel.Endpoint
	s  *gvstack.Stack
}

func newWire(t *testing.T, loss float64) *wire {
	return &wire{t: t, loss: loss, rng: rand.New(rand.NewPCG(1, 2))}
}

// addStack returns a new stack with IPv4 and UDP on NIC testNIC, joined
// to the wire, with addr (if valid) and an on-link route to its subnet.
func (w *wire) addStack(addr netip.Prefix) *gvstack.Stack {
	w.t.Helper()
	s := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{udp.NewProtocol},
	})
	ep := channel.New(4096, 2044, "")
	if e := s.CreateNIC(testNIC, ep); e != nil {
		w.t.Fatalf("create NIC: %s", e)
	}
	if addr.IsValid() {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpipAddr(addr.Addr()), PrefixLen: addr.Bits()}}
		if e := s.AddProtocolAddress(testNIC, pa, gvstack.AddressProperties{}); e != nil {
			w.t.Fatalf("add address: %s", e)
		}
		s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: testNIC}})
	}
	p := &wirePort{ep: ep, s: s}
	w.mu.Lock()
	w.ports = append(w.ports, p)
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pkt := ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			b := append([]byte(nil), v.AsSlice()...)
			v.Release()
			pkt.DecRef()
			w.deliver(p, b)
		}
	}()
	w.t.Cleanup(func() {
		cancel()
		<-done
		w.mu.Lock()
		for i, q := range w.ports {
			if q == p {
				w.ports = append(w.ports[:i], w.ports[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
		s.Close()
		s.Wait()
	})
	return s
}

// deliver injects b into every port but from.
func (w *wire) deliver(from *wirePort, b []byte) {
	w.mu.Lock()
	if w.tap != nil {
		w.tap(b)
	}
	var to []*wirePort
	for _, p := range w.ports {
		if p != from && (w.loss == 0 || w.rng.Float64() >= w.loss) {
			to = append(to, p)
		}
	}
	w.mu.Unlock()
	for _, p := range to {
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), b...))})
		p.ep.InjectInbound(ipv4.ProtocolNumber, pkt)
		pkt.DecRef()
	}
}

// testSubnet is the subnet the test servers serve.
var (
	testSubnet   = netip.MustParsePrefix("10.7.0.0/24")
	testServerID = netip.MustParseAddr("10.7.0.1")
	testRouter   = netip.MustParseAddr("10.7.0.254")
	testDNS      = netip.MustParseAddr("10.7.0.53")
)

// fastBackoff makes retransmissions fast enough for tests on real time.
var fastBackoff = Backoff{Initial: 40 * time.Millisecond, Max: 320 * time.Millisecond, Jitter: 10 * time.Millisecond}

// serverConfig returns a server configuration for the test subnet.
func serverConfig(s *gvstack.Stack, clock Clock) ServerConfig {
	return ServerConfig{
		Stack: s, NIC: testNIC, ServerID: testServerID, Subnet: testSubnet,
		Router: testRouter, DNS: []netip.Addr{testDNS}, DomainName: "fabric.test",
		Clock: clock,
	}
}

// startServer adds a server stack to w and starts a server on it.
func startServer(t *testing.T, w *wire, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Stack == nil {
		cfg.Stack = w.addStack(netip.PrefixFrom(testServerID, testSubnet.Bits()))
	}
	srv, err := NewServer(cfg)
	return svctest.Start(t, srv, err)
}

// testGUID returns the i-th test port GUID (Mellanox OUI 00:02:c9).
func testGUID(i int) ib.GUID { return ib.GUID(0x0002c90300000000 | uint64(i+1)) }

// eventLog collects a client's events.
type eventLog struct {
	ch chan Event
}

func newEventLog() *eventLog { return &eventLog{ch: make(chan Event, 64)} }

func (e *eventLog) hook(ev Event) {
	select {
	case e.ch <- ev:
	default:
	}
}

// wait returns the next event of kind k, failing after timeout; other
// kinds are skipped.
func (e *eventLog) wait(t *testing.T, k EventKind, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == k {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event within %v", k, timeout)
			return Event{}
		}
	}
}

// startClient adds a client stack to w and starts a client on it.
func startClient(t *testing.T, w *wire, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Stack == nil {
		cfg.Stack = w.addStack(netip.Prefix{})
		cfg.NIC = testNIC
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fastBackoff
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop client: %v", err)
		}
	})
	return c
}

// nicAddrs returns the IPv4 addresses on s's test NIC.
func nicAddrs(s *gvstack.Stack) []netip.Addr {
	var out []netip.Addr
	for _, pa := range s.AllAddresses()[testNIC] {
		// gVisor's IPv4 keeps 255.255.255.255 on every NIC to receive
		// broadcasts; it is not a configured address.
		if pa.Protocol == ipv4.ProtocolNumber && pa.AddressWithPrefix.Address != header.IPv4Broadcast {
			out = append(out, netip.AddrFrom4(pa.AddressWithPrefix.Address.As4()))
		}
	}
	return out
}

// recorder is a transport and netConfig that keeps what it is given,
// for driving a client without gVisor.
type recorder struct {
	mu         sync.Mutex
	sent       []sentMsg
	configured []Lease
	removed    []Lease
}

type sentMsg struct {
	b   []byte
	dst netip.AddrPort
}

func (r *recorder) send(b []byte, dst netip.AddrPort) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sentMsg{append([]byte(nil), b...), dst})
	return nil
}

func (r *recorder) ensureSource() error { return nil }
func (r *recorder) dropSource() error   { return nil }
func (r *recorder) configure(l *Lease) error {
	r.configured = append(r.configured, l.clone())
	return nil
}
func (r *recorder) deconfigure(l *Lease) error { r.removed = append(r.removed, l.clone()); return nil }

// last decodes the last message sent.
func (r *recorder) last(t testing.TB) (*dhcpv4.DHCPv4, netip.AddrPort) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sent) == 0 {
		t.Fatal("nothing sent")
	}
	s := r.sent[len(r.sent)-1]
	m, err := dhcpv4.FromBytes(s.b)
	if err != nil {
		t.Fatalf("decode what the client sent: %v", err)
	}
	return m, s.dst
}

// driven is a client whose handlers a test calls directly, with a
// server core (no sockets) to answer it.
type driven struct {
	c     *Client
	rec   *recorder
	srv   *Server
	clock *ManualClock
}

var testEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newDriven returns a client in SELECTING that has sent its DISCOVER,
// and a socketless server on a manual clock.
func newDriven(t testing.TB, cfg ClientConfig) *driven {
	srv, clock := newPoolServer(t)
	rec := &recorder{}
	if cfg.GUID == 0 {
		cfg.GUID = testGUID(0)
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	cfg.Clock = clock
	c := newClient(cfg, rec, rec)
	c.enterInit()
	return &driven{c: c, rec: rec, srv: srv, clock: clock}
}

// newPoolServer returns a socketless server with the five-address pool
// 10.7.0.10 to 10.7.0.14, on a manual clock.
func newPoolServer(t testing.TB) (*Server, *ManualClock) {
	t.Helper()
	clock := NewManualClock(testEpoch)
	cfg := serverConfig(nil, clock)
	cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr("10.7.0.10"), netip.MustParseAddr("10.7.0.14")
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, clock
}

// exchange passes the client's last message to the server and the reply,
// if any, back to the client; it returns the reply.
func (d *driven) exchange(t testing.TB) []byte {
	t.Helper()
	d.rec.mu.Lock()
	last := d.rec.sent[len(d.rec.sent)-1]
	d.rec.mu.Unlock()
	reply, _, ok := d.srv.handle(last.b, netip.AddrPortFrom(netip.IPv4Unspecified(), ClientPort))
	if !ok {
		return nil
	}
	d.c.handleMessage(reply)
	return reply
}

// advance moves the manual clock by dur and runs the client's handlers
// for the timers that fired, as its goroutine would, until nothing more
// is due.
func (d *driven) advance(dur time.Duration) {
	d.clock.Advance(dur)
	for {
		select {
		case ev := <-d.c.events:
			d.c.dispatch(ev)
		default:
			// Handlers may have armed timers due now; fire those too.
			d.clock.Advance(0)
			select {
			case ev := <-d.c.events:
				d.c.dispatch(ev)
				continue
			default:
				return
			}
		}
	}
}
