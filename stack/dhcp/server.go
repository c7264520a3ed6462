package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/ipoibd/ipoibd/counter"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Server defaults.
const (
	// DefaultLeaseTime is the lease the server grants when
	// ServerConfig.LeaseTime is zero.
	DefaultLeaseTime = time.Hour
	// DefaultOfferHold is how long an OFFER keeps its address for the
	// client: long enough for a client's REQUEST retransmissions at the
	// RFC 2131 backoff (4 + 8 + 16 + 32 s).
	DefaultOfferHold = 60 * time.Second
	// DefaultDeclineHold is how long an address reported in use by a
	// DECLINE stays out of the pool; RFC 2131 section 4.3.3 only says
	// "mark the address as not available", and a quarantine lets an
	// address whose squatter has gone come back by itself.
	DefaultDeclineHold = 10 * time.Minute
	// DefaultServerProbeWait is how long the server waits for an answer
	// to its probe of an address before offering it (RFC 2131 section
	// 4.4.1 lets a server check an address before offering it). An
	// IPoIB fabric answers in microseconds; half a second covers a host
	// busy or a path still being resolved, and delays only the first
	// offer of an address to a client.
	DefaultServerProbeWait = 500 * time.Millisecond
	// serverProbeTries is how many addresses one DISCOVER may have
	// probed before the server gives up until the client's next one.
	serverProbeTries = 3
)

// clientBroadcast is where replies to clients without an address go.
var clientBroadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Stack and NIC name the gVisor NIC to serve. Required; the NIC
	// needs ServerID as an address and a route to Subnet.
	Stack *gvstack.Stack
	NIC   tcpip.NICID
	// ServerID is the server's address on the NIC, sent as the server
	// identifier (option 54) and used by clients for renewals. Required.
	ServerID netip.Addr
	// Subnet is the served subnet; its mask goes out as option 1.
	// Required, and must contain ServerID.
	Subnet netip.Prefix
	// PoolStart and PoolEnd bound the addresses handed out, inclusive.
	// Left zero, the pool is Subnet without its network and broadcast
	// addresses. Either way ServerID, Router and Reserved are never
	// handed out.
	PoolStart, PoolEnd netip.Addr
	// Reserved lists addresses never to hand out.
	Reserved []netip.Addr
	// Router, if valid, goes out as option 3.
	Router netip.Addr
	// DNS, if any, go out as option 6; DomainName as option 15.
	DNS        []netip.Addr
	DomainName string
	// LeaseTime is the lease granted; zero means DefaultLeaseTime.
	// T1 and T2 go out at the RFC 2131 section 4.4.5 fractions.
	LeaseTime time.Duration
	// OfferHold and DeclineHold: see DefaultOfferHold and
	// DefaultDeclineHold; zero means those.
	OfferHold, DeclineHold time.Duration
	// LeaseFile, if set, is a JSON file of the bindings: read by
	// NewServer, rewritten (temporary file and rename) on every change,
	// so a restarted server hands the same addresses back.
	LeaseFile string
	// Probe, if set, is asked before an address is first offered to a
	// client whether some host already uses it (an ARP request on the
	// link: a server that lost its bindings must not hand out an
	// address a live client holds). An address in use is quarantined
	// for DeclineHold, as if declined, and another is chosen. It runs
	// on a goroutine of its own and must return soon after ctx ends;
	// an error counts as "not in use". The offer is sent once it
	// returns.
	Probe func(ctx context.Context, addr netip.Addr) (inUse bool, err error)
	// ProbeWait bounds each probe; zero means DefaultServerProbeWait.
	ProbeWait time.Duration
	// Clock reads time for lease book-keeping; nil means SystemClock.
	Clock Clock
	// Logf, if set, receives one line per notable step.
	Logf func(format string, args ...any)
}

// ServerStats counts the server's work. A received datagram that
// decodes, names a client and is a client-to-server type is counted
// under its type (Discovers ... Informs); the rest under Malformed,
// NoClientID or Ignored.
type ServerStats struct {
	Discovers, Requests, Declines, Releases, Informs uint64
	Offers, Acks, Naks                               uint64
	// Malformed counts datagrams that did not decode, and messages that
	// broke the rules of their type (those are counted under their type
	// as well); NoClientID counts IPoIB messages without
	// option 61 (RFC 4390 section 2.1), refused.
	Malformed, NoClientID uint64
	// Ignored counts well-formed messages of server-to-client types.
	Ignored uint64
	// PoolExhausted counts DISCOVERs left without an offer.
	PoolExhausted uint64
	// SendErrors and LeaseFileErrors count failures to answer and to
	// persist.
	SendErrors, LeaseFileErrors uint64
	// Probes counts addresses probed before an offer; ProbeConflicts
	// those found in use.
	Probes, ProbeConflicts uint64
}

