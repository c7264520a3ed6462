package ib

// SA client, control half: construction, the SM address, starting,
// cancelling and closing queries.
//
// Rule: every exported function and method here is control plane. It runs
// on the client's home loop (the aio.Context given to NewSAClient) and
// asserts it with loop.AssertHome; other goroutines hop onto the loop with
// a bottom half first. Stats is the one exception and is safe anywhere.
// Reply handling, timer expiry and completion live in saclient_io.go.

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
)

// Retransmission defaults of the SA client. The IBA leaves a requester's
// retry policy to the implementation (ClassPortInfo.RespTimeValue only
// bounds how long a responder may take); these bound an unanswered query
// to 1+2+4+4 = 11 s, long enough to ride out an SM failover and short
// enough that IPoIB's ARP retries are not left waiting much longer.
const (
	// DefaultSATimeout is how long the first transmission waits for an
	// answer; each retransmission doubles the wait.
	DefaultSATimeout = time.Second
	// DefaultSAMaxTimeout caps the doubled wait.
	DefaultSAMaxTimeout = 4 * time.Second
	// DefaultSATries is how many times a query is sent, the first
	// transmission included, before it fails with ErrSATimeout.
	DefaultSATries = 4
)

// saFreeMax bounds the list of finished query objects kept for reuse, so a
// burst of queries does not pin memory for ever.
const saFreeMax = 64

// Errors of the SA client. Status errors from the SA are *MADStatusError
// values (match them with errors.Is against an SAStatus, ErrMADBusy or an
// InvalidFieldCode, or with errors.As); the sentinels here cover the rest.
var (
	// ErrSATimeout means no usable answer came back after every try.
	ErrSATimeout = errors.New("SA timeout")
	// ErrSANoSM means the client knows no SM LID to send to (the port has
	// not been configured by an SM yet, or it is a RoCE port).
	ErrSANoSM = errors.New("no subnet manager LID known")
)

// SAClientConfig tunes an SAClient. The zero value selects the defaults.
type SAClientConfig struct {
	// Timeout is the wait after the first transmission (default
	// DefaultSATimeout). Each retransmission doubles it.
	Timeout time.Duration
	// MaxTimeout caps the doubled wait (default DefaultSAMaxTimeout, and
	// never less than Timeout).
	MaxTimeout time.Duration
	// Tries is the number of transmissions before a query fails (default
	// DefaultSATries).
	Tries int
	// TIDHigh is the upper half of every transaction ID this client uses;
	// 0 picks a random one, so two clients, or a client and its
	// predecessor after a restart, do not take each other's replies.
	TIDHigh uint32
}

// SAClientStats counts what an SAClient sent and received.
type SAClientStats struct {
	// Sent counts first transmissions.
	Sent uint64 `json:"sent"`
	// Retransmitted counts the repeats.
	Retransmitted uint64 `json:"retransmitted"`
	// SendErrors counts transmissions the MADPort refused (or that could
	// not be made for want of an SM LID); the retry timer covers them.
	SendErrors uint64 `json:"send_errors"`
	// Replies counts answers matched to an outstanding query, busy and
	// error answers included.
	Replies uint64 `json:"replies"`
	// Busy counts answers with the busy bit set.
	Busy uint64 `json:"busy"`
	// Timeouts counts queries that ran out of tries.
	Timeouts uint64 `json:"timeouts"`
	// Errors counts queries that failed with a status from the SA.
	Errors uint64 `json:"errors"`
	// Cancelled counts queries withdrawn by Cancel or Close.
	Cancelled uint64 `json:"cancelled"`
	// Unsolicited counts SA MADs that answer nothing outstanding: unknown
	// or finished transaction IDs (late or duplicate answers), requests
	// such as Report, and MADs of other classes.
	Unsolicited uint64 `json:"unsolicited"`
	// Mismatched counts answers whose TID matches an outstanding query but
	// whose method, attribute or sender do not.
	Mismatched uint64 `json:"mismatched"`
	// Malformed counts MADs that could not be decoded.
	Malformed uint64 `json:"malformed"`
}

