// Control plane of the peer cache, the link and the driver.
//
// The functions in this file change configuration: the eviction hook,
// pins, removals, the partition, and for a Link made by New the driver's
// life cycle (New, Close, the netdev Open and Close ops), multicast
// membership and the snapshots `ipoibd peers` prints. They run on the
// loop that owns the cache (the device's loop) and assert it on every
// call, because running one beside the data path would corrupt the
// cache; a goroutine elsewhere schedules a bottom half instead.
// NewPeerCache and NewProtocol, which build objects nobody else can see yet,
// are safe anywhere, and so is Link.Group. The driver's group, path and
// event machinery (join.go, path.go, events.go) is control plane too: it
// runs from SA callbacks, timers and bottom halves on the same loop.

package ipoib

import (
	"fmt"
	"net/netip"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
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

// New puts an IPoIB link on port cfg.Port of dev and returns it. It
// creates what the link runs on: a completion queue, the UD QP with its
// receive buffers (GRH area plus the largest IB MTU, so no MTU change
// ever needs new ones), the port's MAD interface with an SA client, and
// a netdev.Device (NetDev) whose hardware address is the interface's
// IPoIB address, flags 0, the QPN and the port GID. The device starts
// closed with its link down; opening it joins the broadcast group, and
// the link comes up once that has succeeded on an ACTIVE port.
//
// On an Ethernet link-layer (RoCE) port there is no SA, so no MAD port
// is opened: groups are attached and paths resolved locally (roce.go),
// with the port's active MTU as the link's IB MTU.
//
// loop must be dev's loop and the caller's home. New takes over dev's
// event handler; dev stays the caller's, to close after Link.Close.
func New(loop *aio.Context, dev ib.Device, cfg Config) (*Link, error) {
	if loop == nil || dev == nil {
		return nil, fmt.Errorf("ipoib new: nil loop or device: %w", netdev.ErrInvalidConfig)
	}
	loop.AssertHome("ipoib.New")
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Link, error) {
		return nil, fmt.Errorf("ipoib new %s on %s: %w", cfg.Name, dev.Name(), err)
	}
	if dev.Loop() != loop {
		return fail(fmt.Errorf("device lives on loop %q, not %q: %w", dev.Loop().Name(), loop.Name(), netdev.ErrInvalidConfig))
	}
	attr, err := dev.QueryPort(cfg.Port)
	if err != nil {
		return fail(err)
	}
	switch {
	case cfg.GIDIndex < 0 || cfg.GIDIndex >= len(attr.GIDs):
		return fail(fmt.Errorf("GID index %d, port has %d GIDs: %w", cfg.GIDIndex, len(attr.GIDs), netdev.ErrInvalidConfig))
	}
	pkIdx, err := attr.PKeyIndex(cfg.PKey)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrNoPKey, err))
	}
	cache := NewPeerCache(loop)
	l, err := NewProtocol(cache, cfg.PKey)
	if err != nil {
		return fail(err)
	}
	d := &driver{
		l: l, loop: loop, dev: dev, cfg: cfg, log: cfg.Logger.With("link", cfg.Name), cache: cache,
		attr: attr, roce: isRoCE(attr), pkeyIndex: pkIdx, qkey: cfg.QKey,
		groups: make(map[ib.GID]*group), byLID: make(map[uint64]Ref),
		tx: make([]txSlot, cfg.SendDepth), txFree: make([]uint32, 0, cfg.SendDepth),
		wcs: make([]ib.Completion, pollBatch), swcs: make([]ib.Completion, sendPollBatch), repost: make([]uint64, 0, cfg.RecvDepth),
		rx:  make([]rxSlot, cfg.RecvDepth),
		wrs: make([]ib.SendWR, 0, cfg.SendDepth), parked: make([]*netdev.Buffer, 0, MaxParked),
	}
	for i := cfg.SendDepth - 1; i >= 0; i-- {
		d.txFree = append(d.txFree, uint32(i))
	}
	d.buildErrors()
	ok := false
	defer func() {
		if !ok {
			d.release()
		}
	}()
	if d.cq, err = dev.CreateCQ(cfg.RecvDepth); err != nil {
		return fail(err)
	}
	if d.scq, err = dev.CreateCQ(cfg.SendDepth); err != nil {
		return fail(err)
	}
	d.scq.SetArming(ib.ArmOnDemand)
	if d.qp, err = d.createQP(pkIdx); err != nil {
		return fail(err)
	}
	if !d.roce {
		if d.mad, err = dev.OpenMADPort(cfg.Port); err != nil {
			return fail(err)
		}
		if d.sa, err = ib.NewSAClient(loop, d.mad, attr, cfg.SA); err != nil {
			return fail(err)
		}
	}
	d.self = Addr{QPN: d.qp.QPN(), GID: attr.GIDs[cfg.GIDIndex]}
	var hw [AddrLen]byte
	_ = d.self.Encode(hw[:]) // a QPN from the QP fits 24 bits
	mtu, _ := IPMTU(cfg.BroadcastMTU)
	maxMTU, _ := IPMTU(ib.MTU4096)
	if d.nd, err = netdev.New(netdev.Config{
		Name: cfg.Name, Loop: loop, Link: l, HWAddr: hw[:], MTU: mtu, MaxMTU: maxMTU, Ops: d,
		TxQueueLen: cfg.TxQueueLen, Buffers: cfg.Buffers, Headroom: ib.GRHSize,
	}); err != nil {
		return fail(err)
	}
	p, err := cache.EnterAddr(d.self)
	if err == nil {
		d.selfRef = p.Ref()
		err = cache.Pin(d.selfRef)
	}
	if err != nil {
		return fail(err)
	}
	if d.bcast, err = d.newGroup(BroadcastGID(cfg.PKey), true, true); err != nil {
		return fail(err)
	}
	d.publishGroup()
	cache.SetEvictHook(d.onEvict)
	d.flushBH = loop.NewBH("ipoib flush "+cfg.Name, d.runFlush)
	d.sendBH = loop.NewBH("ipoib send completions "+cfg.Name, func() { d.reapSends(true) })
	d.rxLate = aio.NewMailbox(loop, "ipoib repost "+cfg.Name, d.recycleLate)
	d.expiry = loop.NewTimer("ipoib path expiry "+cfg.Name, d.expire)
	dev.SetEventHandler(d.onEvent)
	d.cq.SetHandler(d.onCQ)
	d.scq.SetHandler(d.onSendCQ)
	l.d = d
	ok = true
	return l, nil
}