// LeaseInfo describes one binding, for status output.
type LeaseInfo struct {
	// ClientID is option 61 as sent, or nil for a client keyed by
	// hardware address (HWType and HWAddr then say which).
	ClientID []byte
	HWType   uint8
	HWAddr   []byte
	Addr     netip.Addr
	// State is "offered", "bound" or "released".
	State   string
	Expires time.Time
}

// Server is a DHCP server for an IPoIB subnet on a gVisor NIC, keyed by
// client identifier. Its methods are safe from any goroutine; one
// goroutine reads the socket and answers.
type Server struct {
	cfg   ServerConfig
	clock Clock
	mask  net.IPMask
	t1    time.Duration
	t2    time.Duration
	stats counter.Block[ServerStats]

	mu   sync.Mutex // guards pool, probing and the lease file
	pool *pool
	// probing holds the addresses whose probe is under way.
	probing map[netip.Addr]bool
	// ctx ends with Stop, and with it the probes; probes counts them.
	ctx    context.Context
	cancel context.CancelFunc
	probes sync.WaitGroup

	sock     *socket
	start    sync.Once
	stopOnce sync.Once
	exited   chan struct{}
}

// NewServer checks cfg, builds the pool and loads cfg.LeaseFile when it
// exists. A Stack is needed only by Start.
func NewServer(cfg ServerConfig) (*Server, error) {
	bad := func(format string, args ...any) (*Server, error) {
		return nil, fmt.Errorf("dhcp: new server: "+format+": %w", append(args, ErrBadConfig)...)
	}
	if !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() < 1 || cfg.Subnet.Bits() > 30 {
		return bad("subnet %v is not an IPv4 prefix of /1 to /30", cfg.Subnet)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.ServerID.Is4() || !cfg.Subnet.Contains(cfg.ServerID) {
		return bad("server identifier %v not in %v", cfg.ServerID, cfg.Subnet)
	}
	if cfg.Router.IsValid() && !cfg.Subnet.Contains(cfg.Router) {
		return bad("router %v not in %v", cfg.Router, cfg.Subnet)
	}
	for _, d := range cfg.DNS {
		if !d.Is4() {
			return bad("DNS server %v is not IPv4", d)
		}
	}
	network := u32(cfg.Subnet.Addr())
	bcast := network | (1<<(32-cfg.Subnet.Bits()) - 1)
	if !cfg.PoolStart.IsValid() && !cfg.PoolEnd.IsValid() {
		cfg.PoolStart, cfg.PoolEnd = addrU32(network+1), addrU32(bcast-1)
	}
	if !cfg.Subnet.Contains(cfg.PoolStart) || !cfg.Subnet.Contains(cfg.PoolEnd) || u32(cfg.PoolStart) > u32(cfg.PoolEnd) {
		return bad("pool %v-%v not an ascending range inside %v", cfg.PoolStart, cfg.PoolEnd, cfg.Subnet)
	}
	defaultTo(&cfg.LeaseTime, DefaultLeaseTime)
	if cfg.LeaseTime < 2*time.Second || cfg.LeaseTime/time.Second >= leaseTimeInfinite {
		return bad("lease time %v out of range", cfg.LeaseTime)
	}
	defaultTo(&cfg.OfferHold, DefaultOfferHold)
	defaultTo(&cfg.DeclineHold, DefaultDeclineHold)
	defaultTo(&cfg.ProbeWait, DefaultServerProbeWait)
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	excluded := append([]netip.Addr{cfg.ServerID, addrU32(network), addrU32(bcast)}, cfg.Reserved...)
	if cfg.Router.IsValid() {
		excluded = append(excluded, cfg.Router)
	}
	s := &Server{
		cfg:     cfg,
		clock:   cfg.Clock,
		mask:    net.CIDRMask(cfg.Subnet.Bits(), 32),
		t1:      time.Duration(float64(cfg.LeaseTime)*t1Fraction) / time.Second * time.Second,
		t2:      time.Duration(float64(cfg.LeaseTime)*t2Fraction) / time.Second * time.Second,
		pool:    newPool(cfg.PoolStart, cfg.PoolEnd, excluded),
		probing: make(map[netip.Addr]bool),
		exited:  make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.LeaseFile != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start opens UDP port 67 on the NIC and answers in the background. A
// second call does nothing.
func (s *Server) Start() error {
	var err error
	s.start.Do(func() {
		if s.cfg.Stack == nil {
			err = fmt.Errorf("dhcp: start server: no stack: %w", ErrBadConfig)
			close(s.exited)
			return
		}
		s.sock, err = openSocket(s.cfg.Stack, s.cfg.NIC, ServerPort)
		if err != nil {
			close(s.exited)
			return
		}
		go func() {
			defer close(s.exited)
			s.sock.recvLoop(s.serve)
		}()
	})
	return err
}

// Stop closes the socket and waits for the server's goroutine. The
// lease file is already current: every change was written as it
// happened.
func (s *Server) Stop() {
	s.start.Do(func() { close(s.exited) })
	s.stopOnce.Do(func() {
		s.cancel()
		if s.sock != nil {
			s.sock.close()
		}
	})
	<-s.exited
	s.probes.Wait()
}

// serve answers one datagram on the server's goroutine.
func (s *Server) serve(b []byte, from netip.AddrPort) {
	reply, dst, ok := s.handle(b, from)
	if !ok {
		return
	}
	if err := s.sock.send(reply, dst); err != nil {
		counter.Inc(&s.stats.V.SendErrors)
		s.logf("%v", err)
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	return s.stats.Load()
}

// Leases returns the server's bindings, ordered by address.
func (s *Server) Leases() []LeaseInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LeaseInfo, 0, len(s.pool.byAddr))
	for _, b := range s.pool.byAddr {
		out = append(out, leaseInfo(b))
	}
	slices.SortFunc(out, func(x, y LeaseInfo) int { return x.Addr.Compare(y.Addr) })
	return out
}

// leaseInfo describes b.
func leaseInfo(b *binding) LeaseInfo {
	li := LeaseInfo{Addr: b.addr, State: b.state.String(), Expires: b.expiry}
	k := []byte(b.key)
	switch k[0] {
	case keyClientID:
		li.ClientID = slices.Clone(k[1:])
	case keyHWAddr:
		li.HWType = k[1]
		li.HWAddr = slices.Clone(k[2:])
	}
	return li
}

// logf logs through cfg.Logf.
func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf("dhcp server %v: "+format, append([]any{s.cfg.ServerID}, args...)...)
	}
}

