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

	"github.com/ipoibd/ipoibd/counter"
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
	// keep, set by Abandon, makes the stop keep the lease: no RELEASE,
	// and the lease file stays.
	keep atomic.Bool

	stats counter.Block[ClientStats]
	// curXID mirrors xid for the socket goroutine's filter.
	curXID atomic.Uint32
	// detach removes the receive filter ClientConfig.AttachFilter
	// installed; nil without one.
	detach func()

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
	defaultTo(&cfg.Backoff.Initial, DefaultBackoffInitial)
	defaultTo(&cfg.Backoff.Max, DefaultBackoffMax)
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		cfg.Backoff.Max = cfg.Backoff.Initial
	}
	if cfg.Backoff.Jitter < 0 {
		cfg.Backoff.Jitter = 0
	} else if cfg.Backoff.Jitter == 0 {
		cfg.Backoff.Jitter = DefaultBackoffJitter
	}
	defaultTo(&cfg.RequestTries, DefaultRequestTries)
	defaultTo(&cfg.RenewMin, DefaultRenewMin)
	defaultTo(&cfg.DeclineWait, DefaultDeclineWait)
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
			counter.Inc(&c.stats.V.ConfigErrors)
			c.logf("%v", e)
		}
		if c.cfg.AttachFilter != nil {
			c.detach = c.cfg.AttachFilter(c.wants)
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

// Abandon stops the client as Stop does, but keeps its lease: it sends no
// RELEASE and leaves the lease file, so a client started later over that
// file asks for the same address again (INIT-REBOOT, RFC 2131 section
// 3.2). It is for a link that died under the client (a device that
// failed): no RELEASE could reach the server, and the address stays the
// client's until its lease runs out.
func (c *Client) Abandon(ctx context.Context) error {
	c.keep.Store(true)
	return c.Stop(ctx)
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
	return c.stats.Load()
}

// run is the client's goroutine.
func (c *Client) run() {
	defer close(c.exited)
	c.begin()
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

// begin starts acquisition: INIT-REBOOT for a lease of an earlier run
// still in the lease file, else INIT, whose first DISCOVER waits out
// StartDelay's random share first.
func (c *Client) begin() {
	c.began = c.clock.Now()
	switch l, ok := c.loadLease(c.began); {
	case ok:
		c.enterReboot(l)
	case c.cfg.StartDelay > 0:
		// RFC 2131 section 4.4.1's random wait; the timer's tick in
		// INIT sends the first DISCOVER.
		c.setState(StateInit)
		c.armIn(time.Duration(c.rng.Int64N(int64(c.cfg.StartDelay))))
	default:
		c.enterInit()
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
	switch {
	case c.lease != nil && c.keep.Load():
		// Abandoned: the address leaves the NIC, the lease file stays.
		if err := c.netc.deconfigure(c.lease); err != nil {
			counter.Inc(&c.stats.V.ConfigErrors)
			c.logf("%v", err)
		}
		c.lease = nil
	case c.lease != nil:
		c.sendRelease()
		l := c.lease
		c.dropLease()
		c.emit(EventReleased, l)
	}
	if err := c.netc.dropSource(); err != nil {
		counter.Inc(&c.stats.V.ConfigErrors)
		c.logf("%v", err)
	}
	if c.sock != nil {
		c.sock.close()
	}
	if c.detach != nil {
		c.detach()
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
		counter.Inc(&c.stats.V.Retransmits)
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
		counter.Inc(&c.stats.V.Retransmits)
		c.sendRebootRequest()
		c.armIn(c.backoff())
	case StateRequesting:
		c.attempt++
		if c.attempt >= c.cfg.RequestTries {
			c.logf("no answer to %d REQUESTs for %v, starting over", c.attempt, c.offer.YourIPAddr)
			c.enterInit()
			return
		}
		counter.Inc(&c.stats.V.Retransmits)
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
		c.extendLease(StateRebinding, now, serverBroadcast, l.Expiry())
	case !now.Before(l.RenewAt()):
		c.extendLease(StateRenewing, now, netip.AddrPortFrom(l.ServerID, ServerPort), l.RebindAt())
	default:
		c.armAt(l.RenewAt())
	}
}

// extendLease sends the REQUEST of state, RENEWING or REBINDING, to dst:
// on entering the state with a new transaction, after that as a
// retransmission. The next one is due half way to limit, where the next
// state takes over (retryAt).
func (c *Client) extendLease(state State, now time.Time, dst netip.AddrPort, limit time.Time) {
	if c.state != state {
		c.newXID()
		c.reqSent = now
		c.setState(state)
	} else {
		counter.Inc(&c.stats.V.Retransmits)
	}
	c.sendLeaseRequest(dst)
	c.armAt(c.retryAt(now, limit))
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
		counter.Inc(&c.stats.V.ConfigErrors)
		c.logf("%v", err)
	}
	if err := c.netc.ensureSource(); err != nil {
		counter.Inc(&c.stats.V.ConfigErrors)
		c.logf("%v", err)
	}
	c.setState(c.state)
}