// release frees what New made, in reverse order. Errors are logged: the
// objects are gone either way.
func (d *driver) release() {
	logErr := func(what string, err error) {
		if err != nil {
			d.log.Warn("release "+what, "err", err)
		}
	}
	if d.nd != nil {
		logErr("netdev", d.nd.Unregister())
	}
	if d.flushBH != nil {
		d.flushBH.Delete()
	}
	if d.sendBH != nil {
		d.sendBH.Delete()
	}
	if d.rxLate != nil {
		d.rxLate.Close()
	}
	if d.sa != nil {
		logErr("SA client", d.sa.Close())
	}
	if d.mad != nil {
		logErr("MAD port", d.mad.Close())
	}
	if d.qp != nil {
		logErr("QP", d.qp.Close())
		d.qp = nil
	}
	if d.cq != nil {
		d.cq.SetHandler(nil)
		logErr("receive CQ", d.cq.Close())
	}
	if d.scq != nil {
		d.scq.SetHandler(nil)
		logErr("send CQ", d.scq.Close())
	}
	d.finished = d.posted
	d.reap()
}

// driverOf returns l's driver, asserting the loop for op.
func (l *Link) driverOf(op string) (*driver, error) {
	if l.d == nil {
		return nil, fmt.Errorf("%s: %w", op, ErrNotDriver)
	}
	l.d.loop.AssertHome(op)
	return l.d, nil
}

