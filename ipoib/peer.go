package ipoib

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// Key names a peer-cache slot in a reserved byte of the IPoIB header. It
// is meaningful only inside this host, and only while the slot still holds
// the address it was handed out for; see PeerCache for how that is kept.
type Key uint8

// NoKey is the key of no peer. It is what the reserved bytes hold on the
// wire, so a frame whose keys were never set cannot name a peer by
// accident.
const NoKey Key = 0

// Peer-cache sizes.
const (
	// MaxPeers is how many peers the cache holds at once: every value a
	// one-byte key can take except NoKey.
	MaxPeers = 255
	// MaxParked is how many packets may wait in one peer's slot for its
	// path to be resolved. Linux's IPoIB queues the same number per path;
	// more would only deepen the burst that arrives when a slow path
	// record finally comes back.
	MaxParked = 3

	// indexSize is the number of cells in the address index. Twice the
	// most peers there can be keeps linear probing short (load at most
	// one half) and guarantees an empty cell ends every probe.
	indexSize = 512
	indexMask = indexSize - 1
)

// Errors of the peer cache. They are returned wrapped; test with
// errors.Is.
var (
	// ErrStalePeer means a Ref's key was given to another address after the
	// reference was taken: the peer it named was evicted or removed. A
	// packet that still wants to go there is dropped, never sent to the
	// slot's new occupant.
	ErrStalePeer = errors.New("ipoib: peer key reused since the reference was taken")
	// ErrCacheFull means no slot could be freed for a new address: every
	// slot is pinned, has packets parked, or names a peer whose key may
	// still sit unread in a header. Errors carrying it also wrap
	// netdev.ErrNoPeer, so the device counts the packet as
	// tx_dropped_no_peer.
	ErrCacheFull = errors.New("ipoib: peer cache full")
	// ErrParkFull means a peer already has MaxParked packets waiting for
	// its path. Errors carrying it also wrap netdev.ErrNoPath.
	ErrParkFull = errors.New("ipoib: too many packets waiting for the peer's path")
	// ErrPeerHeld means a control operation needs a peer that is neither
	// pinned nor has packets parked.
	ErrPeerHeld = errors.New("ipoib: peer is pinned or has packets parked")
)

// TxStalePeer counts, per device, packets dropped because the peer they
// were queued for was evicted before they could be sent (errors wrapping
// ErrStalePeer given to netdev.Device.TxComplete).
var TxStalePeer = netdev.MustRegister(netdev.RegisterTxDrop("tx_dropped_stale_peer", ErrStalePeer))

// Ref is a peer key together with the generation of its slot when the
// reference was taken. Whoever keeps a peer past the moment its key was
// read from a header (a packet parked or posted, a path query in flight)
// keeps a Ref, and PeerCache.Resolve hands the peer back only if the slot
// has not been reused since. The zero Ref names no peer.
type Ref struct {
	// Key is the slot.
	Key Key
	// Gen is the slot's generation: it grows by one every time the slot
	// is freed, so a reference outlives its peer detectably. It would take
	// 2^32 reuses of one slot while a reference is held to fool it.
	Gen uint32
}

// Path is how to reach a peer: for unicast the fields of its path record,
// for a multicast group those of its MCMemberRecord, plus the driver's
// address handle made from them.
type Path struct {
	// LID is the destination LID (the group's MLID for multicast).
	LID ib.LID
	// SL is the service level.
	SL ib.SL
	// Rate is the static rate.
	Rate ib.Rate
	// MTU is the path MTU.
	MTU ib.MTU
	// AH is the address handle sends to the peer use; nil until the
	// driver has made one.
	AH ib.AddressHandle
}

// PathFromRecord takes the fields a UD send needs from a path record.
func PathFromRecord(r *ib.PathRecord) Path {
	return Path{LID: r.DLID, SL: r.SL, Rate: r.Rate, MTU: r.MTU}
}

// Peer is one slot of the cache: an IPoIB address, the path to it and the
// packets parked waiting for that path. A *Peer handed out by the cache
// stays valid memory, but it names this peer only until the slot is
// reused; code that keeps it beyond the current packet keeps its Ref
// instead.
type Peer struct {
	raw     [AddrLen]byte // the address as on the wire
	key     Key
	nparked uint8
	home    uint16 // index cell the address hashes to
	tag     uint8  // hash bits kept beside the key in the index
	pins    uint16
	gen     uint32
	addr    Addr
	path    Path
	hasPath bool
	parked  [MaxParked]*netdev.Buffer
}