// errNotOurs marks a well-formed message the server must stay silent on.
var errNotOurs = errors.New("not for this server")

// handle processes one datagram from the client port and returns the
// reply to send, if any, and where. It never panics on any input (it is
// fuzzed: FuzzServerHandle) and counts every datagram once.
func (s *Server) handle(b []byte, from netip.AddrPort) (reply []byte, dst netip.AddrPort, ok bool) {
	m, err := decode(b)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest {
		if err != nil {
			counter.Inc(&s.stats.V.Malformed)
		} else {
			counter.Inc(&s.stats.V.Ignored)
		}
		return nil, netip.AddrPort{}, false
	}
	key, err := clientKeyOf(m)
	if err != nil {
		if errors.Is(err, ErrNoClientID) {
			counter.Inc(&s.stats.V.NoClientID)
			s.logf("refused %v from %v: %v", m.MessageType(), from, err)
		} else {
			counter.Inc(&s.stats.V.Malformed)
		}
		return nil, netip.AddrPort{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var out *dhcpv4.DHCPv4
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		counter.Inc(&s.stats.V.Discovers)
		out, err = s.discover(m, key, now, 0)
	case dhcpv4.MessageTypeRequest:
		counter.Inc(&s.stats.V.Requests)
		out, err = s.request(m, key, now)
	case dhcpv4.MessageTypeDecline:
		counter.Inc(&s.stats.V.Declines)
		err = s.decline(m, key, now)
	case dhcpv4.MessageTypeRelease:
		counter.Inc(&s.stats.V.Releases)
		err = s.release(m, key, now)
	case dhcpv4.MessageTypeInform:
		counter.Inc(&s.stats.V.Informs)
		out, err = s.inform(m)
	default:
		// OFFER, ACK, NAK: server-to-client types arriving at a server.
		counter.Inc(&s.stats.V.Ignored)
		return nil, netip.AddrPort{}, false
	}
	if err != nil {
		switch {
		case errors.Is(err, ErrMalformed):
			counter.Inc(&s.stats.V.Malformed)
		case errors.Is(err, ErrPoolExhausted):
			counter.Inc(&s.stats.V.PoolExhausted)
			s.logf("no address for client %x: %v", []byte(key[1:]), err)
		}
		return nil, netip.AddrPort{}, false
	}
	if out == nil {
		return nil, netip.AddrPort{}, false
	}
	switch out.MessageType() {
	case dhcpv4.MessageTypeOffer:
		counter.Inc(&s.stats.V.Offers)
	case dhcpv4.MessageTypeAck:
		counter.Inc(&s.stats.V.Acks)
	case dhcpv4.MessageTypeNak:
		counter.Inc(&s.stats.V.Naks)
	}
	return out.ToBytes(), replyDest(m, out), true
}

// clientKeyOf returns the key m's client is known by. Option 61 must be
// at least 2 bytes (RFC 2132 section 9.14). Without it an IPoIB client
// is refused: its chaddr is empty (RFC 4390 section 2.1), so nothing
// else tells two clients apart.
func clientKeyOf(m *dhcpv4.DHCPv4) (clientKey, error) {
	if id := m.Options.Get(dhcpv4.OptionClientIdentifier); id != nil {
		if len(id) < 2 {
			return "", fmt.Errorf("client identifier of %d bytes: %w", len(id), ErrMalformed)
		}
		return clientKey(append([]byte{keyClientID}, id...)), nil
	}
	if m.HWType == iana.HWType(HTypeIPoIB) || len(m.ClientHWAddr) == 0 || m.HWType > 0xff {
		return "", fmt.Errorf("%v with htype %d and no option 61: %w", m.MessageType(), m.HWType, ErrNoClientID)
	}
	return clientKey(append([]byte{keyHWAddr, byte(m.HWType)}, m.ClientHWAddr...)), nil
}

// replyDest picks where a reply goes (RFC 2131 section 4.1): to the relay
// agent if one forwarded the request; a NAK to everyone; to ciaddr when
// the client has an address; otherwise to the limited broadcast address.
// RFC 4390 section 2.2 asks for the broadcast when the client sets the
// BROADCAST flag; on IPoIB it is the only choice whatever the flag,
// since the empty chaddr gives no link address to unicast to.
func replyDest(req, reply *dhcpv4.DHCPv4) netip.AddrPort {
	if gi := addrOf(req.GatewayIPAddr); isUsableUnicast(gi) {
		return netip.AddrPortFrom(gi, ServerPort)
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return clientBroadcast
	}
	if ci := addrOf(req.ClientIPAddr); isUsableUnicast(ci) {
		return netip.AddrPortFrom(ci, ClientPort)
	}
	return clientBroadcast
}

// reply starts the answer of type mt to req, echoing what RFC 2131
// section 4.3.1 table 3 says to echo (xid, flags, giaddr, htype and
// chaddr) plus the client identifier (RFC 6842), and naming the server.
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m := newIPoIBMessage(dhcpv4.OpcodeBootReply, req.TransactionID, mt)
	m.HWType = req.HWType
	m.ClientHWAddr = req.ClientHWAddr
	m.Flags = req.Flags
	m.GatewayIPAddr = ip4(addrOf(req.GatewayIPAddr))
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); id != nil {
		m.UpdateOption(dhcpv4.OptClientIdentifier(id))
	}
	m.UpdateOption(dhcpv4.OptServerIdentifier(ip4(s.cfg.ServerID)))
	return m
}

