// Unicast paths: PathRecord queries, address handles, expiry and the
// flushes port events ask for.
//
// Control plane: these run on the device's loop from SA callbacks, the
// expiry timer, the flush bottom half and the netdev ops. The data path
// (io.go) starts queries and marks paths wrong, and calls nothing here
// that blocks.

package ipoib

import (
	"fmt"
	"time"

	"github.com/ipoibd/ipoibd/ib"
)

// Unicast datagrams are sent with a GRH. Within a subnet IB does not need
// one, but without it a receiver knows the sender only by LID and QPN and
// has to map them back to a GID; with it every receiver enters the full
// 20-byte address of the sender at once, which is what the IPoIB header's
// source key names. The GRH costs 40 bytes on the wire and none of the
// IB MTU, which counts payload only.

// startPathQuery asks the SA for the path to unicast peer p; on a RoCE
// port, which has no SA, it resolves the path locally instead.
func (d *driver) startPathQuery(p *Peer, st *peerState) error {
	if d.roce {
		return d.resolveLocal(p, st)
	}
	q, mask := ib.PathQueryByGID(d.self.GID, p.addr.GID, d.l.PKey())
	ref := st.ref
	h, err := d.sa.GetPathRecord(q, mask, func(r ib.PathRecord, err error) { d.pathDone(ref, r, err) })
	if err != nil {
		return fmt.Errorf("ipoib %s: path to %v: %w", d.cfg.Name, p.addr.GID, err)
	}
	st.query, st.querying = h, true
	d.nd.Stats().Inc(PathQueries)
	return nil
}

// pathDone takes a PathRecord answer: a new address handle, the path in
// the peer, and the packets that waited for it on their way. A failure
// drops them (counted as tx_dropped_no_path) and forgets any old path, so
// the next packet asks again.
func (d *driver) pathDone(ref Ref, rec ib.PathRecord, err error) {
	p := d.cache.Lookup(ref.Key)
	if p == nil || p.Ref() != ref || d.closed {
		return // the peer was evicted (its query is cancelled then) or the link closed
	}
	st := d.state(p)
	st.querying, st.query = false, ib.SAQuery{}
	var ah ib.AddressHandle
	if err == nil {
		switch {
		case !rec.DLID.IsUnicast():
			err = fmt.Errorf("path to %v: DLID %v is not unicast: %w", p.addr.GID, rec.DLID, ib.ErrFieldRange)
		case !rec.MTU.Valid() || !rec.SL.Valid():
			err = fmt.Errorf("path to %v: MTU code %d, SL %d: %w", p.addr.GID, rec.MTU, rec.SL, ib.ErrFieldRange)
		}
	}
	if err == nil {
		ah, err = d.dev.CreateAH(ib.AddressVector{
			Port: d.cfg.Port, DLID: rec.DLID, SL: rec.SL, StaticRate: rec.Rate,
			GlobalRoute: true, DGID: p.addr.GID, SGIDIndex: d.cfg.GIDIndex,
			FlowLabel: rec.FlowLabel, HopLimit: rec.HopLimit, TClass: rec.TClass,
		})
	}
	d.clearPath(p, st)
	if err != nil {
		d.nd.Stats().Inc(PathFailures)
		d.log.Debug("path query failed", "peer", p.addr, "err", err)
		d.dropParked(ref, d.errNoPath)
		return
	}
	_ = d.cache.SetPath(ref, Path{LID: rec.DLID, SL: rec.SL, Rate: rec.Rate, MTU: rec.MTU, AH: ah}) // ref was just resolved
	st.since, st.stale = d.loop.Now(), false
	st.lidKey = lidKey(rec.DLID, p.addr.QPN)
	d.byLID[st.lidKey] = ref
	d.sendParked(ref)
}

// clearPath forgets p's path: its address handle is retired and its LID
// no longer names it.
func (d *driver) clearPath(p *Peer, st *peerState) {
	if path, ok := p.Path(); ok {
		_, _ = d.cache.ClearPath(st.ref)
		if path.AH != nil {
			d.retireAH(path.AH)
		}
	}
	if st.lidKey != 0 {
		if d.byLID[st.lidKey] == st.ref {
			delete(d.byLID, st.lidKey)
		}
		st.lidKey = 0
	}
	st.stale = false
}

// onEvict is the peer cache's eviction hook: the peer's query and address
// handle go with it. It runs inside Enter and touches nothing of the
// cache.
func (d *driver) onEvict(p *Peer) {
	st := &d.peers[p.key]
	if st.ref != p.Ref() {
		*st = peerState{}
	}
	if st.querying {
		st.query.Cancel()
	}
	if path, ok := p.Path(); ok && path.AH != nil {
		d.retireAH(path.AH)
	}
	if st.lidKey != 0 && d.byLID[st.lidKey] == st.ref {
		delete(d.byLID, st.lidKey)
	}
	*st = peerState{}
}

