package dhcp

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/ib"
)

// Retransmission defaults of RFC 2131 section 4.1: the first wait 4 s,
// doubling to 64 s, each randomised by ±1 s so that clients that started
// together (after a power cut, a switch reboot) drift apart.
const (
	DefaultBackoffInitial = 4 * time.Second
	DefaultBackoffMax     = 64 * time.Second
	DefaultBackoffJitter  = time.Second
	// DefaultRequestTries is how many REQUESTs the client sends in
	// REQUESTING before it gives up on the offer and starts again (RFC
	// 2131 section 3.1 step 5 and 4.4.1): one per backoff step up to 64 s.
	DefaultRequestTries = 5
	// DefaultRenewMin is the shortest wait between REQUESTs in RENEWING
	// and REBINDING (RFC 2131 section 4.4.5: half the remaining time,
	// down to a minimum of 60 seconds).
	DefaultRenewMin = 60 * time.Second
	// DefaultDeclineWait is how long the client waits after a DECLINE
	// before it starts over (RFC 2131 section 3.1 step 5: at least ten
	// seconds, so a misconfigured network does not loop at line rate).
	DefaultDeclineWait = 10 * time.Second
	// rebootTries is how many REQUESTs the client sends in INIT-REBOOT
	// before it falls back to INIT (asking, in its DISCOVER, for the
	// same address): a server with no record of the client stays
	// silent (RFC 2131 section 4.3.2), so waiting long buys nothing.
	rebootTries = 2
)

// Backoff shapes retransmission in SELECTING and REQUESTING: the n-th
// wait (from 0) is Initial<<n, capped at Max, plus a uniform random
// offset in [-Jitter, +Jitter]. Zero fields take the RFC 2131 defaults
// (a negative Jitter means none); tests shrink them to milliseconds.
type Backoff struct {
	Initial, Max, Jitter time.Duration
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Stack and NIC name the gVisor NIC to configure. Required. The NIC
	// must carry IPv4 and UDP; it need not have an address.
	Stack *gvstack.Stack
	NIC   tcpip.NICID
	// GUID is the port GUID the client identifier is derived from (see
	// NewClientID). Required.
	GUID ib.GUID
	// IAID goes into the client identifier; zero means DefaultIAID(GUID).
	IAID uint32
	// Hostname, if set, is sent as option 12.
	Hostname string
	// Clock drives every timer; nil means SystemClock.
	Clock Clock
	// Backoff shapes retransmission; see Backoff.
	Backoff Backoff
	// RequestTries is how many REQUESTs to send for one offer; zero
	// means DefaultRequestTries.
	RequestTries int
	// RenewMin is the shortest retransmission wait while renewing or
	// rebinding; zero means DefaultRenewMin.
	RenewMin time.Duration
	// DeclineWait is the pause after a DECLINE; zero means
	// DefaultDeclineWait.
	DeclineWait time.Duration
	// Probe, if set, is asked whether an acknowledged address is already
	// in use (an ARP probe, RFC 2131 section 4.4.1 and RFC 5227) before
	// the client configures it; true makes the client DECLINE it. It
	// runs on its own goroutine and must return soon after ctx ends. An
	// error counts as "not in use": a failed probe is no evidence of a
	// conflict.
	Probe func(ctx context.Context, addr netip.Addr) (inUse bool, err error)
	// LeaseFile, if set, keeps the lease across restarts: written on
	// every binding and renewal, removed when the lease ends (released,
	// expired, refused). A client that starts with a lease of its own
	// there, still running, asks for it back in INIT-REBOOT (RFC 2131
	// section 3.2) rather than starting over.
	LeaseFile string
	// OnEvent, if set, is called on the client's goroutine for every
	// Event. It must not block or call Stop; reading Lease and State is
	// fine.
	OnEvent func(Event)
	// Seed, if non-zero, seeds transaction IDs and jitter, for tests
	// that replay exact messages. Zero draws a seed from crypto/rand.
	Seed uint64
	// Logf, if set, receives one line per notable step.
	Logf func(format string, args ...any)
}