// SAClient sends subnet administration queries (IBA chapter 15) over a
// port's GSI and matches the answers to them. It runs entirely on one aio
// loop: it starts no goroutines, its completion callbacks run on the loop,
// and every query is retransmitted with the same transaction ID on an
// exponential backoff until it is answered, cancelled or out of tries.
//
// A callback runs exactly once for every query that was started, unless
// the query is cancelled, and never from inside the call that started it
// unless the MADPort delivers an answer from inside Send. It may start,
// cancel or close anything.
type SAClient struct {
	loop *aio.Context
	port MADPort
	cfg  SAClientConfig

	// Where queries go: the SA lives at the SM's LID on QP1.
	smLID     LID
	smSL      SL
	pkeyIndex int
	portGID   GID

	tidHigh uint32
	tidLow  uint32
	seq     uint64
	pending map[uint64]*saQuery
	free    []*saQuery
	closed  bool

	// rx is the scratch decode of the MAD being handled, kept here so a
	// reply costs no allocation.
	rx SAMAD

	stats counter.Block[SAClientStats]
}

// saKeyKind says which field names a query in errors.
type saKeyKind uint8

const (
	saKeyNone saKeyKind = iota
	saKeyDGID
	saKeyDLID
	saKeySGID
	saKeyMGID
	saKeyPortGID
)

// saQueryName is what an error needs to name a query. It is a value copied
// into errors, because the query object itself is reused once it finishes.
type saQueryName struct {
	method Method
	attr   AttributeID
	kind   saKeyKind
	gid    GID
	lid    LID
}

// String renders e.g. "PathRecord Get DGID fe80::2:c903:0:1895".
func (n saQueryName) String() string {
	s := SAAttributeName(n.attr) + " " + n.method.String()
	switch n.kind {
	case saKeyDGID:
		s += " DGID " + n.gid.String()
	case saKeyDLID:
		s += " DLID " + n.lid.String()
	case saKeySGID:
		s += " SGID " + n.gid.String()
	case saKeyMGID:
		s += " MGID " + n.gid.String()
	case saKeyPortGID:
		s += " PortGID " + n.gid.String()
	}
	return s
}

// saQuery is one outstanding query. Objects are recycled through the
// client's free list with their timer, so a steady stream of queries does
// not allocate.
type saQuery struct {
	c     *SAClient
	tid   uint64
	name  saQueryName
	buf   [MADLen]byte
	timer *aio.Timer

	seq     uint64        // start order, for Close
	tries   int           // transmissions so far
	wait    time.Duration // the wait the timer was last armed with
	start   time.Time
	sentLID LID // where the latest transmission went
	sendErr error
	busy    MADStatus // status of a busy answer since the last send, else 0

	onPath func(PathRecord, error)
	onMC   func(MCMemberRecord, error)
	active bool
}

// SAQuery is a handle on a started query, used to cancel it. It is a small
// value; a handle whose query has finished does nothing.
type SAQuery struct {
	q   *saQuery
	tid uint64
}

// NewSAClient creates a client that sends through port and takes over the
// port's handler. The SA is addressed at attr.SMLID with attr.SMSL on the
// partition of P_Key index attr.PKeyIndex(PKeyDefault) (index 0 if the
// default partition is missing: index 0 is where ports keep it), and attr's
// default GID is the one PortGID reports. It must be called on loop.
func NewSAClient(loop *aio.Context, port MADPort, attr PortAttr, cfg SAClientConfig) (*SAClient, error) {
	if loop == nil || port == nil {
		return nil, errors.New("new SA client: nil loop or MAD port")
	}
	loop.AssertHome("ib.NewSAClient")
	if cfg.Timeout < 0 || cfg.MaxTimeout < 0 || cfg.Tries < 0 {
		return nil, fmt.Errorf("new SA client: negative Timeout %v, MaxTimeout %v or Tries %d",
			cfg.Timeout, cfg.MaxTimeout, cfg.Tries)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSATimeout
	}
	if cfg.MaxTimeout == 0 {
		cfg.MaxTimeout = DefaultSAMaxTimeout
	}
	cfg.MaxTimeout = max(cfg.MaxTimeout, cfg.Timeout)
	if cfg.Tries == 0 {
		cfg.Tries = DefaultSATries
	}
	c := &SAClient{
		loop:    loop,
		port:    port,
		cfg:     cfg,
		tidHigh: cfg.TIDHigh,
		tidLow:  1,
		pending: make(map[uint64]*saQuery),
	}
	for c.tidHigh == 0 {
		c.tidHigh = rand.Uint32()
	}
	if err := c.updatePort(attr); err != nil {
		return nil, fmt.Errorf("new SA client: %w", err)
	}
	port.SetHandler(c.handleMAD)
	return c, nil
}