// withConfig adds the subnet's configuration options.
func (s *Server) withConfig(m *dhcpv4.DHCPv4) {
	m.UpdateOption(dhcpv4.OptSubnetMask(s.mask))
	if s.cfg.Router.IsValid() {
		m.UpdateOption(dhcpv4.OptRouter(ip4(s.cfg.Router)))
	}
	if len(s.cfg.DNS) > 0 {
		ips := make([]net.IP, len(s.cfg.DNS))
		for i, d := range s.cfg.DNS {
			ips[i] = ip4(d)
		}
		m.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	if s.cfg.DomainName != "" {
		m.UpdateOption(dhcpv4.OptDomainName(s.cfg.DomainName))
	}
}

// withLease adds yiaddr and the lease times.
func (s *Server) withLease(m *dhcpv4.DHCPv4, a netip.Addr) {
	m.YourIPAddr = ip4(a)
	s.withConfig(m)
	m.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime))
	m.UpdateOption(dhcpv4.OptRenewTimeValue(s.t1))
	m.UpdateOption(dhcpv4.OptRebindingTimeValue(s.t2))
}

// discover answers a DISCOVER with an OFFER that holds an address for
// OfferHold (RFC 2131 section 4.3.1). An address new to the client is
// probed first, when there is a Probe: the OFFER then goes out from the
// probe's goroutine (see probeThenOffer), and discover returns none.
// tries counts the addresses already probed for this DISCOVER.
func (s *Server) discover(m *dhcpv4.DHCPv4, key clientKey, now time.Time, tries int) (*dhcpv4.DHCPv4, error) {
	a, ok := s.pool.choose(key, addrOf(m.RequestedIPAddress()), now)
	if !ok {
		return nil, fmt.Errorf("DISCOVER: %d addresses: %w", s.pool.size(), ErrPoolExhausted)
	}
	if s.probing[a] {
		return nil, nil // a retransmission: the probe's end answers
	}
	b := s.pool.byKey[key]
	if b != nil && b.addr == a && b.state == bindBound && b.active(now) {
		// A bound client that lost its state: offer what it has
		// without shortening the lease.
	} else {
		s.pool.set(key, a, bindOffered, now.Add(s.cfg.OfferHold))
		if s.cfg.Probe != nil && (b == nil || b.addr != a) && s.sock != nil {
			if tries >= serverProbeTries {
				return nil, nil // the client's next DISCOVER tries again
			}
			s.probing[a] = true
			s.probes.Add(1)
			go s.probeThenOffer(m, key, a, tries)
			return nil, nil
		}
	}
	out := s.reply(m, dhcpv4.MessageTypeOffer)
	s.withLease(out, a)
	return out, nil
}