// State is where the client is in the state machine of RFC 2131 section
// 4.4, figure 5, plus Probing (between ACK and BOUND while the Probe hook
// runs) and Stopped. Rebooting is figure 5's REBOOTING, numbered last.
type State int

// Client states.
const (
	StateInit State = iota
	StateSelecting
	StateRequesting
	StateProbing
	StateBound
	StateRenewing
	StateRebinding
	StateStopped
	StateRebooting
)

var stateNames = [...]string{"INIT", "SELECTING", "REQUESTING", "PROBING", "BOUND", "RENEWING", "REBINDING", "STOPPED", "REBOOTING"}

// String returns the RFC's name of the state.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// EventKind says what changed.
type EventKind int

// Event kinds.
const (
	// EventBound: a lease was acquired and configured.
	EventBound EventKind = iota
	// EventRenewed: the lease was extended by renewal or rebinding.
	EventRenewed
	// EventExpired: the lease ran out; the address is gone.
	EventExpired
	// EventNak: a server refused; the client starts over (any address
	// it held is gone).
	EventNak
	// EventDeclined: the Probe hook found the address in use; the client
	// declined it.
	EventDeclined
	// EventReleased: Stop released the lease; the address is gone.
	EventReleased
)

var eventNames = [...]string{"bound", "renewed", "expired", "nak", "declined", "released"}

// String names the kind.
func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change of the client's lease.
type Event struct {
	Kind EventKind
	// Lease is the lease concerned: the new one for Bound and Renewed,
	// the one lost or declined for the others (zero for a NAK in
	// REQUESTING).
	Lease Lease
	// At is the client clock's time of the change.
	At time.Time
}

// ClientStats counts a client's traffic.
type ClientStats struct {
	Discovers, Requests, Declines, Releases uint64
	Offers, Acks, Naks                      uint64
	// Retransmits counts DISCOVERs and REQUESTs sent again.
	Retransmits uint64
	// Malformed counts undecodable messages; Ignored counts decodable
	// ones not meant for this client or this state.
	Malformed, Ignored uint64
	// SendErrors counts messages gVisor would not send.
	SendErrors uint64
	// ConfigErrors counts failures to change the NIC.
	ConfigErrors uint64
}

// clientCounters is ClientStats as atomics.
type clientCounters struct {
	discovers, requests, declines, releases atomic.Uint64
	offers, acks, naks                      atomic.Uint64
	retransmits                             atomic.Uint64
	malformed, ignored                      atomic.Uint64
	sendErrors, configErrors                atomic.Uint64
}

// eventKind tags what the client's goroutine is woken for.
type evKind int

const (
	evRx evKind = iota
	evTimer
	evProbe
)

// event is one unit of work for the client's goroutine.
type event struct {
	kind  evKind
	data  []byte
	gen   uint64
	inUse bool
}

// Client is a DHCP client for one IPoIB NIC of a gVisor stack (RFC 2131
// with the changes of RFC 4390). One goroutine owns its state machine;
// the methods are safe from any goroutine. See the package doc.
type Client struct {
	cfg   ClientConfig
	clock Clock
	id    []byte
	tr    transport
	netc  netConfig
	sock  *socket
	rng   *rand.Rand

	events  chan event
	stopReq chan struct{}
	exited  chan struct{}
	start   sync.Once
	stop    sync.Once

	stats clientCounters
	// curXID mirrors xid for the socket goroutine's filter.
	curXID atomic.Uint32

	// Owned by the run goroutine (or by a test driving the handlers
	// without one).
	state     State
	xid       dhcpv4.TransactionID
	attempt   int
	began     time.Time
	reqSent   time.Time
	offer     *dhcpv4.DHCPv4
	lease     *Lease
	pending   *Lease // acknowledged, being probed
	reboot    *Lease // the lease file's, asked for in REBOOTING
	prevAddr  netip.Addr
	timer     Timer
	timerGen  uint64
	probeStop context.CancelFunc
	probeGen  uint64

	// pub is what other goroutines read.
	mu      sync.Mutex
	pub     State
	pubL    *Lease
	changed chan struct{}
}

