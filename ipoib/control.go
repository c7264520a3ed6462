// Control plane of the peer cache and the link.
//
// The functions in this file change configuration: the eviction hook,
// pins, removals, the partition. They run on the loop that owns the cache
// (the device's loop) and assert it on every call, because running one
// beside the data path would corrupt the cache; a goroutine elsewhere
// schedules a bottom half instead. NewPeerCache and NewLink, which build
// objects nobody else can see yet, are safe anywhere.

package ipoib

import (
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
)

// SetEvictHook installs fn to be told about every peer the cache evicts
// to make room, just before its slot is emptied, so that the driver can
// destroy the peer's address handle. fn runs inside Enter, on the data
// path: it must not block and must not call back into the cache. nil
// removes the hook.
func (c *PeerCache) SetEvictHook(fn func(p *Peer)) {
	c.assertHome("ipoib.PeerCache.SetEvictHook")
	c.onEvict = fn
}

// Pin exempts the peer r names from eviction until a matching Unpin: the
// interface's own address and the multicast groups it has joined must
// keep their keys. Pins nest.
func (c *PeerCache) Pin(r Ref) error {
	c.assertHome("ipoib.PeerCache.Pin")
	p, err := c.resolve(r)
	if err != nil {
		return fmt.Errorf("pin peer %d/%d: %w", r.Key, r.Gen, err)
	}
	was := p.held()
	p.pins++
	c.setHeld(r.Key, was)
	return nil
}

// Unpin undoes one Pin. The peer becomes the most recently used, so it is
// not the next to go.
func (c *PeerCache) Unpin(r Ref) error {
	c.assertHome("ipoib.PeerCache.Unpin")
	p, err := c.resolve(r)
	if err != nil {
		return fmt.Errorf("unpin peer %d/%d: %w", r.Key, r.Gen, err)
	}
	if p.pins == 0 {
		return fmt.Errorf("unpin peer %d/%d (%v): not pinned: %w", r.Key, r.Gen, p.addr, ErrPeerHeld)
	}
	was := p.held()
	p.pins--
	c.setHeld(r.Key, was)
	return nil
}

// Remove takes the peer r names out of the cache now, as eviction would
// (the eviction hook is not called: the caller knows). It refuses a peer
// that is pinned or has packets parked, with ErrPeerHeld. References to it
// go stale.
func (c *PeerCache) Remove(r Ref) error {
	c.assertHome("ipoib.PeerCache.Remove")
	p, err := c.resolve(r)
	if err != nil {
		return fmt.Errorf("remove peer %d/%d: %w", r.Key, r.Gen, err)
	}
	if p.held() {
		return fmt.Errorf("remove peer %d/%d (%v): %d pins, %d packets parked: %w", r.Key, r.Gen, p.addr, p.pins, p.nparked, ErrPeerHeld)
	}
	c.release(r.Key)
	return nil
}

// Each calls fn for every peer, held ones first, then the rest from most
// to least recently used, until fn returns false. fn may clear paths
// (ClearPath) but must not enter or remove peers. For `ipoibd peers` and
// the path flush that follows a port event.
func (c *PeerCache) Each(fn func(p *Peer) bool) {
	c.assertHome("ipoib.PeerCache.Each")
	for k := 1; k <= MaxPeers; k++ {
		if p := &c.slots[k]; c.isLive(Key(k)) && p.held() && !fn(p) {
			return
		}
	}
	for k := c.lruNext[0]; k != 0; k = c.lruNext[k] {
		if !fn(&c.slots[k]) {
			return
		}
	}
}

// SetPKey changes the partition whose broadcast address Broadcast reports,
// after a P_Key change on the port. Peers already in the cache keep their
// keys; the driver rejoins the new broadcast group and pins it.
func (l *Link) SetPKey(pkey ib.PKey) error {
	l.cache.assertHome("ipoib.Link.SetPKey")
	return l.setPKey(pkey)
}