// probeThenOffer probes a, then offers it to key's client if no one
// answered and the offer still stands; if someone did, it quarantines a
// and chooses again.
func (s *Server) probeThenOffer(m *dhcpv4.DHCPv4, key clientKey, a netip.Addr, tries int) {
	defer s.probes.Done()
	counter.Inc(&s.stats.V.Probes)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ProbeWait)
	inUse, err := s.cfg.Probe(ctx, a)
	cancel()
	if err != nil {
		s.logf("probe of %v: %v", a, err)
		inUse = false
	}
	s.mu.Lock()
	delete(s.probing, a)
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	now := s.clock.Now()
	var out *dhcpv4.DHCPv4
	if b := s.pool.byAddr[a]; b == nil || b.key != key || b.state != bindOffered {
		// Superseded while probing (a REQUEST, a DECLINE, another
		// client): nothing to offer.
	} else if inUse {
		counter.Inc(&s.stats.V.ProbeConflicts)
		s.pool.drop(b)
		s.pool.declined[a] = now.Add(s.cfg.DeclineHold)
		s.logf("%v answers on the link though no lease holds it; out of the pool until %v", a, now.Add(s.cfg.DeclineHold).Format(time.RFC3339))
		s.persist()
		out, err = s.discover(m, key, now, tries+1)
		if errors.Is(err, ErrPoolExhausted) {
			counter.Inc(&s.stats.V.PoolExhausted)
		}
	} else {
		out = s.reply(m, dhcpv4.MessageTypeOffer)
		s.withLease(out, a)
	}
	s.mu.Unlock()
	if out == nil {
		return
	}
	counter.Inc(&s.stats.V.Offers)
	if err := s.sock.send(out.ToBytes(), replyDest(m, out)); err != nil {
		counter.Inc(&s.stats.V.SendErrors)
		s.logf("%v", err)
	}
}