// NewClient checks cfg and returns a client that has not started.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Stack == nil {
		return nil, fmt.Errorf("dhcp: new client: no stack: %w", ErrBadConfig)
	}
	if _, ok := cfg.Stack.NICInfo()[cfg.NIC]; !ok {
		return nil, fmt.Errorf("dhcp: new client: no NIC %d: %w", cfg.NIC, ErrBadConfig)
	}
	if cfg.GUID == 0 {
		return nil, fmt.Errorf("dhcp: new client: zero GUID: %w", ErrBadConfig)
	}
	return newClient(cfg, nil, &stackConfig{s: cfg.Stack, nic: cfg.NIC}), nil
}

// newClient builds a client over tr and netc, which tests replace. A nil
// tr is filled in by Start with a gVisor socket.
func newClient(cfg ClientConfig, tr transport, netc netConfig) *Client {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.IAID == 0 {
		cfg.IAID = DefaultIAID(cfg.GUID)
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = DefaultBackoffInitial
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = DefaultBackoffMax
	}
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		cfg.Backoff.Max = cfg.Backoff.Initial
	}
	if cfg.Backoff.Jitter < 0 {
		cfg.Backoff.Jitter = 0
	} else if cfg.Backoff.Jitter == 0 {
		cfg.Backoff.Jitter = DefaultBackoffJitter
	}
	if cfg.RequestTries <= 0 {
		cfg.RequestTries = DefaultRequestTries
	}
	if cfg.RenewMin <= 0 {
		cfg.RenewMin = DefaultRenewMin
	}
	if cfg.DeclineWait <= 0 {
		cfg.DeclineWait = DefaultDeclineWait
	}
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	return &Client{
		cfg:     cfg,
		clock:   cfg.Clock,
		id:      NewClientID(cfg.IAID, cfg.GUID),
		tr:      tr,
		netc:    netc,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		events:  make(chan event, 128),
		stopReq: make(chan struct{}),
		exited:  make(chan struct{}),
		changed: make(chan struct{}),
	}
}

// ClientID returns the client identifier the client sends (option 61).
func (c *Client) ClientID() []byte { return bytes.Clone(c.id) }

// Start opens the client's socket (UDP port 68 on the NIC), readies the
// NIC to send from 0.0.0.0 and begins acquisition in the background. A
// second call does nothing.
func (c *Client) Start() error {
	var err error
	c.start.Do(func() {
		if c.tr == nil {
			var k *socket
			k, err = openSocket(c.cfg.Stack, c.cfg.NIC, ClientPort)
			if err != nil {
				close(c.exited)
				return
			}
			c.sock, c.tr = k, k
		}
		if e := c.netc.ensureSource(); e != nil {
			c.stats.configErrors.Add(1)
			c.logf("%v", e)
		}
		if c.sock != nil {
			go c.sock.recvLoop(c.deliver)
		}
		go c.run()
	})
	return err
}

// Stop releases the lease if there is one (a RELEASE to its server,
// RFC 2131 section 4.4.6), removes the address and routes, closes the
// socket and waits for the client's goroutine, or for ctx. Later calls
// wait the same way.
func (c *Client) Stop(ctx context.Context) error {
	c.start.Do(func() { close(c.exited) }) // never started: nothing runs
	c.stop.Do(func() { close(c.stopReq) })
	select {
	case <-c.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dhcp: stop client on NIC %d: %w", c.cfg.NIC, ctx.Err())
	}
}

// State returns the client's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pub
}

// Lease returns the lease in force, if any.
func (c *Client) Lease() (Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pubL == nil {
		return Lease{}, false
	}
	return c.pubL.clone(), true
}

