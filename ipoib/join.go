// Multicast groups: the broadcast group that carries the link, and the
// IP multicast groups joined for the stack or on demand by transmit.
//
// Control plane: everything here runs on the device's loop, called from
// the netdev ops, SA callbacks, retry timers and the flush bottom half.
// The one piece the data path calls, xmitGroup in io.go, starts a join
// only for a group it has never seen.

package ipoib

import (
	"errors"
	"fmt"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// joinStatus is where a group stands with the SA.
type joinStatus uint8

const (
	groupIdle    joinStatus = iota // not joined; maybe waiting to retry
	groupJoining                   // first join in flight
	groupJoined                    // joined (a rejoin may be in flight)
)

// String names the status for `ipoibd peers`.
func (s joinStatus) String() string {
	switch s {
	case groupJoining:
		return "joining"
	case groupJoined:
		return "joined"
	}
	return "idle"
}

// createComponents are the MCMemberRecord components a join carries so
// that the SA can create the group if it does not exist yet. IBA
// 15.2.5.17 leaves the rule to the SA; OpenSM, and the simulator after
// it, insist on every parameter not negotiated with a selector (Q_Key,
// SL, FlowLabel, TClass) plus MTU and rate with their selectors, on top
// of the MGID, PortGID, P_Key and JoinState that every join names.
const createComponents = ib.MCMemberCompQKey | ib.MCMemberCompSL | ib.MCMemberCompFlowLabel |
	ib.MCMemberCompTClass | ib.MCMemberCompMTUSelector | ib.MCMemberCompMTU |
	ib.MCMemberCompRateSelector | ib.MCMemberCompRate

// group is one multicast group the link is in or wants to be in. Its
// address is a pinned peer of the cache, so the data path finds the
// group's path (MLID, address handle) in the peer like any other.
type group struct {
	mgid  ib.GID
	ref   Ref
	bcast bool
	// full asks for full membership and attaching the QP, so that the
	// group's traffic is received. Groups joined on demand because a
	// packet is sent to them are send-only full members instead: they
	// keep the group alive and may send, but the fabric delivers nothing
	// to them, which is all a sender needs (IBA 15.2.5.17, JoinState).
	full bool

	status   joinStatus
	querying bool
	query    ib.SAQuery
	rejoin   bool // join again once the broadcast group is (re)joined
	// plain drops the creation components from the join: a create-capable
	// join was refused, which means the group exists with parameters of
	// its own, and those are the ones to take.
	plain bool
	// localSeq numbers local joins on RoCE ports, so that an answer
	// scheduled before a forget or a newer join is recognised as void.
	localSeq uint32

	rec      ib.MCMemberRecord
	ah       ib.AddressHandle
	attached bool
	attMGID  ib.GID
	attMLID  ib.LID
	joinedAt time.Time

	timer   *aio.Timer
	backoff time.Duration
	done    func(ib.MCMemberRecord, error)
}

// newGroup enters and pins the group's address and makes its state.
func (d *driver) newGroup(mgid ib.GID, bcast, full bool) (*group, error) {
	p, err := d.cache.EnterAddr(MulticastAddr(mgid))
	if err != nil {
		return nil, fmt.Errorf("ipoib %s: group %v: %w", d.cfg.Name, mgid, err)
	}
	ref := p.Ref()
	if err := d.cache.Pin(ref); err != nil {
		return nil, fmt.Errorf("ipoib %s: group %v: %w", d.cfg.Name, mgid, err)
	}
	g := &group{mgid: mgid, ref: ref, bcast: bcast, full: full || bcast, backoff: d.cfg.JoinBackoff}
	g.timer = d.loop.NewTimer("ipoib join retry "+d.cfg.Name, func() { d.retryJoin(g) })
	g.done = func(r ib.MCMemberRecord, err error) { d.joinDone(g, r, err) }
	if !bcast {
		d.groups[mgid] = g
	}
	return g, nil
}

// deleteGroup forgets a group other than the broadcast one for good.
func (d *driver) deleteGroup(g *group, err error) {
	d.forget(g, err)
	if g.bcast {
		return
	}
	if err := d.cache.Unpin(g.ref); err != nil {
		d.log.Warn("unpin group", "mgid", g.mgid, "err", err)
	}
	delete(d.groups, g.mgid)
}

// groupOf returns the group whose address peer p is, or nil.
func (d *driver) groupOf(p *Peer) *group {
	r := p.Ref()
	if r == d.bcast.ref {
		return d.bcast
	}
	if g := d.groups[p.addr.GID]; g != nil && g.ref == r {
		return g
	}
	return nil
}

// joinRecord builds the MCMemberRecord Set for g. The broadcast group is
// asked for with the configured parameters; the other groups copy the
// broadcast group's, as RFC 4391 section 4 requires of IPoIB multicast
// groups (same P_Key, Q_Key, SL, MTU and HopLimit).
func (d *driver) joinRecord(g *group) (ib.MCMemberRecord, ib.ComponentMask) {
	js := ib.JoinSendOnlyFullMember
	if g.full {
		js = ib.JoinFullMember
	}
	rec, mask := ib.MCMemberQuery(g.mgid, d.self.GID, d.l.PKey(), js)
	if g.plain {
		return rec, mask
	}
	mask |= createComponents
	if g.bcast {
		rec.QKey, rec.SL = d.cfg.QKey, d.cfg.SL
		rec.MTUSelector, rec.MTU = ib.SelectorExactly, d.cfg.BroadcastMTU
		if a := d.attr.ActiveMTU; a.Valid() && a < rec.MTU {
			rec.MTU = a
		}
		rec.RateSelector, rec.Rate = ib.SelectorExactly, d.cfg.BroadcastRate
		if r := d.attr.Rate; r.Mbps() != 0 && r.Mbps() < rec.Rate.Mbps() {
			rec.Rate = r
		}
		return rec, mask
	}
	b := &d.bcast.rec
	rec.QKey, rec.SL, rec.FlowLabel, rec.TClass, rec.HopLimit = b.QKey, b.SL, b.FlowLabel, b.TClass, b.HopLimit
	rec.MTUSelector, rec.MTU = ib.SelectorExactly, b.MTU
	rec.RateSelector, rec.Rate = ib.SelectorExactly, b.Rate
	return rec, mask | ib.MCMemberCompHopLimit
}

// canJoin reports whether a join of g may be sent now: the link is open
// on an ACTIVE port with a QP, and for any group but the broadcast one,
// the broadcast group is joined (its parameters are the template).
func (d *driver) canJoin(g *group) bool {
	if !d.opened || d.closed || d.qp == nil || d.attr.State != ib.PortActive {
		return false
	}
	return g.bcast || d.bcast.status == groupJoined
}

// startJoin sends a join for g unless one is in flight or it cannot be
// sent yet (it is then sent when the port or the broadcast group is
// ready).
func (d *driver) startJoin(g *group) {
	if g.querying || !d.canJoin(g) {
		return
	}
	g.timer.Stop()
	g.rejoin = false
	if d.roce {
		d.startLocalJoin(g)
		return
	}
	rec, mask := d.joinRecord(g)
	q, err := d.sa.SetMCMemberRecord(rec, mask, g.done)
	if err != nil {
		d.joinFailed(g, err)
		return
	}
	g.query, g.querying = q, true
	if g.status == groupIdle {
		g.status = groupJoining
	}
}

// retryJoin is the backoff timer's callback.
func (d *driver) retryJoin(g *group) {
	if !d.canJoin(g) {
		return
	}
	d.nd.Stats().Inc(JoinRetries)
	d.startJoin(g)
}

// joinDone takes the SA's answer to a join.
func (d *driver) joinDone(g *group, rec ib.MCMemberRecord, err error) {
	g.querying, g.query = false, ib.SAQuery{}
	if d.closed {
		return
	}
	if err == nil {
		err = d.checkGroupRecord(g, &rec)
	}
	if err != nil {
		if !g.plain && errors.Is(err, ib.SAErrReqInvalid) {
			// The group exists and disagrees with what we would create:
			// join it as it is.
			d.log.Info("group exists with other parameters; joining it as it is", "mgid", g.mgid)
			g.plain = true
			d.startJoin(g)
			return
		}
		d.joinFailed(g, err)
		return
	}
	if err := d.applyJoin(g, &rec); err != nil {
		d.joinFailed(g, err)
	}
}

// checkGroupRecord refuses an answer the link could not use.
func (d *driver) checkGroupRecord(g *group, r *ib.MCMemberRecord) error {
	switch {
	case r.MGID != g.mgid:
		return fmt.Errorf("join %v: answer names group %v", g.mgid, r.MGID)
	case !r.MLID.IsMulticast() && !d.roce: // RoCE groups have no MLID
		return fmt.Errorf("join %v: answer's MLID %v is not multicast: %w", g.mgid, r.MLID, ib.ErrFieldRange)
	case !r.MTU.Valid():
		return fmt.Errorf("join %v: answer's MTU code %d: %w", g.mgid, r.MTU, ib.ErrFieldRange)
	case r.PKey.Base() != d.l.PKey().Base():
		return fmt.Errorf("join %v: answer's P_Key %v is not the link's %v", g.mgid, r.PKey, d.l.PKey())
	}
	return nil
}

// joinFailed counts a failed join and arms the retry.
func (d *driver) joinFailed(g *group, err error) {
	d.nd.Stats().Inc(JoinFailures)
	d.log.Warn("join failed", "mgid", g.mgid, "retry_in", g.backoff, "err", err)
	if g.status != groupJoined {
		g.status = groupIdle
		d.dropParked(g.ref, d.errNotJoined)
	}
	if d.opened && !d.closed {
		g.timer.Reset(g.backoff)
		g.backoff = min(2*g.backoff, d.cfg.JoinBackoffMax)
	}
}

// applyJoin puts a join's answer to work: attach the QP, take the Q_Key,
// make the address handle, record the path in the group's peer and send
// what waited for it. For the broadcast group it also sets the MTU and
// brings the link up.
func (d *driver) applyJoin(g *group, r *ib.MCMemberRecord) error {
	if g.full && (!g.attached || g.attMGID != r.MGID || g.attMLID != r.MLID) {
		d.detach(g)
		if err := d.qp.AttachMcast(r.MGID, r.MLID); err != nil {
			return fmt.Errorf("join %v: attach QP: %w", g.mgid, err)
		}
		g.attached, g.attMGID, g.attMLID = true, r.MGID, r.MLID
	}
	if g.bcast && r.QKey != d.qkey {
		if err := d.qp.SetQKey(r.QKey); err != nil {
			return fmt.Errorf("join %v: set Q_Key %v: %w", g.mgid, r.QKey, err)
		}
		d.qkey = r.QKey
	}
	ah, err := d.dev.CreateAH(ib.AddressVector{
		Port: d.cfg.Port, DLID: r.MLID, SL: r.SL, StaticRate: r.Rate,
		GlobalRoute: true, DGID: r.MGID, SGIDIndex: d.cfg.GIDIndex,
		FlowLabel: r.FlowLabel, HopLimit: r.HopLimit, TClass: r.TClass,
	})
	if err != nil {
		return fmt.Errorf("join %v: address handle: %w", g.mgid, err)
	}
	if g.ah != nil {
		d.retireAH(g.ah)
	}
	g.ah, g.rec, g.status = ah, *r, groupJoined
	g.joinedAt = d.loop.Now()
	g.backoff = d.cfg.JoinBackoff
	g.timer.Stop()
	if err := d.cache.SetPath(g.ref, Path{LID: r.MLID, SL: r.SL, Rate: r.Rate, MTU: r.MTU, AH: ah}); err != nil {
		return fmt.Errorf("join %v: %w", g.mgid, err)
	}
	if !g.bcast {
		d.nd.Stats().Inc(McastJoins)
		d.log.Debug("joined multicast group", "mgid", r.MGID, "mlid", r.MLID, "join_state", r.JoinState)
		if g.full && r.JoinState&ib.JoinFullMember == 0 {
			// Asked to receive while a send-only join was in flight.
			d.startJoin(g)
		}
		d.sendParked(g.ref)
		return nil
	}
	d.nd.Stats().Inc(Joins)
	mtu, _ := IPMTU(r.MTU) // checkGroupRecord saw a valid MTU
	if err := d.nd.SetMTU(mtu); err != nil {
		return fmt.Errorf("join %v: %w", g.mgid, err)
	}
	d.publishGroup()
	d.log.Info("joined broadcast group", "mgid", r.MGID, "mlid", r.MLID, "qkey", r.QKey, "mtu", r.MTU, "ip_mtu", mtu)
	if d.attr.State == ib.PortActive && !d.fatal {
		d.nd.SetLinkUp()
	}
	for _, o := range d.groups {
		if o.rejoin || (o.status == groupIdle && o.full && !o.timer.Pending()) {
			d.startJoin(o)
		}
	}
	return nil
}

// detach takes the QP out of the group's delivery.
func (d *driver) detach(g *group) {
	if !g.attached {
		return
	}
	g.attached = false
	if d.qp == nil {
		return
	}
	if err := d.qp.DetachMcast(g.attMGID, g.attMLID); err != nil {
		d.log.Warn("detach", "mgid", g.attMGID, "mlid", g.attMLID, "err", err)
	}
}

// forget drops what the link knows of g's membership without telling the
// SA: after a port event the SA has forgotten it or will be told anew.
// Parked packets are completed with err, or left to netdev when err is
// nil (Close, which completes its whole queue).
func (d *driver) forget(g *group, err error) {
	g.timer.Stop()
	if g.querying {
		g.query.Cancel()
		g.querying, g.query = false, ib.SAQuery{}
	}
	d.detach(g)
	if g.ah != nil {
		d.retireAH(g.ah)
		g.ah = nil
	}
	_, _ = d.cache.ClearPath(g.ref)
	d.dropParked(g.ref, err)
	g.status, g.plain, g.rejoin = groupIdle, false, false
	g.backoff = d.cfg.JoinBackoff
	if g.bcast {
		d.publishGroup()
	}
}

// leave tells the SA the port leaves g (MCMemberRecord Delete of the join
// states it holds, or asks for), then forgets it. A leave that is lost
// costs the SA a stale member until the port goes down; Link.Leave waits
// for the answers (or the SA client giving up after its retries) so that
// a link taken down for good does not leave one behind. A group whose
// first join is still in flight is left too: forget only stops waiting
// for the answer, and the SA may have made the port a member already, or
// will on the Join it has yet to read; the Delete follows that Join on
// the same path, and an SA that takes them in order (the simulator's
// does, and OpenSM does: smtest's TestLeaveWithJoinInFlight) ends with
// no member.
func (d *driver) leave(g *group, err error) {
	// A failed device sends nothing (and answers nothing): no leave to
	// wait for.
	if (g.status == groupJoined || g.querying) && d.attr.State == ib.PortActive && !d.closed && !d.fatal && d.sa != nil {
		js := g.rec.JoinState
		if g.status != groupJoined {
			rec, _ := d.joinRecord(g)
			js = rec.JoinState
		}
		if js == 0 {
			js = ib.JoinFullMember
		}
		mgid := g.mgid
		rec, mask := ib.MCMemberQuery(mgid, d.self.GID, d.l.PKey(), js)
		done := func(_ ib.MCMemberRecord, err error) { d.leaveDone(mgid, err) }
		if _, serr := d.sa.DeleteMCMemberRecord(rec, mask, done); serr != nil {
			d.log.Warn("leave", "mgid", mgid, "err", serr)
		} else {
			d.leaving++
		}
	}
	d.forget(g, err)
}

// leaveDone takes the SA's answer to a leave (or the client's giving
// up), and runs what Link.Leave waits with once no leave is outstanding.
func (d *driver) leaveDone(mgid ib.GID, err error) {
	if err != nil {
		d.log.Debug("leave not confirmed", "mgid", mgid, "err", err)
	}
	d.leaving--
	if d.leaving > 0 {
		return
	}
	fns := d.onLeft
	d.onLeft = nil
	for _, fn := range fns {
		fn()
	}
}

// publishGroup stores the broadcast group's parameters for Link.Group.
func (d *driver) publishGroup() {
	g := d.bcast
	gi := &GroupInfo{MGID: g.mgid, PKey: d.l.PKey()}
	if g.status == groupJoined {
		r := &g.rec
		*gi = GroupInfo{
			Joined: true, MGID: r.MGID, MLID: r.MLID, QKey: r.QKey, PKey: r.PKey | ib.PKeyFullMember,
			MTU: r.MTU, Rate: r.Rate, SL: r.SL, FlowLabel: r.FlowLabel, TClass: r.TClass,
			HopLimit: r.HopLimit, JoinState: r.JoinState, JoinedAt: g.joinedAt,
		}
	}
	d.group.Store(gi)
}

// errNotJoinedFor names the group a packet could not be sent to, for the
// rare failures outside the data path's prebuilt errors.
func errNotJoinedFor(name string, mgid ib.GID, err error) error {
	return fmt.Errorf("ipoib %s: group %v: %w: %w (%w)", name, mgid, err, ErrNotJoined, netdev.ErrNoPath)
}