// request answers a REQUEST in each of the client states RFC 2131
// section 4.3.2 tells apart by ciaddr and options 50 and 54.
func (s *Server) request(m *dhcpv4.DHCPv4, key clientKey, now time.Time) (*dhcpv4.DHCPv4, error) {
	sid := m.Options.Get(dhcpv4.OptionServerIdentifier)
	requested := addrOf(m.RequestedIPAddress())
	ciaddr := addrOf(m.ClientIPAddr)
	b := s.pool.byKey[key]
	switch {
	case sid != nil:
		// SELECTING: the client chose among offers.
		if addrOf(sid) != s.cfg.ServerID {
			// Another server won; free what we offered (section 4.3.2).
			if b != nil && b.state == bindOffered {
				b.state, b.expiry = bindReleased, now
			}
			return nil, nil
		}
		if !requested.IsValid() {
			return nil, fmt.Errorf("REQUEST in SELECTING without option 50: %w", ErrMalformed)
		}
		if s.pool.freeFor(requested, key, now) {
			return s.ack(m, key, requested, now), nil
		}
		return s.nak(m, "requested address not available"), nil
	case requested.IsValid():
		// INIT-REBOOT: the client checks a remembered address.
		if !s.cfg.Subnet.Contains(requested) {
			return s.nak(m, "wrong network"), nil
		}
		if b == nil {
			return nil, nil // no record: stay silent (section 4.3.2)
		}
		if b.addr != requested || !s.pool.freeFor(requested, key, now) {
			return s.nak(m, "address not yours"), nil
		}
		return s.ack(m, key, requested, now), nil
	case ciaddr.IsValid() && !ciaddr.IsUnspecified():
		// RENEWING (unicast) or REBINDING (broadcast). An address
		// free for the client is acknowledged even without a record
		// of it: a server that lost its bindings (no lease file)
		// should not tear down working clients.
		if s.pool.freeFor(ciaddr, key, now) {
			return s.ack(m, key, ciaddr, now), nil
		}
		return s.nak(m, "address not yours"), nil
	default:
		return nil, fmt.Errorf("REQUEST with neither ciaddr nor option 50: %w", ErrMalformed)
	}
}

// ack binds a to key for LeaseTime, persists, and builds the ACK.
func (s *Server) ack(m *dhcpv4.DHCPv4, key clientKey, a netip.Addr, now time.Time) *dhcpv4.DHCPv4 {
	s.pool.set(key, a, bindBound, now.Add(s.cfg.LeaseTime))
	s.persist()
	out := s.reply(m, dhcpv4.MessageTypeAck)
	out.ClientIPAddr = ip4(addrOf(m.ClientIPAddr))
	s.withLease(out, a)
	return out
}

// nak builds a NAK with a reason in option 56 (RFC 2131 section 4.3.2).
func (s *Server) nak(m *dhcpv4.DHCPv4, why string) *dhcpv4.DHCPv4 {
	out := s.reply(m, dhcpv4.MessageTypeNak)
	out.UpdateOption(dhcpv4.OptMessage(why))
	return out
}

// decline quarantines the address a client found in use (RFC 2131
// section 4.3.3) and drops the client's binding to it.
func (s *Server) decline(m *dhcpv4.DHCPv4, key clientKey, now time.Time) error {
	if sid := m.Options.Get(dhcpv4.OptionServerIdentifier); sid != nil && addrOf(sid) != s.cfg.ServerID {
		return errNotOurs
	}
	a := addrOf(m.RequestedIPAddress())
	if !s.pool.contains(a) {
		return fmt.Errorf("DECLINE of %v, not in the pool: %w", a, ErrMalformed)
	}
	if b := s.pool.byAddr[a]; b != nil && b.key == key {
		s.pool.drop(b)
	}
	s.pool.declined[a] = now.Add(s.cfg.DeclineHold)
	s.logf("%v declined, out of the pool until %v", a, now.Add(s.cfg.DeclineHold).Format(time.RFC3339))
	s.persist()
	return nil
}

// release frees the client's address (RFC 2131 section 4.3.4), keeping
// the record so the client gets it back next time.
func (s *Server) release(m *dhcpv4.DHCPv4, key clientKey, now time.Time) error {
	if sid := m.Options.Get(dhcpv4.OptionServerIdentifier); sid != nil && addrOf(sid) != s.cfg.ServerID {
		return errNotOurs
	}
	b := s.pool.byKey[key]
	if b == nil || b.addr != addrOf(m.ClientIPAddr) {
		return errNotOurs
	}
	b.state, b.expiry = bindReleased, now
	s.persist()
	return nil
}

// inform answers an INFORM: configuration without a lease, sent to
// ciaddr (RFC 2131 section 4.3.5).
func (s *Server) inform(m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	ci := addrOf(m.ClientIPAddr)
	if !isUsableUnicast(ci) {
		return nil, fmt.Errorf("INFORM with ciaddr %v: %w", m.ClientIPAddr, ErrMalformed)
	}
	out := s.reply(m, dhcpv4.MessageTypeAck)
	out.ClientIPAddr = ip4(ci)
	s.withConfig(out)
	return out, nil
}

// defaultTo sets *v to d when it is zero or negative: how a Config's
// durations and counts take their defaults.
func defaultTo[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