// NetDev returns the network device the link runs, nil for a Link made
// by NewProtocol. Safe from any goroutine.
func (l *Link) NetDev() *netdev.Device {
	if l.d == nil {
		return nil
	}
	return l.d.nd
}

// Group returns the broadcast group's parameters as the SA gave them on
// the last join; Joined is false while the link is not in the group.
// Safe from any goroutine.
func (l *Link) Group() GroupInfo {
	if l.d == nil {
		return GroupInfo{}
	}
	if g := l.d.group.Load(); g != nil {
		return *g
	}
	return GroupInfo{}
}

// Leave takes the link down (its netdev closed: every group left with an
// MCMemberRecord Delete, paths forgotten) and calls done, on the loop,
// once the SA has answered every leave, or the SA client has given up on
// one after its retries, or at once when no leave is outstanding (a
// port that is down, a RoCE port). Close does the same without waiting:
// call Leave first, and Close from done or after a bound of the caller's,
// for a shutdown that leaves no stale member at the subnet manager.
func (l *Link) Leave(done func()) error {
	d, err := l.driverOf("ipoib.Link.Leave")
	if err != nil {
		return err
	}
	if d.closed {
		return fmt.Errorf("ipoib %s: leave: %w", d.cfg.Name, netdev.ErrClosed)
	}
	err = d.nd.Close()
	if d.leaving == 0 {
		done()
	} else {
		d.onLeft = append(d.onLeft, done)
	}
	return err
}

// Close closes the link's netdev (leaving its groups), unregisters it and
// releases the SA client, the MAD port, the QP and the CQ. The ib.Device
// stays open: it is the caller's.
func (l *Link) Close() error {
	d, err := l.driverOf("ipoib.Link.Close")
	if err != nil {
		return err
	}
	if d.closed {
		return fmt.Errorf("ipoib %s: close: %w", d.cfg.Name, netdev.ErrClosed)
	}
	err = d.nd.Close()
	d.closed = true
	d.dev.SetEventHandler(nil)
	d.expiry.Stop()
	d.bcast.timer.Stop()
	d.release()
	return err
}

// Open is the netdev op that brings the link up: on an ACTIVE port it
// joins the broadcast group, and the link comes up when the join
// succeeds; otherwise it waits for the port's activation event.
func (d *driver) Open(nd *netdev.Device) error {
	d.loop.AssertHome("ipoib open")
	if d.closed {
		return fmt.Errorf("ipoib %s: open: %w", d.cfg.Name, netdev.ErrClosed)
	}
	attr, err := d.dev.QueryPort(d.cfg.Port)
	if err != nil {
		return fmt.Errorf("ipoib %s: open: %w", d.cfg.Name, err)
	}
	d.attr = attr
	if d.sa != nil {
		if err := d.sa.UpdatePort(attr); err != nil {
			d.log.Warn("open: update SA client", "err", err)
		}
	}
	if d.qp == nil {
		if err := d.checkPKey(); err != nil {
			return fmt.Errorf("ipoib %s: open: %w", d.cfg.Name, err)
		}
	}
	d.updateSelf()
	d.opened = true
	d.expiry.Reset(d.expiryPeriod())
	if attr.State != ib.PortActive {
		nd.SetLinkDown(fmt.Errorf("ipoib %s: port %d is %v: %w (%w)", d.cfg.Name, d.cfg.Port, attr.State, ErrPortNotActive, netdev.ErrLinkDown))
		return nil
	}
	d.startJoin(d.bcast)
	return nil
}

// Close is the netdev op that takes the link down: every group is left
// (MCMemberRecord Delete) and detached, path queries are cancelled and
// address handles retired. Packets waiting for a path and sends in
// flight stay in netdev's queue, which completes them as aborted.
func (d *driver) Close(*netdev.Device) error {
	d.loop.AssertHome("ipoib close")
	d.opened = false
	d.expiry.Stop()
	for _, g := range d.groups {
		d.leave(g, nil)
		d.deleteGroup(g, nil)
	}
	d.leave(d.bcast, nil)
	d.flushPaths(nil)
	d.writeOffSends(nil)
	return nil
}