// unicastRefs lists the unicast peers other than ourselves. The cache may
// not change while Each walks it, so flushes collect first and act after.
func (d *driver) unicastRefs() []Ref {
	var refs []Ref
	d.cache.Each(func(p *Peer) bool {
		if !p.Multicast() && p.Ref() != d.selfRef {
			refs = append(refs, p.Ref())
		}
		return true
	})
	return refs
}

// flushPaths forgets every unicast path: queries are cancelled, address
// handles retired, and packets waiting for a path completed with err (or
// left to netdev when err is nil).
func (d *driver) flushPaths(err error) {
	for _, r := range d.unicastRefs() {
		p, rerr := d.cache.Resolve(r)
		if rerr != nil {
			continue
		}
		st := d.state(p)
		if st.querying {
			st.query.Cancel()
			st.querying, st.query = false, ib.SAQuery{}
		}
		d.clearPath(p, st)
		d.dropParked(r, err)
	}
}

// invalidatePaths marks every unicast path stale: it stays in use, and
// the next packet on it asks the SA again (a light flush).
func (d *driver) invalidatePaths() {
	d.cache.Each(func(p *Peer) bool {
		if _, ok := p.Path(); ok && !p.Multicast() {
			d.state(p).stale = true
		}
		return true
	})
}

// expiryPeriod is how often the expiry scan runs: a path is refreshed at
// most a quarter of PathTimeout late.
func (d *driver) expiryPeriod() time.Duration { return max(d.cfg.PathTimeout/4, time.Second) }

// expire is the expiry timer's callback: paths older than PathTimeout are
// marked stale, and send-only groups nobody sent to since the last scan
// are left.
func (d *driver) expire() {
	if !d.opened || d.closed {
		return
	}
	now := d.loop.Now()
	d.cache.Each(func(p *Peer) bool {
		if p.Multicast() {
			return true
		}
		st := &d.peers[p.key]
		if _, ok := p.Path(); ok && st.ref == p.Ref() && !st.stale && now.Sub(st.since) >= d.cfg.PathTimeout {
			st.stale = true
			d.nd.Stats().Inc(PathsExpired)
		}
		return true
	})
	var idle []*group
	for _, g := range d.groups {
		if g.full || g.status == groupJoining {
			continue
		}
		st := &d.peers[g.ref.Key]
		if st.ref == g.ref && st.used {
			st.used = false
			continue
		}
		if p := d.cache.Lookup(g.ref.Key); p != nil && p.Parked() == 0 {
			idle = append(idle, g)
		}
	}
	for _, g := range idle {
		d.log.Debug("leaving idle send-only group", "mgid", g.mgid)
		d.leave(g, nil)
		d.deleteGroup(g, nil)
	}
	d.expiry.Reset(d.expiryPeriod())
}

// retireAH destroys an address handle once no posted or queued send can
// still refer to it.
func (d *driver) retireAH(ah ib.AddressHandle) {
	seq := d.posted + uint64(len(d.wrs))
	if seq == d.finished {
		if err := ah.Destroy(); err != nil {
			d.log.Warn("destroy address handle", "err", err)
		}
		return
	}
	d.dead = append(d.dead, deadAH{ah: ah, seq: seq})
}

// reap destroys the retired address handles whose sends have completed.
func (d *driver) reap() {
	n := 0
	for n < len(d.dead) && d.dead[n].seq <= d.finished {
		if err := d.dead[n].ah.Destroy(); err != nil {
			d.log.Warn("destroy address handle", "err", err)
		}
		d.dead[n] = deadAH{}
		n++
	}
	if n > 0 {
		d.dead = append(d.dead[:0], d.dead[n:]...)
	}
}

// writeOffSends gives up on every send in flight, as when the QP goes
// away: their buffers are completed with err (or left to netdev when err
// is nil), and completions that still arrive for them are ignored.
func (d *driver) writeOffSends(err error) {
	d.txEpoch++
	d.txFree = d.txFree[:0]
	for i := range d.tx {
		b := d.tx[i].b
		d.tx[i] = txSlot{}
		d.txFree = append(d.txFree, uint32(i))
		if b != nil && err != nil {
			_ = d.nd.TxComplete(b, err)
		}
	}
	d.finished = d.posted
	d.reap()
}

// dropParked takes the packets parked for r out of the cache and
// completes them with err; with a nil err they are left in netdev's
// queue for Close to complete.
func (d *driver) dropParked(r Ref, err error) {
	bufs, rerr := d.cache.Unpark(r, d.parked[:0])
	if rerr != nil {
		return
	}
	for i, b := range bufs {
		bufs[i] = nil
		if err != nil {
			_ = d.nd.TxComplete(b, err)
		}
	}
}

// pathMismatch is called when a datagram from unicast peer p arrived from
// another LID than p's path goes to: the peer has moved (a LID change we
// get no event for), so the path is forgotten and the next packet asks
// again rather than being sent into the void.
func (d *driver) pathMismatch(p *Peer, slid ib.LID) {
	st := d.state(p)
	if st.querying || d.loop.Now().Sub(st.since) < minPathAge {
		return
	}
	d.log.Debug("peer moved", "peer", p.addr, "lid", slid)
	d.clearPath(p, st)
}
