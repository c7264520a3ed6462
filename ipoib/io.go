// Data plane of the peer cache and the link.
//
// The functions in this file run once or twice per packet on the loop
// that owns the cache (the device's loop). They never block and allocate
// nothing, refusals included, except where an argument is malformed (a
// programming error, reported with a descriptive error). Because checking
// the caller costs a system call per packet, they check it only in -race
// builds, where calling one off the loop panics.

package ipoib

import (
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// Enter returns the peer of the 20-byte address addr, giving it a key if
// it has none, and marks it most recently used. It fails with an error
// wrapping netdev.ErrBadAddr for an address of the wrong length and with
// one wrapping ErrCacheFull (and netdev.ErrNoPeer) when no slot can be
// freed.
func (c *PeerCache) Enter(addr []byte) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Enter")
	if len(addr) != ib.IPoIBAddrLen {
		return nil, fmt.Errorf("ipoib peer cache: enter a %d-byte address, want %d: %w", len(addr), ib.IPoIBAddrLen, netdev.ErrBadAddr)
	}
	return c.enter((*[ib.IPoIBAddrLen]byte)(addr))
}

// EnterAddr is Enter for an address in structured form, as a receive path
// has it from the completion's source QPN and the GRH's source GID.
func (c *PeerCache) EnterAddr(a ib.IPoIBAddr) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.EnterAddr")
	var raw [ib.IPoIBAddrLen]byte
	if err := a.Encode(raw[:]); err != nil {
		return nil, fmt.Errorf("ipoib peer cache: enter %v: %w: %w", a, netdev.ErrBadAddr, err)
	}
	return c.enter(&raw)
}

// Find returns the peer of addr without entering it or changing its
// place in the LRU order, or nil when addr has no key.
func (c *PeerCache) Find(addr []byte) *Peer {
	c.checkIO("ipoib.PeerCache.Find")
	if len(addr) != ib.IPoIBAddrLen {
		return nil
	}
	raw := (*[ib.IPoIBAddrLen]byte)(addr)
	if k, _, _ := c.locate(raw); k != NoKey {
		return &c.slots[k]
	}
	return nil
}

// Lookup returns the peer that holds key k now, or nil. It is for
// inspection; the data path reads keys out of headers with Claim.
func (c *PeerCache) Lookup(k Key) *Peer {
	c.checkIO("ipoib.PeerCache.Lookup")
	return c.lookup(k)
}

// Claim returns the peer of a key just read out of a header and records
// that the header has been read, which lets peers entered before it be
// evicted again (see PeerCache). A key that names no peer yields an error
// wrapping netdev.ErrUnknownKey, and is counted.
func (c *PeerCache) Claim(k Key) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Claim")
	return c.claim(k)
}

func (c *PeerCache) claim(k Key) (*Peer, error) {
	if !c.claimKey(k) {
		return nil, c.errUnknown
	}
	return &c.slots[k], nil
}

// claimKey is claim for callers that need only to know that k is live.
func (c *PeerCache) claimKey(k Key) bool {
	c.epoch++
	if c.isLive(k) {
		return true
	}
	c.unknownKey.Add(1)
	return false
}

// Settle records that no header written by this cache's keys is waiting
// to be read: a driver calls it when it drops a frame whose keys it set
// but that never reached Link.Pull, or at the start of each pass over its
// completions, so that the eviction fence cannot outlive the frames it
// protects.
func (c *PeerCache) Settle() {
	c.checkIO("ipoib.PeerCache.Settle")
	c.epoch++
}

// Resolve returns the peer r names, unless its slot has been given to
// another address since r was taken (an error wrapping ErrStalePeer) or r
// never named a live peer (netdev.ErrUnknownKey). Both are counted. A
// transmit path resolves its Ref at the moment it sends, so a packet
// whose peer was evicted while it waited is dropped and never reaches the
// slot's new occupant.
func (c *PeerCache) Resolve(r Ref) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Resolve")
	return c.resolve(r)
}