// SetSM points the client at a new SM LID and SL, as after an SM change
// event. Queries already sent keep waiting, and their retransmissions go
// to the new SM. LID 0 means no SM is known; transmissions then fail with
// ErrSANoSM until one is set.
func (c *SAClient) SetSM(lid LID, sl SL) error {
	c.loop.AssertHome("ib.SAClient.SetSM")
	if err := checkSM(lid, sl); err != nil {
		return fmt.Errorf("SA client: set SM: %w", err)
	}
	c.smLID, c.smSL = lid, sl
	return nil
}

// UpdatePort re-reads the SM address, the default partition's P_Key index
// and the port GID from a fresh PortAttr, as after any port event.
func (c *SAClient) UpdatePort(attr PortAttr) error {
	c.loop.AssertHome("ib.SAClient.UpdatePort")
	if err := c.updatePort(attr); err != nil {
		return fmt.Errorf("SA client: update port: %w", err)
	}
	return nil
}

func (c *SAClient) updatePort(attr PortAttr) error {
	if err := checkSM(attr.SMLID, attr.SMSL); err != nil {
		return fmt.Errorf("port %d: %w", attr.Num, err)
	}
	idx, err := attr.PKeyIndex(PKeyDefault)
	if err != nil {
		idx = 0
	}
	c.smLID, c.smSL, c.pkeyIndex = attr.SMLID, attr.SMSL, idx
	c.portGID = GID{}
	if len(attr.GIDs) > 0 {
		c.portGID = attr.GIDs[0]
	}
	return nil
}

func checkSM(lid LID, sl SL) error {
	if lid != LIDReserved && !lid.IsUnicast() {
		return fmt.Errorf("SM LID %v is not a unicast LID: %w", lid, ErrFieldRange)
	}
	if !sl.Valid() {
		return fmt.Errorf("SM SL %d exceeds 4 bits: %w", sl, ErrFieldRange)
	}
	return nil
}

// SM returns the LID and SL queries are sent to.
func (c *SAClient) SM() (LID, SL) {
	c.loop.AssertHome("ib.SAClient.SM")
	return c.smLID, c.smSL
}

// PortGID returns the port's default GID, the SGID of PathQueryByGID and
// the PortGID of MCMemberQuery for this port.
func (c *SAClient) PortGID() GID {
	c.loop.AssertHome("ib.SAClient.PortGID")
	return c.portGID
}

// Outstanding returns the number of queries waiting for an answer.
func (c *SAClient) Outstanding() int {
	c.loop.AssertHome("ib.SAClient.Outstanding")
	return len(c.pending)
}

// Stats returns the client's counters. It is safe from any goroutine.
func (c *SAClient) Stats() SAClientStats {
	return c.stats.Load()
}

// PathQueryByGID returns the PathRecord query IPoIB sends to resolve a
// unicast peer, and its component mask: DGID, SGID, P_Key and NumbPath 1
// (one path is all a UD sender can use). Add TClass, SL or ServiceID to
// both before sending if the path must honour them.
func PathQueryByGID(sgid, dgid GID, pkey PKey) (PathRecord, ComponentMask) {
	return PathRecord{SGID: sgid, DGID: dgid, PKey: pkey, NumbPath: 1},
		PathRecCompDGID | PathRecCompSGID | PathRecCompNumbPath | PathRecCompPKey
}

// PathQueryByLID is PathQueryByGID for a destination known only by LID.
func PathQueryByLID(sgid GID, dlid LID, pkey PKey) (PathRecord, ComponentMask) {
	return PathRecord{SGID: sgid, DLID: dlid, PKey: pkey, NumbPath: 1},
		PathRecCompDLID | PathRecCompSGID | PathRecCompNumbPath | PathRecCompPKey
}

// MCMemberQuery returns the MCMemberRecord that joins (Set) or leaves
// (Delete) an existing group, and its component mask: MGID, PortGID,
// P_Key and JoinState. A join that may create the group must also set and
// select Q_Key, MTU, rate, SL, FlowLabel, TClass and the like (the
// MCMemberRecord rules of IBA chapter 15 list what creation needs).
func MCMemberQuery(mgid, portGID GID, pkey PKey, js JoinState) (MCMemberRecord, ComponentMask) {
	return MCMemberRecord{MGID: mgid, PortGID: portGID, PKey: pkey, JoinState: js},
		MCMemberCompMGID | MCMemberCompPortGID | MCMemberCompPKey | MCMemberCompJoinState
}