// Key returns the peer's key.
func (p *Peer) Key() Key { return p.key }

// Ref returns a reference to the peer that detects its eviction.
func (p *Peer) Ref() Ref { return Ref{Key: p.key, Gen: p.gen} }

// Addr returns the peer's IPoIB address.
func (p *Peer) Addr() Addr { return p.addr }

// HWAddr returns the peer's address as the 20 bytes the link protocol
// hands upwards. The slice points into the cache; it holds this address
// until the slot is reused, so a caller that keeps it copies it.
func (p *Peer) HWAddr() []byte { return p.raw[:AddrLen:AddrLen] }

// Path returns the path to the peer and whether one has been set.
func (p *Peer) Path() (Path, bool) { return p.path, p.hasPath }

// Parked returns how many packets wait in the slot for the path.
func (p *Peer) Parked() int { return int(p.nparked) }

// Pinned reports whether the peer is pinned.
func (p *Peer) Pinned() bool { return p.pins > 0 }

// Multicast reports whether the peer is a multicast group (the broadcast
// group included).
func (p *Peer) Multicast() bool { return p.addr.IsMulticast() }

// held reports whether the peer is exempt from eviction, and so off the
// LRU list.
func (p *Peer) held() bool { return p.pins > 0 || p.nparked > 0 }

// PeerCache maps IPoIB addresses to one-byte keys and back, for the keys
// the IPoIB header carries inside the host. Both directions are O(1) and
// allocation-free: keys index an array of 256 slots (slot 0 is NoKey and
// doubles as the head of the LRU list), and addresses find their key
// through a fixed open-addressing index. When all 255 keys are taken, a
// new address takes the slot of the least recently entered peer.
//
// Reuse of a key is made safe in two ways, one for each place a key can
// be:
//
//   - While a key sits in a header (between Link.Push and the driver
//     taking the frame, between the driver writing receive keys and
//     Link.Pull), there is no room beside it for anything else. So the
//     cache refuses to evict a peer entered since the last key was claimed
//     (Claim, which Link.Pull and PeerCache.TakeTx call, or Settle): a key
//     cannot be reused while a header may still carry it unread. The
//     refusal costs nothing in normal running: it bites only when every
//     evictable peer has been entered since the last claim (a
//     TransmitBatch to more new peers than there are free or evictable
//     slots). Then Enter fails with ErrCacheFull and the packet is dropped
//     rather than misdelivered.
//   - Anything that keeps a peer longer holds a Ref, and Resolve checks its
//     generation: once the slot has been reused it reports ErrStalePeer and
//     the packet is dropped and counted. Refusing to evict instead would
//     let a burst of packets to many slow peers hold every slot and lock
//     new peers out; a generation check costs one compare and never
//     blocks.
//
// Peers that are pinned (the interface's own address, joined groups) or
// have packets parked are not evicted at all: the parked packets wait for
// that very peer's path, and there are at most MaxParked per peer, so the
// slots they hold are bounded by the device's transmit queue.
//
// Broadcast and multicast groups are peers like any other, keyed by their
// 20-byte address (QPN 0xFFFFFF and the MGID), so the header needs no
// special key values; the driver pins the groups it joins.
//
// The cache belongs to one event loop, the device's: control.go and io.go
// say which methods assert it always and which only in -race builds. Len
// and Stats are safe from any goroutine.
type PeerCache struct {
	loop *aio.Context
	seed [3]uint64
	// epoch is advanced by every claim and Settle. Only equality with a
	// peer's stamp matters, so wrapping is harmless: at worst a peer
	// stamped 2^32 claims ago is spared until the next claim.
	epoch uint32
	nfree int
	free  [MaxPeers]Key
	index [indexSize]uint16 // 0 empty, else key | tag<<8

	// What every packet touches lives in small arrays indexed by key
	// (about 7 KB, all in L1), apart from the bulky Peer slots: the
	// address to compare and hand out, the LRU links, the epoch of the
	// last Enter and the slot state.
	addrs   [MaxPeers + 1][AddrLen]byte
	lruPrev [MaxPeers + 1]Key // LRU neighbours; 0 is the list head
	lruNext [MaxPeers + 1]Key
	stamp   [MaxPeers + 1]uint32 // epoch of the last Enter
	state   [MaxPeers + 1]uint8  // slotLive | slotListed

	slots   [MaxPeers + 1]Peer
	onEvict func(p *Peer)

	// Prebuilt errors, so that refusals on the data path allocate
	// nothing.
	errFull, errUnknown, errStale, errParkFull, errTxNoPeer error

	live atomic.Int32
	ctr  counter.Block[CacheStats]
}

