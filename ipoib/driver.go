package ipoib

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// The driver: an IPoIB link on one port of an ib.Device. This file holds
// its configuration and its state; control.go builds and tears it down,
// io.go moves its packets, join.go, path.go and events.go hold the
// machinery for groups, paths and port events.

// Driver defaults, for Config fields left zero.
const (
	// DefaultSendDepth is the UD send queue depth. It matches netdev's
	// default transmit queue, so netdev refuses before the QP does.
	DefaultSendDepth = netdev.DefaultTxQueueLen
	// DefaultRecvDepth is the number of receive buffers kept posted: a
	// burst of this many datagrams can land before the loop drains them.
	DefaultRecvDepth = 256
	// DefaultJoinBackoff is the wait before a failed join is retried; it
	// doubles on every further failure up to DefaultJoinBackoffMax. The
	// SA client has already retransmitted the request itself, so this is
	// the pace of whole new attempts.
	DefaultJoinBackoff = time.Second
	// DefaultJoinBackoffMax caps the join retry interval.
	DefaultJoinBackoffMax = 32 * time.Second
	// DefaultBroadcastMTU is the IB MTU asked for when this port creates
	// the broadcast group: 2048, the MTU OpenSM gives IPoIB partitions
	// unless told otherwise, so the IP MTU is the familiar 2044.
	DefaultBroadcastMTU = ib.MTU2048
	// DefaultBroadcastRate is the rate asked for when creating the
	// broadcast group (OpenSM's partition default, 10 Gb/s), lowered to
	// the port's own rate.
	DefaultBroadcastRate = ib.Rate10Gbps

	// recvBufSize is the size of one receive buffer: the GRH area every
	// UD receive starts with (IBA 11.4.1.1) and the largest IB MTU, so
	// that a group or path MTU change never needs new buffers.
	recvBufSize = ib.GRHSize + 4096
	// pollBatch is how many completions one CQ poll takes.
	pollBatch = 32
	// sendPollBatch is how many send completions one poll of the send CQ
	// takes: one per post batch as a rule, a few when sends complete late.
	sendPollBatch = 16
	// txSlack is how many pool buffers there are beyond a full transmit
	// queue: the stack copies a batch into buffers before the device
	// takes it, and refuses (and frees) what does not fit.
	txSlack = 8
	// minPathAge is how old a path must be before a datagram arriving
	// from another LID than the path's marks it wrong. The guard keeps a
	// sender using LMC path bits from making every datagram trigger a
	// query.
	minPathAge = time.Second
)

// Errors of the driver. They are returned wrapped; test with errors.Is.
var (
	// ErrSend means the QP refused a send or completed it in error. Drops
	// for it are counted as tx_dropped_send_error.
	ErrSend = errors.New("ipoib: send failed")
	// ErrRecvCompletion means a receive completed in error (a datagram too
	// long for the buffer, a protection error). Counted as
	// rx_dropped_wc_error.
	ErrRecvCompletion = errors.New("ipoib: receive completed in error")
	// ErrLoopback means a multicast datagram we sent came back to us (the
	// HCA loops multicast back to the sending port's attached QPs).
	// Counted as rx_dropped_loopback.
	ErrLoopback = errors.New("ipoib: own multicast datagram looped back")
	// ErrNotJoined means a multicast group could not be joined, so a
	// packet for it was dropped. Errors carrying it also wrap
	// netdev.ErrNoPath.
	ErrNotJoined = errors.New("ipoib: multicast group not joined")
	// ErrPortNotActive means the port is not ACTIVE, so the link cannot
	// come up.
	ErrPortNotActive = errors.New("ipoib: port not active")
	// ErrNoPKey means the configured P_Key is not in the port's P_Key
	// table.
	ErrNoPKey = errors.New("ipoib: P_Key not in the port's table")
	// ErrNotDriver means a driver method was called on a Link made by
	// NewProtocol, which has no port under it.
	ErrNotDriver = errors.New("ipoib: link has no driver")
)