// GetPathRecord asks the SA for the path selected by the fields of query
// that mask names (SubnAdmGet(PathRecord)). done receives the record, or an
// error: ErrSATimeout, a *MADStatusError (ERR_NO_RECORDS when no path
// exists) or ErrClosed, each wrapped with the query's name.
func (c *SAClient) GetPathRecord(query PathRecord, mask ComponentMask, done func(PathRecord, error)) (SAQuery, error) {
	c.loop.AssertHome("ib.SAClient.GetPathRecord")
	name := saQueryName{method: MethodGet, attr: SAAttrPathRecord}
	switch {
	case mask.Has(PathRecCompDGID):
		name.kind, name.gid = saKeyDGID, query.DGID
	case mask.Has(PathRecCompDLID):
		name.kind, name.lid = saKeyDLID, query.DLID
	case mask.Has(PathRecCompSGID):
		name.kind, name.gid = saKeySGID, query.SGID
	}
	q, err := c.prepare(name, mask, done != nil, query.Encode)
	if err != nil {
		return SAQuery{}, err
	}
	q.onPath = done
	return c.launch(q), nil
}

// GetMCMemberRecord asks the SA for the membership or group that query and
// mask select (SubnAdmGet(MCMemberRecord)).
func (c *SAClient) GetMCMemberRecord(query MCMemberRecord, mask ComponentMask, done func(MCMemberRecord, error)) (SAQuery, error) {
	c.loop.AssertHome("ib.SAClient.GetMCMemberRecord")
	return c.startMC(MethodGet, query, mask, done)
}

// SetMCMemberRecord joins a multicast group, creating it if the mask
// carries what creation needs (SubnAdmSet(MCMemberRecord)).
// done receives the group's record as the SA holds it: MLID, Q_Key, MTU,
// rate, SL and the rest that the port must use.
func (c *SAClient) SetMCMemberRecord(query MCMemberRecord, mask ComponentMask, done func(MCMemberRecord, error)) (SAQuery, error) {
	c.loop.AssertHome("ib.SAClient.SetMCMemberRecord")
	return c.startMC(MethodSet, query, mask, done)
}

// DeleteMCMemberRecord leaves a group: the SA removes the JoinState bits
// of query from the port's membership (SubnAdmDelete(MCMemberRecord)).
// done receives the record the SA answers with.
func (c *SAClient) DeleteMCMemberRecord(query MCMemberRecord, mask ComponentMask, done func(MCMemberRecord, error)) (SAQuery, error) {
	c.loop.AssertHome("ib.SAClient.DeleteMCMemberRecord")
	return c.startMC(MethodDelete, query, mask, done)
}

func (c *SAClient) startMC(method Method, query MCMemberRecord, mask ComponentMask, done func(MCMemberRecord, error)) (SAQuery, error) {
	name := saQueryName{method: method, attr: SAAttrMCMemberRecord}
	switch {
	case mask.Has(MCMemberCompMGID):
		name.kind, name.gid = saKeyMGID, query.MGID
	case mask.Has(MCMemberCompPortGID):
		name.kind, name.gid = saKeyPortGID, query.PortGID
	}
	q, err := c.prepare(name, mask, done != nil, query.Encode)
	if err != nil {
		return SAQuery{}, err
	}
	q.onMC = done
	return c.launch(q), nil
}

// prepare checks that a query has a completion callback, takes a query
// object and writes the record into its MAD with encode; the caller sets
// the callback and launches it.
func (c *SAClient) prepare(name saQueryName, mask ComponentMask, hasDone bool, encode func([]byte) error) (*saQuery, error) {
	if !hasDone {
		return nil, fmt.Errorf("%v: nil completion callback", name)
	}
	q, err := c.newQuery(name, mask)
	if err != nil {
		return nil, err
	}
	if err := encode(q.buf[SADataOffset:]); err != nil {
		c.release(q)
		return nil, fmt.Errorf("%v: %w", name, err)
	}
	return q, nil
}