// hashOddMix is 2^64 divided by the golden ratio, rounded to odd: mixed
// into a multiplicand it keeps the product from collapsing to zero when a
// seeded word happens to be zero.
const hashOddMix = 0x9e3779b97f4a7c15

// Slot state bits.
const (
	slotLive   = 1 << iota // the slot holds a peer
	slotListed             // the peer is on the LRU list (not held)
)

// CacheStats describes a PeerCache's use; see PeerCache.Stats.
type CacheStats struct {
	Entered    uint64 `json:"entered"`     // addresses given a key
	Evicted    uint64 `json:"evicted"`     // peers evicted to free a slot
	Stale      uint64 `json:"stale"`       // references that found their key reused
	UnknownKey uint64 `json:"unknown_key"` // keys claimed that named no peer
	Full       uint64 `json:"full"`        // addresses refused for want of a slot
}

// NewPeerCache returns an empty cache owned by loop. With a nil loop no
// ownership is checked: the caller then promises that one goroutine at a
// time uses the cache (tools that read captures, fuzz tests). Safe from
// any goroutine.
func NewPeerCache(loop *aio.Context) *PeerCache {
	c := &PeerCache{loop: loop}
	for i := range c.seed {
		c.seed[i] = rand.Uint64()
	}
	for i := range c.free {
		// Hand keys out in ascending order: nicer to read in dumps.
		c.free[i] = Key(MaxPeers - i)
	}
	c.nfree = MaxPeers
	for i := range c.slots {
		c.slots[i].key = Key(i)
	}
	c.errFull = fmt.Errorf("ipoib peer cache: enter address: all %d slots held or in use by unread headers: %w (%w)", MaxPeers, ErrCacheFull, netdev.ErrNoPeer)
	c.errUnknown = fmt.Errorf("ipoib peer cache: key names no peer: %w", netdev.ErrUnknownKey)
	c.errTxNoPeer = fmt.Errorf("ipoib transmit: destination key names no peer: %w", netdev.ErrNoPeer)
	c.errStale = fmt.Errorf("ipoib peer cache: resolve reference: %w", ErrStalePeer)
	c.errParkFull = fmt.Errorf("ipoib peer cache: park packet: %d already waiting: %w (%w)", MaxParked, ErrParkFull, netdev.ErrNoPath)
	return c
}

// Len returns the number of peers in the cache. Safe from any goroutine.
func (c *PeerCache) Len() int { return int(c.live.Load()) }

// Stats returns a snapshot of the cache's counters. Safe from any
// goroutine.
func (c *PeerCache) Stats() CacheStats {
	return c.ctr.Load()
}

// assertHome guards the control calls.
func (c *PeerCache) assertHome(op string) {
	if c.loop != nil {
		c.loop.AssertHome(op)
	}
}

// checkIO guards the data-path calls, in -race builds only: the check
// costs a system call per packet.
func (c *PeerCache) checkIO(op string) {
	if raceEnabled && c.loop != nil {
		c.loop.AssertHome(op)
	}
}

// locate hashes raw and looks it up in the index. It returns the key, or
// NoKey, along with the index cell the address starts probing at and the
// tag kept beside its key, which an insertion needs. One function rather
// than two, because this is the per-packet path and a call costs more
// than the probe usually does.
//
// The hash folds the three words of the address with two
// 64x64->128-bit multiplies keyed by a seed that is random per cache, so
// a remote host cannot choose GIDs that pile into one probe run; a general
// byte hash would cost several times as much.
func (c *PeerCache) locate(raw *[AddrLen]byte) (k Key, home uint16, tag uint8) {
	w0 := binary.LittleEndian.Uint64(raw[0:8])
	w1 := binary.LittleEndian.Uint64(raw[8:16])
	w2 := binary.LittleEndian.Uint32(raw[16:20])
	hi, lo := bits.Mul64(w0^c.seed[0], w1^c.seed[1])
	hi, lo = bits.Mul64(hi^lo^c.seed[2], uint64(w2)^c.seed[0]^hashOddMix)
	h := hi ^ lo
	home, tag = uint16(h&indexMask), uint8(h>>56)
	for i := home; ; i = (i + 1) & indexMask {
		e := c.index[i]
		if e == 0 {
			return NoKey, home, tag
		}
		if uint8(e>>8) != tag {
			continue
		}
		a := &c.addrs[Key(e)]
		if binary.LittleEndian.Uint64(a[0:8]) == w0 && binary.LittleEndian.Uint64(a[8:16]) == w1 &&
			binary.LittleEndian.Uint32(a[16:20]) == w2 {
			return Key(e), home, tag
		}
	}
}