// SetPath records the path to the peer r names, typically when its path
// record or group join comes back. A stale r is refused: the answer was
// for a peer that is gone.
func (c *PeerCache) SetPath(r Ref, path Path) error {
	c.checkIO("ipoib.PeerCache.SetPath")
	p, err := c.resolve(r)
	if err != nil {
		return err
	}
	p.path, p.hasPath = path, true
	return nil
}

// ClearPath forgets the path to the peer r names and returns it, so the
// caller can destroy its address handle. The peer keeps its key.
func (c *PeerCache) ClearPath(r Ref) (Path, error) {
	c.checkIO("ipoib.PeerCache.ClearPath")
	p, err := c.resolve(r)
	if err != nil {
		return Path{}, err
	}
	old := p.path
	p.path, p.hasPath = Path{}, false
	return old, nil
}

// Park stores b in the slot of the peer r names until its path is known.
// The peer is not evicted while packets are parked. It fails with an
// error wrapping ErrParkFull (and netdev.ErrNoPath) when MaxParked packets
// already wait, and with Resolve's errors for a stale r; b is then still
// the caller's.
func (c *PeerCache) Park(r Ref, b *netdev.Buffer) error {
	c.checkIO("ipoib.PeerCache.Park")
	p, err := c.resolve(r)
	if err != nil {
		return err
	}
	if int(p.nparked) >= MaxParked {
		return c.errParkFull
	}
	was := p.held()
	p.parked[p.nparked] = b
	p.nparked++
	c.setHeld(r.Key, was)
	return nil
}

// Unpark appends the packets parked for the peer r names to dst, oldest
// first, empties the slot's queue and returns the extended slice. The
// peer becomes evictable again unless pinned. A dst with room for
// MaxParked more buffers keeps this allocation-free.
func (c *PeerCache) Unpark(r Ref, dst []*netdev.Buffer) ([]*netdev.Buffer, error) {
	c.checkIO("ipoib.PeerCache.Unpark")
	p, err := c.resolve(r)
	if err != nil {
		return dst, err
	}
	was := p.held()
	dst = append(dst, p.parked[:p.nparked]...)
	clear(p.parked[:])
	p.nparked = 0
	c.setHeld(r.Key, was)
	return dst, nil
}

// TxPeer is the driver's first step with a frame that Link.Push built: it
// claims the destination key, zeroes both keys as the wire wants them, and
// returns the destination peer. A driver that will send the frame later
// keeps the peer's Ref, not the *Peer. A frame without a header, or whose
// key names no peer, yields an error wrapping netdev.ErrNoPeer.
func (l *Link) TxPeer(b *netdev.Buffer) (*Peer, error) {
	l.cache.checkIO("ipoib.Link.TxPeer")
	dk, _, err := ClearKeys(b)
	if err != nil {
		return nil, fmt.Errorf("ipoib transmit: %w (%w)", err, netdev.ErrNoPeer)
	}
	p, err := l.cache.claim(dk)
	if err != nil {
		return nil, l.errTxNoPeer
	}
	return p, nil
}

// SetRxPeers is the driver's step with a received frame, positioned at the
// IPoIB header (the GRH already pulled): it enters the destination (the
// interface's own address, or the group for a multicast datagram) and the
// source (the completion's source QPN and the GRH's source GID) in the
// cache and writes their keys into the header for Link.Pull to read.
func (l *Link) SetRxPeers(b *netdev.Buffer, dst, src ib.IPoIBAddr) error {
	l.cache.checkIO("ipoib.Link.SetRxPeers")
	if b.Len() < HeaderLen {
		return fmt.Errorf("ipoib receive: %d-byte frame, header is %d: %w", b.Len(), HeaderLen, netdev.ErrShort)
	}
	dp, err := l.cache.EnterAddr(dst)
	if err != nil {
		return fmt.Errorf("ipoib receive: destination: %w", err)
	}
	sp, err := l.cache.EnterAddr(src)
	if err != nil {
		return fmt.Errorf("ipoib receive: source: %w", err)
	}
	return SetKeys(b, dp.key, sp.key)
}