// JoinMulticast makes the link receive the IP multicast group: it joins
// the group's MGID as a full member and attaches the QP, now if the
// broadcast group is joined, else as soon as it is. Port events rejoin
// it. Groups are not counted: a second call is a no-op.
func (l *Link) JoinMulticast(group netip.Addr) error {
	d, mgid, err := l.groupDriver("ipoib.Link.JoinMulticast", group)
	if err != nil {
		return err
	}
	if mgid == d.bcast.mgid {
		return nil
	}
	g := d.groups[mgid]
	if g == nil {
		if g, err = d.newGroup(mgid, false, true); err != nil {
			return err
		}
	}
	if !g.full || g.status == groupIdle {
		g.full = true
		g.timer.Stop()
		d.startJoin(g)
	}
	return nil
}

// LeaveMulticast leaves a group JoinMulticast joined (or that transmit
// joined on demand): the SA is told, the QP detached, and packets still
// waiting for the join are dropped.
func (l *Link) LeaveMulticast(group netip.Addr) error {
	d, mgid, err := l.groupDriver("ipoib.Link.LeaveMulticast", group)
	if err != nil {
		return err
	}
	g := d.groups[mgid]
	if g == nil {
		return nil
	}
	d.leave(g, d.errNotJoined)
	d.deleteGroup(g, d.errNotJoined)
	return nil
}

// groupDriver is what the multicast calls (op) start with: the link's
// driver and the group's MGID.
func (l *Link) groupDriver(op string, group netip.Addr) (*driver, ib.GID, error) {
	d, err := l.driverOf(op)
	if err != nil {
		return nil, ib.GID{}, err
	}
	mgid, err := l.groupGID(group)
	return d, mgid, err
}

// groupGID maps an IP multicast group to its MGID in the link's
// partition.
func (l *Link) groupGID(group netip.Addr) (ib.GID, error) {
	var raw [AddrLen]byte
	addr, err := l.Multicast(group, raw[:0])
	if err != nil {
		return ib.GID{}, err
	}
	var a Addr
	_ = a.Decode(addr) // Multicast appended a whole address
	return a.GID, nil
}

// Peers returns a snapshot of the peer cache for `ipoibd peers`: held
// peers (the interface, groups, peers with packets waiting) first, then
// the rest from most to least recently used.
func (l *Link) Peers() ([]PeerInfo, error) {
	d, err := l.driverOf("ipoib.Link.Peers")
	if err != nil {
		return nil, err
	}
	now := d.loop.Now()
	var out []PeerInfo
	d.cache.Each(func(p *Peer) bool {
		pi := PeerInfo{Key: p.key, Addr: p.addr.String(), Multicast: p.Multicast(), Pinned: p.Pinned(), Pending: p.Parked()}
		path, ok := p.Path()
		if ok {
			pi.LID, pi.SL, pi.MTU, pi.Rate = path.LID, path.SL, path.MTU.Bytes(), path.Rate
		}
		st := &d.peers[p.key]
		mine := st.ref == p.Ref()
		switch g := d.groupOf(p); {
		case p.Ref() == d.selfRef:
			pi.State = "self"
		case g != nil:
			pi.State = g.status.String()
			if g.status == groupJoined {
				pi.Age = now.Sub(g.joinedAt)
			}
		case mine && st.querying && !ok:
			pi.State = "resolving"
		case ok && mine && st.stale:
			pi.State, pi.Age = "stale", now.Sub(st.since)
		case ok && mine:
			pi.State, pi.Age = "resolved", now.Sub(st.since)
		default:
			pi.State = "none"
		}
		out = append(out, pi)
		return true
	})
	return out, nil
}