// sameAddr compares two addresses as three loads each rather than a call
// to the general memory compare.
func sameAddr(x, y *[AddrLen]byte) bool {
	return binary.LittleEndian.Uint64(x[0:8]) == binary.LittleEndian.Uint64(y[0:8]) &&
		binary.LittleEndian.Uint64(x[8:16]) == binary.LittleEndian.Uint64(y[8:16]) &&
		binary.LittleEndian.Uint32(x[16:20]) == binary.LittleEndian.Uint32(y[16:20])
}

// indexInsert records key k, whose slot holds home and tag, in the index.
func (c *PeerCache) indexInsert(k Key) {
	p := &c.slots[k]
	i := p.home
	for c.index[i] != 0 {
		i = (i + 1) & indexMask
	}
	c.index[i] = uint16(p.tag)<<8 | uint16(k)
}

// indexDelete removes key k from the index, moving later members of its
// probe run back so that every remaining key is still reachable from its
// home cell without tombstones.
func (c *PeerCache) indexDelete(k Key) {
	i := c.slots[k].home
	for Key(c.index[i]) != k {
		i = (i + 1) & indexMask
	}
	for j := (i + 1) & indexMask; c.index[j] != 0; j = (j + 1) & indexMask {
		h := c.slots[Key(c.index[j])].home
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j]: then it must stay at or after its home.
		if (j-h)&indexMask >= (j-i)&indexMask {
			c.index[i] = c.index[j]
			i = j
		}
	}
	c.index[i] = 0
}

// unlink takes k off the LRU list.
func (c *PeerCache) unlink(k Key) {
	prev, next := c.lruPrev[k], c.lruNext[k]
	c.lruNext[prev] = next
	c.lruPrev[next] = prev
	c.lruPrev[k], c.lruNext[k] = 0, 0
	c.state[k] &^= slotListed
}

// linkFront puts k at the most recently used end of the LRU list.
func (c *PeerCache) linkFront(k Key) {
	first := c.lruNext[0]
	c.lruPrev[k], c.lruNext[k] = 0, first
	c.lruPrev[first] = k
	c.lruNext[0] = k
	c.state[k] |= slotListed
}

// linkBack puts k at the least recently used end of the LRU list.
func (c *PeerCache) linkBack(k Key) {
	last := c.lruPrev[0]
	c.lruPrev[k], c.lruNext[k] = last, 0
	c.lruNext[last] = k
	c.lruPrev[0] = k
	c.state[k] |= slotListed
}

// alloc returns a free slot, evicting the least recently used peer that
// is not fenced if none is free, or NoKey when every slot is held or
// fenced.
func (c *PeerCache) alloc() Key {
	if c.nfree == 0 {
		// A peer entered since the last claim may have its key in a
		// header nobody has read yet. Such peers gather at the front,
		// but a cold entry (enterKeyAt) sits at the back, so walk past
		// fenced ones; the walk is almost always empty.
		victim := c.lruPrev[0]
		for victim != 0 && c.stamp[victim] == c.epoch {
			victim = c.lruPrev[victim]
		}
		if victim == 0 {
			return NoKey
		}
		if c.onEvict != nil {
			c.onEvict(&c.slots[victim])
		}
		c.release(victim)
		counter.Inc(&c.ctr.V.Evicted)
	}
	c.nfree--
	return c.free[c.nfree]
}

// release empties slot k and returns it to the free list. The generation
// moves on so that outstanding references see the change.
func (c *PeerCache) release(k Key) {
	p := &c.slots[k]
	c.indexDelete(k)
	if c.state[k]&slotListed != 0 {
		c.unlink(k)
	}
	*p = Peer{key: k, gen: p.gen + 1}
	c.addrs[k] = [AddrLen]byte{}
	c.state[k] = 0
	c.free[c.nfree] = k
	c.nfree++
	c.live.Add(-1)
}