// newQuery takes a query object from the free list (or makes one), gives
// it a fresh TID and writes the MAD header into its buffer; the caller
// writes the record.
func (c *SAClient) newQuery(name saQueryName, mask ComponentMask) (*saQuery, error) {
	if c.closed {
		return nil, fmt.Errorf("%v: SA client: %w", name, ErrClosed)
	}
	var q *saQuery
	if n := len(c.free); n > 0 {
		q = c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
	} else {
		q = &saQuery{c: c}
		q.timer = c.loop.NewTimer("ib.SAClient retry", func() { c.expire(q) })
	}
	q.tid = c.nextTID()
	q.name = name
	// The header goes through SAMAD.Encode so the request layout has one
	// owner; the record area it zeroes is then filled by the caller.
	var hdr SAMAD
	hdr.InitRequest(name.method, name.attr, q.tid, mask)
	if err := hdr.Encode(q.buf[:]); err != nil {
		c.release(q)
		return nil, fmt.Errorf("%v: %w", name, err)
	}
	return q, nil
}

// nextTID returns a TID no outstanding query holds: the client's high half
// and a counter that skips 0 and, after wrapping, any TID still in use.
func (c *SAClient) nextTID() uint64 {
	for {
		low := c.tidLow
		c.tidLow++
		if low == 0 {
			continue
		}
		tid := uint64(c.tidHigh)<<32 | uint64(low)
		if _, busy := c.pending[tid]; !busy {
			return tid
		}
	}
}

// launch registers q and makes its first transmission.
func (c *SAClient) launch(q *saQuery) SAQuery {
	q.active = true
	c.seq++
	q.seq = c.seq
	q.tries = 0
	q.wait = c.cfg.Timeout
	q.start = c.loop.Now()
	q.sendErr = nil
	q.busy = 0
	q.sentLID = LIDReserved
	c.pending[q.tid] = q
	h := SAQuery{q: q, tid: q.tid}
	// Arm first: a port that answers from inside Send finishes q there.
	q.timer.Reset(q.wait)
	c.transmit(q)
	return h
}

// release returns a finished query object to the free list.
func (c *SAClient) release(q *saQuery) {
	q.active = false
	q.onPath, q.onMC = nil, nil
	q.sendErr = nil
	if len(c.free) < saFreeMax {
		c.free = append(c.free, q)
	}
}

// TID returns the transaction ID the query is sent with (0 for the zero
// SAQuery).
func (h SAQuery) TID() uint64 { return h.tid }

// Pending reports whether the query is still waiting for an answer. It
// must be called on the client's loop.
func (h SAQuery) Pending() bool {
	if h.q == nil {
		return false
	}
	h.q.c.loop.AssertHome("ib.SAQuery.Pending")
	return h.q.active && h.q.tid == h.tid
}

// Cancel withdraws the query: no more transmissions, an answer that still
// arrives is ignored, and its callback is not called. It reports whether
// the query was still waiting. It must be called on the client's loop.
func (h SAQuery) Cancel() bool {
	if h.q == nil {
		return false
	}
	c := h.q.c
	c.loop.AssertHome("ib.SAQuery.Cancel")
	q := h.q
	if !q.active || q.tid != h.tid {
		return false
	}
	counter.Inc(&c.stats.V.Cancelled)
	c.retire(q)
	c.release(q)
	return true
}

// Close fails every outstanding query with ErrClosed (wrapped with the
// query's name), stops their timers and removes the client's handler from
// the port. The port itself stays open: it belongs to the caller. Queries
// started after Close fail at once with ErrClosed.
func (c *SAClient) Close() error {
	c.loop.AssertHome("ib.SAClient.Close")
	if c.closed {
		return fmt.Errorf("SA client: close: %w", ErrClosed)
	}
	c.closed = true
	c.port.SetHandler(nil)
	qs := make([]*saQuery, 0, len(c.pending))
	for _, q := range c.pending {
		qs = append(qs, q)
	}
	// Fail them in the order they were started, so callers see a
	// deterministic sequence.
	slices.SortFunc(qs, func(a, b *saQuery) int { return cmp.Compare(a.seq, b.seq) })
	for _, q := range qs {
		if !q.active {
			continue // finished by an earlier callback
		}
		counter.Inc(&c.stats.V.Cancelled)
		c.fail(q, fmt.Errorf("%v: SA client closed: %w", q.name, ErrClosed))
	}
	return nil
}