// WaitBound waits until the client holds a lease and returns it, or
// returns ctx's error, or ErrStopped once the client has stopped.
func (c *Client) WaitBound(ctx context.Context) (Lease, error) {
	for {
		c.mu.Lock()
		l, st, ch := c.pubL, c.pub, c.changed
		c.mu.Unlock()
		if l != nil {
			return l.clone(), nil
		}
		if st == StateStopped {
			return Lease{}, fmt.Errorf("dhcp: wait for lease on NIC %d: %w", c.cfg.NIC, ErrStopped)
		}
		select {
		case <-ch:
		case <-c.exited:
			return Lease{}, fmt.Errorf("dhcp: wait for lease on NIC %d: %w", c.cfg.NIC, ErrStopped)
		case <-ctx.Done():
			return Lease{}, fmt.Errorf("dhcp: wait for lease on NIC %d: %w", c.cfg.NIC, ctx.Err())
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	s := &c.stats
	return ClientStats{
		Discovers: s.discovers.Load(), Requests: s.requests.Load(),
		Declines: s.declines.Load(), Releases: s.releases.Load(),
		Offers: s.offers.Load(), Acks: s.acks.Load(), Naks: s.naks.Load(),
		Retransmits: s.retransmits.Load(),
		Malformed:   s.malformed.Load(), Ignored: s.ignored.Load(),
		SendErrors: s.sendErrors.Load(), ConfigErrors: s.configErrors.Load(),
	}
}

// run is the client's goroutine.
func (c *Client) run() {
	defer close(c.exited)
	c.began = c.clock.Now()
	if l, ok := c.loadLease(c.began); ok {
		c.enterReboot(l)
	} else {
		c.enterInit()
	}
	for {
		select {
		case ev := <-c.events:
			c.dispatch(ev)
		case <-c.stopReq:
			c.shutdown()
			return
		}
	}
}

// dispatch hands one event to its handler.
func (c *Client) dispatch(ev event) {
	switch ev.kind {
	case evRx:
		c.handleMessage(ev.data)
	case evTimer:
		if ev.gen == c.timerGen {
			c.timer = nil
			c.tick()
		}
	case evProbe:
		if ev.gen == c.probeGen && c.state == StateProbing {
			c.probeDone(ev.inUse)
		}
	}
}

// shutdown releases and deconfigures on Stop.
func (c *Client) shutdown() {
	c.stopTimer()
	c.cancelProbe()
	if c.lease != nil {
		c.sendRelease()
		l := c.lease
		c.dropLease()
		c.emit(EventReleased, l)
	}
	if err := c.netc.dropSource(); err != nil {
		c.stats.configErrors.Add(1)
		c.logf("%v", err)
	}
	if c.sock != nil {
		c.sock.close()
	}
	c.setState(StateStopped)
}

// setState records s and publishes it with the lease.
func (c *Client) setState(s State) {
	c.state = s
	c.mu.Lock()
	c.pub = s
	if c.lease != nil {
		l := c.lease.clone()
		c.pubL = &l
	} else {
		c.pubL = nil
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// emit reports an event to the OnEvent hook.
func (c *Client) emit(k EventKind, l *Lease) {
	if c.cfg.OnEvent == nil {
		return
	}
	ev := Event{Kind: k, At: c.clock.Now()}
	if l != nil {
		ev.Lease = l.clone()
	}
	c.cfg.OnEvent(ev)
}

// logf logs through cfg.Logf.
func (c *Client) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf("dhcp client NIC %d: "+format, append([]any{c.cfg.NIC}, args...)...)
	}
}

// --- timers ---

// armIn makes the client's one timer fire after d; an earlier arming is
// forgotten. A generation number makes a stale firing harmless even if
// Stop lost the race with it.
func (c *Client) armIn(d time.Duration) {
	c.stopTimer()
	c.timerGen++
	gen := c.timerGen
	c.timer = c.clock.AfterFunc(d, func() { c.post(event{kind: evTimer, gen: gen}) })
}

// armAt is armIn for an absolute time.
func (c *Client) armAt(t time.Time) { c.armIn(t.Sub(c.clock.Now())) }

// stopTimer cancels the timer.
func (c *Client) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.timerGen++
}

// backoff returns the wait before retransmission number c.attempt.
func (c *Client) backoff() time.Duration {
	b := c.cfg.Backoff
	d := b.Initial
	for i := 0; i < c.attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d += time.Duration(c.rng.Int64N(int64(2*b.Jitter)+1)) - b.Jitter
	}
	return max(d, time.Millisecond)
}