// enter returns the peer for raw, creating it if needed, and marks it
// most recently used.
func (c *PeerCache) enter(raw *[AddrLen]byte) (*Peer, error) {
	k, err := c.enterKey(raw)
	if err != nil {
		return nil, err
	}
	return &c.slots[k], nil
}

// enterKey is enter for callers that only need the key, which it finds
// without touching the bulky slot.
func (c *PeerCache) enterKey(raw *[AddrLen]byte) (Key, error) {
	k, home, tag := c.locate(raw)
	if k != NoKey {
		c.touch(k)
		return k, nil
	}
	return c.insert(raw, home, tag, false)
}

// enterKeyCold is enterKey for a peer that may never be heard from again
// (the sender of a multicast datagram): a new peer goes to the least
// recently used end of the LRU order, and a peer already known keeps its
// place. On a subnet of more hosts than keys, the senders of broadcasts
// then take each other's slots instead of pushing out the peers this
// host talks to. Either way the key is fenced until the next claim, as
// its header is not read yet.
func (c *PeerCache) enterKeyCold(raw *[AddrLen]byte) (Key, error) {
	k, home, tag := c.locate(raw)
	if k != NoKey {
		c.stamp[k] = c.epoch
		return k, nil
	}
	return c.insert(raw, home, tag, true)
}

// insert gives raw, which has no key, a slot: at the front of the LRU
// order, or at the back when cold.
func (c *PeerCache) insert(raw *[AddrLen]byte, home uint16, tag uint8, cold bool) (Key, error) {
	k := c.alloc()
	if k == NoKey {
		counter.Inc(&c.ctr.V.Full)
		return NoKey, c.errFull
	}
	p := &c.slots[k]
	p.raw = *raw
	_ = p.addr.Decode(raw[:]) // cannot fail: raw is a whole address
	p.home, p.tag = home, tag
	c.addrs[k] = *raw
	c.state[k] = slotLive
	c.stamp[k] = c.epoch
	c.indexInsert(k)
	if cold {
		c.linkBack(k)
	} else {
		c.linkFront(k)
	}
	c.live.Add(1)
	counter.Inc(&c.ctr.V.Entered)
	return k, nil
}

// touch marks live peer k entered now: most recently used, and fenced
// from eviction until the next claim.
func (c *PeerCache) touch(k Key) {
	c.stamp[k] = c.epoch
	if c.state[k]&slotListed != 0 && c.lruNext[0] != k {
		c.unlink(k)
		c.linkFront(k)
	}
}

// enterMemo is enterKey with a one-entry memo: when raw is the address
// the memo's key still holds, it skips the hash and the index. The memo
// is only a hint; a reused or emptied slot simply misses.
func (c *PeerCache) enterMemo(raw *[AddrLen]byte, memo *Key) (Key, error) {
	if k := *memo; c.isLive(k) && sameAddr(&c.addrs[k], raw) {
		c.touch(k)
		return k, nil
	}
	k, err := c.enterKey(raw)
	if err == nil {
		*memo = k
	}
	return k, err
}

// isLive reports whether slot k holds a peer.
func (c *PeerCache) isLive(k Key) bool { return c.state[k]&slotLive != 0 }

// lookup returns the live peer of key k, or nil.
func (c *PeerCache) lookup(k Key) *Peer {
	if c.isLive(k) {
		return &c.slots[k]
	}
	return nil
}

// resolve returns the peer r names if its slot has not been reused.
func (c *PeerCache) resolve(r Ref) (*Peer, error) {
	p := &c.slots[r.Key]
	live := c.isLive(r.Key)
	if !live && p.gen == r.Gen || r.Key == NoKey {
		counter.Inc(&c.ctr.V.UnknownKey)
		return nil, c.errUnknown
	}
	if !live || p.gen != r.Gen {
		counter.Inc(&c.ctr.V.Stale)
		return nil, c.errStale
	}
	return p, nil
}

// setHeld moves k on or off the LRU list after its pins or parked count
// changed from wasHeld.
func (c *PeerCache) setHeld(k Key, wasHeld bool) {
	switch held := c.slots[k].held(); {
	case held && !wasHeld:
		c.unlink(k)
	case !held && wasHeld:
		c.linkFront(k)
	}
}