// Counters the driver adds to netdev's table. Their names are stable:
// `ipoibd stats` prints them and scripts match them.
var (
	// TxSendError counts packets the QP refused or failed (ErrSend).
	TxSendError = netdev.MustRegister(netdev.RegisterTxDrop("tx_dropped_send_error", ErrSend))
	// RxWCError counts receive completions in error.
	RxWCError = netdev.MustRegister(netdev.RegisterRxDrop("rx_dropped_wc_error", ErrRecvCompletion))
	// RxLoopback counts our own multicast datagrams dropped on return.
	RxLoopback = netdev.MustRegister(netdev.RegisterRxDrop("rx_dropped_loopback", ErrLoopback))

	// Joins counts successful broadcast-group joins (first joins and
	// rejoins).
	Joins = netdev.MustRegister(netdev.RegisterCounter("ipoib_joins"))
	// JoinFailures counts group joins that failed (timeouts, refusals).
	JoinFailures = netdev.MustRegister(netdev.RegisterCounter("ipoib_join_failures"))
	// JoinRetries counts joins sent again after a failure, by the backoff
	// timer.
	JoinRetries = netdev.MustRegister(netdev.RegisterCounter("ipoib_join_retries"))
	// McastJoins counts successful joins of multicast groups other than
	// the broadcast group.
	McastJoins = netdev.MustRegister(netdev.RegisterCounter("ipoib_mcast_joins"))
	// PathQueries counts PathRecord queries sent.
	PathQueries = netdev.MustRegister(netdev.RegisterCounter("ipoib_path_queries"))
	// PathFailures counts PathRecord queries that failed.
	PathFailures = netdev.MustRegister(netdev.RegisterCounter("ipoib_path_failures"))
	// PathCacheHits counts unicast packets sent on a cached path.
	PathCacheHits = netdev.MustRegister(netdev.RegisterCounter("ipoib_path_cache_hits"))
	// PathsExpired counts paths that outlived Config.PathTimeout and were
	// refreshed.
	PathsExpired = netdev.MustRegister(netdev.RegisterCounter("ipoib_paths_expired"))
	// PendingDrops counts packets dropped because MaxParked packets
	// already waited for the same path or join (they are also counted as
	// tx_dropped_no_path).
	PendingDrops = netdev.MustRegister(netdev.RegisterCounter("ipoib_pending_drops"))
	// FlushLight, FlushNormal and FlushHeavy count flushes by level.
	FlushLight  = netdev.MustRegister(netdev.RegisterCounter("ipoib_flush_light"))
	FlushNormal = netdev.MustRegister(netdev.RegisterCounter("ipoib_flush_normal"))
	FlushHeavy  = netdev.MustRegister(netdev.RegisterCounter("ipoib_flush_heavy"))
)

// Config describes the IPoIB link New puts on a port. Zero fields take
// the defaults.
type Config struct {
	// Name is the netdev name ("ib0" by default); unique in the process.
	Name string
	// Port is the port number, 1 by default.
	Port int
	// PKey is the partition, 0xFFFF by default. It must be in the port's
	// P_Key table.
	PKey ib.PKey
	// GIDIndex selects the port GID of the interface's address.
	GIDIndex int
	// QKey is the Q_Key asked for when this port creates the broadcast
	// group (default 0x0B1B, what Linux and OpenSM use). A group that
	// exists already imposes its own.
	QKey ib.QKey
	// BroadcastMTU and BroadcastRate are asked for when this port creates
	// the broadcast group (defaults DefaultBroadcastMTU and
	// DefaultBroadcastRate, lowered to what the port can do). SL is the
	// service level asked for.
	BroadcastMTU  ib.MTU
	BroadcastRate ib.Rate
	SL            ib.SL
	// SendDepth and RecvDepth are the UD QP's queue depths (defaults
	// DefaultSendDepth and DefaultRecvDepth).
	SendDepth, RecvDepth int
	// TxQueueLen bounds the netdev transmit queue (sends in flight plus
	// packets waiting for a path); SendDepth by default.
	TxQueueLen int
	// Buffers is the netdev pool size; by default TxQueueLen plus
	// txSlack. Received packets do not take pool buffers: they go up in
	// the QP's own receive buffers (see rxSlot), so the pool holds what
	// is sent.
	Buffers int
	// PathTimeout is how long a path record is trusted before the next
	// packet on it refreshes it (default ib.DefaultPathTimeout). Send-only
	// multicast groups unused for this long are left.
	PathTimeout time.Duration
	// JoinBackoff and JoinBackoffMax pace join retries (defaults
	// DefaultJoinBackoff and DefaultJoinBackoffMax).
	JoinBackoff, JoinBackoffMax time.Duration
	// SA tunes the SA client's retransmissions.
	SA ib.SAClientConfig
	// Logger receives the driver's control-plane messages (joins, flushes,
	// failures); nothing is logged per packet. Nil discards them.
	Logger *slog.Logger
}