// tick is the timer's handler: a retransmission, the end of the
// DECLINE pause, or a lease deadline, depending on the state.
func (c *Client) tick() {
	switch c.state {
	case StateInit:
		c.enterInit()
	case StateSelecting:
		c.attempt++
		c.stats.retransmits.Add(1)
		c.sendDiscover()
		c.armIn(c.backoff())
	case StateRebooting:
		c.attempt++
		if c.attempt >= rebootTries {
			c.logf("no answer to %d REQUESTs for %v in INIT-REBOOT, starting over", c.attempt, c.reboot.Addr)
			c.prevAddr = c.reboot.Addr.Addr()
			c.reboot = nil
			c.enterInit()
			return
		}
		c.stats.retransmits.Add(1)
		c.sendRebootRequest()
		c.armIn(c.backoff())
	case StateRequesting:
		c.attempt++
		if c.attempt >= c.cfg.RequestTries {
			c.logf("no answer to %d REQUESTs for %v, starting over", c.attempt, c.offer.YourIPAddr)
			c.enterInit()
			return
		}
		c.stats.retransmits.Add(1)
		c.sendSelectingRequest()
		c.armIn(c.backoff())
	case StateBound, StateRenewing, StateRebinding:
		c.leaseTick()
	}
}

// leaseTick moves a bound client along its lease (RFC 2131 section
// 4.4.5) by comparing now with the lease's absolute deadlines, so a clock
// that jumps over several of them lands in the right state.
func (c *Client) leaseTick() {
	l := c.lease
	if l.Infinite() {
		return
	}
	now := c.clock.Now()
	switch {
	case !now.Before(l.Expiry()):
		c.logf("lease %v expired", l.Addr)
		c.dropLease()
		c.emit(EventExpired, l)
		c.enterInit()
	case !now.Before(l.RebindAt()):
		if c.state != StateRebinding {
			c.newXID()
			c.reqSent = now
			c.setState(StateRebinding)
		} else {
			c.stats.retransmits.Add(1)
		}
		c.sendLeaseRequest(serverBroadcast)
		c.armAt(c.retryAt(now, l.Expiry()))
	case !now.Before(l.RenewAt()):
		if c.state != StateRenewing {
			c.newXID()
			c.reqSent = now
			c.setState(StateRenewing)
		} else {
			c.stats.retransmits.Add(1)
		}
		c.sendLeaseRequest(netip.AddrPortFrom(l.ServerID, ServerPort))
		c.armAt(c.retryAt(now, l.RebindAt()))
	default:
		c.armAt(l.RenewAt())
	}
}

// retryAt returns when to retransmit in RENEWING or REBINDING: half way
// to limit, at least RenewMin on, and never past limit, where the next
// state takes over.
func (c *Client) retryAt(now, limit time.Time) time.Time {
	t := now.Add(max(limit.Sub(now)/2, c.cfg.RenewMin))
	if t.After(limit) {
		return limit
	}
	return t
}

// --- state entry ---

// newXID draws a fresh transaction ID (RFC 2131 section 4.4.1: a new one
// per exchange, the same one for its retransmissions).
func (c *Client) newXID() {
	x := c.rng.Uint32()
	binary.BigEndian.PutUint32(c.xid[:], x)
	c.curXID.Store(x)
}

// enterReboot asks for l, the lease of an earlier run, again (RFC 2131
// section 3.2 and 4.4.2, INIT-REBOOT): a REQUEST with the address in
// option 50 and no server identifier.
func (c *Client) enterReboot(l *Lease) {
	c.offer, c.pending, c.reboot = nil, nil, l
	c.attempt = 0
	c.newXID()
	c.reqSent = c.clock.Now()
	c.setState(StateRebooting)
	c.logf("asking for %v again (INIT-REBOOT)", l.Addr)
	c.sendRebootRequest()
	c.armIn(c.backoff())
}