// fill validates c and applies defaults.
func (c *Config) fill() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("ipoib config: %s: %w", fmt.Sprintf(format, args...), netdev.ErrInvalidConfig)
	}
	if c.Name == "" {
		c.Name = "ib0"
	}
	if c.Port == 0 {
		c.Port = 1
	}
	if c.PKey == 0 {
		c.PKey = ib.PKeyDefault
	}
	if !c.PKey.Valid() {
		return bad("P_Key %v names the invalid partition", c.PKey)
	}
	if c.QKey == 0 {
		c.QKey = ib.QKeyIPoIBDefault
	}
	if c.BroadcastMTU == 0 {
		c.BroadcastMTU = DefaultBroadcastMTU
	}
	if !c.BroadcastMTU.Valid() {
		return bad("broadcast MTU code %d", c.BroadcastMTU)
	}
	if c.BroadcastRate == 0 {
		c.BroadcastRate = DefaultBroadcastRate
	}
	if c.BroadcastRate.Mbps() == 0 {
		return bad("broadcast rate code %d", c.BroadcastRate)
	}
	if !c.SL.Valid() {
		return bad("SL %d", c.SL)
	}
	if c.SendDepth == 0 {
		c.SendDepth = DefaultSendDepth
	}
	if c.RecvDepth == 0 {
		c.RecvDepth = DefaultRecvDepth
	}
	if c.SendDepth < 1 || c.SendDepth > 1<<15 || c.RecvDepth < 1 || c.RecvDepth > 1<<15 {
		return bad("send depth %d, receive depth %d (1..32768)", c.SendDepth, c.RecvDepth)
	}
	if c.TxQueueLen == 0 {
		c.TxQueueLen = c.SendDepth
	}
	if c.Buffers == 0 {
		c.Buffers = c.TxQueueLen + txSlack
	}
	if c.PathTimeout == 0 {
		c.PathTimeout = ib.DefaultPathTimeout
	}
	if c.JoinBackoff == 0 {
		c.JoinBackoff = DefaultJoinBackoff
	}
	if c.JoinBackoffMax == 0 {
		c.JoinBackoffMax = DefaultJoinBackoffMax
	}
	if c.PathTimeout < 0 || c.JoinBackoff < 0 || c.JoinBackoffMax < c.JoinBackoff {
		return bad("path timeout %v, join backoff %v..%v", c.PathTimeout, c.JoinBackoff, c.JoinBackoffMax)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// driver is the part of a Link that runs it on a port. Everything in it
// belongs to the loop.
type driver struct {
	l     *Link
	loop  *aio.Context
	dev   ib.Device
	cfg   Config
	log   *slog.Logger
	nd    *netdev.Device
	cache *PeerCache
	// cq takes the receive completions and is always armed; scq takes the
	// send completions and is armed on demand (ib.ArmOnDemand): sends are
	// reaped right after they are posted and by a bottom half after that
	// (reapSends), and the CQ asks for an event only while some are still
	// in flight then. On soft-RoCE a send completes inside the post, so an
	// echo raises one CQ event per side instead of two.
	cq  ib.CompletionQueue
	scq ib.CompletionQueue
	qp  ib.QueuePair
	mad ib.MADPort
	sa  *ib.SAClient

	attr      ib.PortAttr // the port as last queried
	roce      bool        // Ethernet link layer: no SA, paths and groups are local (roce.go)
	pkeyIndex int         // the QP's P_Key index
	self      Addr
	selfRef   Ref
	qkey      ib.QKey // what sends carry and the QP accepts: the group's

	bcast  *group
	groups map[ib.GID]*group // every group but the broadcast one

	opened bool // the netdev is open (between Ops.Open and Ops.Close)
	closed bool // Link.Close has run
	// Leaves the SA has not answered yet, and what Link.Leave asked to
	// run once there are none.
	leaving int
	onLeft  []func()
	// fatal: the device reported ib.EventDeviceFatal. The link stays
	// down for good; only a link on the device opened again comes up.
	fatal bool

	peers [MaxPeers + 1]peerState
	byLID map[uint64]Ref // (LID, QPN) of resolved peers, for GRH-less receives

	// Sends in flight. A send's ID is the epoch in the upper half and
	// the slot in the lower; the epoch moves on when in-flight sends are
	// written off (close, QP re-creation) so that late completions are
	// recognised and ignored.
	tx       []txSlot
	txFree   []uint32
	txEpoch  uint32
	posted   uint64 // sends posted
	finished uint64 // sends completed or written off
	dead     []deadAH

	grh    ib.GRH // scratch decode of a received GRH
	wcs    []ib.Completion
	repost []uint64
	// Receive buffers lent up the stack (rxSlot), by completion ID;
	// polling says pollCQ is running and will repost at its end.
	rx      []rxSlot
	polling bool
	// sendBH reaps sends still in flight after their post (reapSends).
	sendBH *aio.BH
	// reaping says reapSends is running; swcs is its completion batch,
	// apart from pollCQ's, which a send from inside pollCQ would clobber.
	reaping bool
	swcs    []ib.Completion
	// Buffers freed off the loop, for the loop to repost.
	rxLate *aio.Mailbox[*rxSlot]
	wrs    []ib.SendWR
	parked []*netdev.Buffer

	flushLevel flushLevel
	flushBH    *aio.BH
	expiry     *aio.Timer

	group atomic.Pointer[GroupInfo]

	// Prebuilt errors for the per-packet drops.
	errNoPath, errNotJoined, errTooBig, errSendFull, errLinkDown error
	errLoopback                                                  error
	errSendStatus, errRecvWC                                     [ib.StatusGeneral + 1]error
}

// txSlot is one send in flight.
type txSlot struct {
	b   *netdev.Buffer
	seg [1][]byte
}

// deadAH is an address handle waiting for the sends posted before it was
// retired to complete, so that no posted send refers to a destroyed
// handle.
type deadAH struct {
	ah  ib.AddressHandle
	seq uint64 // posted count when it was retired
}

// peerState is the driver's view of one peer-cache slot: what the cache
// itself does not keep. It belongs to the peer whose Ref it records;
// state left by an earlier occupant of the slot is discarded on sight.
type peerState struct {
	ref      Ref
	query    ib.SAQuery
	querying bool
	stale    bool      // refresh the path on next use
	since    time.Time // when the path was set
	lidKey   uint64    // its byLID entry, 0 for none
	used     bool      // sent to since the last expiry scan (groups)
}

// lidKey packs a LID and QPN into a byLID key; 0 is never a valid one
// because LID 0 is never a unicast LID.
func lidKey(lid ib.LID, qpn ib.QPN) uint64 { return uint64(lid)<<24 | uint64(qpn&ib.QPNMask) }

// state returns the driver state of live peer p, reset if it was left by
// an earlier occupant of the slot.
func (d *driver) state(p *Peer) *peerState {
	st := &d.peers[p.key]
	if r := p.Ref(); st.ref != r {
		*st = peerState{ref: r}
	}
	return st
}

// buildErrors makes the errors the data path returns, once.
func (d *driver) buildErrors() {
	n := d.cfg.Name
	d.errNoPath = fmt.Errorf("ipoib %s: transmit: path query failed: %w", n, netdev.ErrNoPath)
	d.errNotJoined = fmt.Errorf("ipoib %s: transmit: %w (%w)", n, ErrNotJoined, netdev.ErrNoPath)
	d.errTooBig = fmt.Errorf("ipoib %s: transmit: packet exceeds the path MTU: %w", n, netdev.ErrTooBig)
	d.errSendFull = fmt.Errorf("ipoib %s: transmit: send queue full: %w (%w)", n, ErrSend, ib.ErrQueueFull)
	d.errLinkDown = fmt.Errorf("ipoib %s: flushed: %w", n, netdev.ErrLinkDown)
	d.errLoopback = fmt.Errorf("ipoib %s: receive: %w", n, ErrLoopback)
	for s := range d.errSendStatus {
		d.errSendStatus[s] = fmt.Errorf("ipoib %s: send completed with status %v: %w", n, ib.Status(s), ErrSend)
		d.errRecvWC[s] = fmt.Errorf("ipoib %s: receive completed with status %v: %w", n, ib.Status(s), ErrRecvCompletion)
	}
}

// GroupInfo describes the broadcast group as joined: the parameters the
// SA gave it, which the link uses for every send. See Link.Group.
type GroupInfo struct {
	Joined    bool         `json:"joined"`
	MGID      ib.GID       `json:"mgid"`
	MLID      ib.LID       `json:"mlid"`
	QKey      ib.QKey      `json:"qkey"`
	PKey      ib.PKey      `json:"pkey"`
	MTU       ib.MTU       `json:"mtu"`
	Rate      ib.Rate      `json:"rate"`
	SL        ib.SL        `json:"sl"`
	FlowLabel uint32       `json:"flow_label"`
	TClass    uint8        `json:"tclass"`
	HopLimit  uint8        `json:"hop_limit"`
	JoinState ib.JoinState `json:"join_state"`
	JoinedAt  time.Time    `json:"joined_at"`
}

// PeerInfo describes one peer-cache entry for `ipoibd peers`; see
// Link.Peers.
type PeerInfo struct {
	Key       Key    `json:"key"`
	Addr      string `json:"addr"`
	Multicast bool   `json:"multicast,omitempty"`
	Pinned    bool   `json:"pinned,omitempty"`
	// State is "self", "none" (no path), "resolving", "resolved",
	// "stale" (to be refreshed on next use), or for groups "joining",
	// "joined" and "idle".
	State string  `json:"state"`
	LID   ib.LID  `json:"lid,omitempty"`
	SL    ib.SL   `json:"sl"`
	MTU   int     `json:"mtu,omitempty"`
	Rate  ib.Rate `json:"rate,omitempty"`
	// Age is how long ago the path was resolved or the group joined.
	Age time.Duration `json:"age,omitempty"`
	// Pending is the number of packets waiting for the path or join.
	Pending int `json:"pending"`
}