// enterInit starts acquisition: a new transaction and a DISCOVER.
func (c *Client) enterInit() {
	c.offer, c.pending, c.reboot = nil, nil, nil
	c.attempt = 0
	c.began = c.clock.Now()
	c.newXID()
	c.setState(StateSelecting)
	c.sendDiscover()
	c.armIn(c.backoff())
}

// dropLease removes the lease from the NIC and forgets it, keeping its
// address to ask for again (RFC 2131 section 4.4.1 lets a DISCOVER
// suggest one).
func (c *Client) dropLease() {
	l := c.lease
	c.lease = nil
	c.prevAddr = l.Addr.Addr()
	c.forgetLease()
	if err := c.netc.deconfigure(l); err != nil {
		c.stats.configErrors.Add(1)
		c.logf("%v", err)
	}
	if err := c.netc.ensureSource(); err != nil {
		c.stats.configErrors.Add(1)
		c.logf("%v", err)
	}
	c.setState(c.state)
}

// bind configures l and enters BOUND. A renewal that kept the address
// and router leaves the NIC alone; one that changed them replaces the old
// configuration (and counts as a new binding if the address changed).
func (c *Client) bind(l *Lease, renewed bool) {
	if old := c.lease; old != nil && (old.Addr != l.Addr || old.Router != l.Router) {
		renewed = renewed && old.Addr == l.Addr
		c.lease = nil
		if err := c.netc.deconfigure(old); err != nil {
			c.stats.configErrors.Add(1)
			c.logf("%v", err)
		}
	}
	if c.lease == nil {
		if err := c.netc.configure(l); err != nil {
			c.stats.configErrors.Add(1)
			c.logf("%v", err)
		}
	}
	c.lease, c.pending, c.offer, c.reboot = l, nil, nil, nil
	c.saveLease(l)
	c.setState(StateBound)
	if renewed {
		c.logf("renewed %v", l)
		c.emit(EventRenewed, l)
	} else {
		c.logf("bound %v", l)
		c.emit(EventBound, l)
	}
	c.leaseTick()
}

// --- receiving ---

// handleMessage processes one datagram from the server port. Nothing in
// it may panic on any input: it is fuzzed (FuzzClientHandle).
func (c *Client) handleMessage(b []byte) {
	m, err := decode(b)
	if err != nil {
		c.stats.malformed.Add(1)
		return
	}
	if m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != c.xid {
		c.stats.ignored.Add(1)
		return
	}
	// RFC 6842 servers echo the client identifier; a reply carrying
	// someone else's is for someone else, whatever its xid.
	if id := m.Options.Get(dhcpv4.OptionClientIdentifier); id != nil && !bytes.Equal(id, c.id) {
		c.stats.ignored.Add(1)
		return
	}
	switch mt := m.MessageType(); {
	case mt == dhcpv4.MessageTypeOffer && c.state == StateSelecting:
		c.handleOffer(m)
	case mt == dhcpv4.MessageTypeAck && c.state == StateRequesting:
		c.handleSelectingAck(m)
	case mt == dhcpv4.MessageTypeAck && c.state == StateRebooting:
		c.handleRebootAck(m)
	case mt == dhcpv4.MessageTypeNak && c.state == StateRebooting:
		c.stats.naks.Add(1)
		l := c.reboot
		c.logf("NAK for %v in INIT-REBOOT: %q", l.Addr, m.Message())
		c.reboot = nil
		c.forgetLease()
		c.emit(EventNak, l)
		c.enterInit()
	case mt == dhcpv4.MessageTypeNak && c.state == StateRequesting:
		if !sameServer(m, addrOf(c.offer.ServerIdentifier())) {
			c.stats.ignored.Add(1)
			return
		}
		c.stats.naks.Add(1)
		c.logf("NAK for %v from %v: %q", c.offer.YourIPAddr, c.offer.ServerIdentifier(), m.Message())
		c.emit(EventNak, nil)
		c.enterInit()
	case mt == dhcpv4.MessageTypeAck && (c.state == StateRenewing || c.state == StateRebinding):
		l, err := leaseFromAck(m, c.reqSent)
		if err != nil {
			c.stats.malformed.Add(1)
			return
		}
		c.stats.acks.Add(1)
		c.bind(l, true)
	case mt == dhcpv4.MessageTypeNak && (c.state == StateRenewing || c.state == StateRebinding):
		c.stats.naks.Add(1)
		l := c.lease
		c.logf("NAK renewing %v: %q", l.Addr, m.Message())
		c.dropLease()
		c.emit(EventNak, l)
		c.enterInit()
	default:
		c.stats.ignored.Add(1)
	}
}

// handleOffer takes the first usable offer (RFC 2131 section 4.4.1 lets
// the client choose; waiting for more buys nothing on a fabric with one
// server) and requests it.
func (c *Client) handleOffer(m *dhcpv4.DHCPv4) {
	if !isUsableUnicast(addrOf(m.YourIPAddr)) || !isUsableUnicast(addrOf(m.ServerIdentifier())) {
		c.stats.malformed.Add(1)
		return
	}
	c.stats.offers.Add(1)
	c.offer = m
	c.attempt = 0
	c.reqSent = c.clock.Now()
	c.setState(StateRequesting)
	c.sendSelectingRequest()
	c.armIn(c.backoff())
}

// handleSelectingAck checks an ACK against the offer requested and binds
// it, after the Probe hook when there is one.
func (c *Client) handleSelectingAck(m *dhcpv4.DHCPv4) {
	ours := sameServer(m, addrOf(c.offer.ServerIdentifier())) && m.YourIPAddr.Equal(c.offer.YourIPAddr)
	c.acceptAck(m, ours)
}

// handleRebootAck binds the address asked for in INIT-REBOOT, after the
// Probe hook when there is one.
func (c *Client) handleRebootAck(m *dhcpv4.DHCPv4) {
	c.acceptAck(m, addrOf(m.YourIPAddr) == c.reboot.Addr.Addr())
}

// acceptAck turns an ACK that answers what the client asked for (ours)
// into a lease and binds it.
func (c *Client) acceptAck(m *dhcpv4.DHCPv4, ours bool) {
	if !ours {
		c.stats.ignored.Add(1)
		return
	}
	l, err := leaseFromAck(m, c.reqSent)
	if err != nil {
		c.stats.malformed.Add(1)
		return
	}
	c.stats.acks.Add(1)
	c.probeThenBind(l)
}

// probeThenBind binds an acknowledged lease, or first runs the Probe
// hook on it (PROBING) when there is one.
func (c *Client) probeThenBind(l *Lease) {
	c.stopTimer()
	if c.cfg.Probe == nil {
		c.bind(l, false)
		return
	}
	c.pending = l
	c.setState(StateProbing)
	ctx, cancel := context.WithCancel(context.Background())
	c.probeStop = cancel
	c.probeGen++
	gen, probe, addr := c.probeGen, c.cfg.Probe, l.Addr.Addr()
	go func() {
		inUse, err := probe(ctx, addr)
		if err != nil {
			inUse = false
		}
		c.post(event{kind: evProbe, gen: gen, inUse: inUse})
	}()
}

// probeDone binds the probed lease, or declines it and pauses.
func (c *Client) probeDone(inUse bool) {
	c.cancelProbe()
	l := c.pending
	if !inUse {
		c.bind(l, false)
		return
	}
	c.logf("%v is in use, declining it", l.Addr.Addr())
	c.sendDecline(l)
	c.pending, c.offer, c.reboot = nil, nil, nil
	c.forgetLease()
	c.emit(EventDeclined, l)
	c.setState(StateInit)
	c.armIn(c.cfg.DeclineWait)
}

// cancelProbe ends a running probe.
func (c *Client) cancelProbe() {
	if c.probeStop != nil {
		c.probeStop()
		c.probeStop = nil
	}
	c.probeGen++
}
