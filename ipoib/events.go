// Port events and the flushes they call for.
//
// Control plane: the event handler and the flush bottom half run on the
// device's loop. Events are coalesced: a burst (an SM restart raises an SM
// change and a client reregister together) schedules one flush at the
// heaviest level asked for.

package ipoib

import (
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// flushLevel says how much a port event makes stale. The three levels are
// the ones Linux's IPoIB uses; what each does here is in flush.
type flushLevel uint8

const (
	flushNone flushLevel = iota
	// flushLight: the subnet's management changed but the port did not
	// (new SM, client reregister). Paths are marked stale and refreshed
	// on next use, groups are joined again; traffic keeps flowing.
	flushLight
	// flushNormal: the port itself changed (down/up, new LID, new GID).
	// Light, plus every group and path is forgotten and the link is down
	// until the broadcast group is joined again.
	flushNormal
	// flushHeavy: the P_Key table changed. Normal, plus the P_Key index
	// is looked up again and the QP re-created if it moved.
	flushHeavy
)

// String names the level for logs.
func (l flushLevel) String() string {
	switch l {
	case flushLight:
		return "light"
	case flushNormal:
		return "normal"
	case flushHeavy:
		return "heavy"
	}
	return "none"
}

// levelOf maps a port event to its flush. A GID change is normal rather
// than light because the interface's address contains the GID.
func levelOf(t ib.EventType) flushLevel {
	switch t {
	case ib.EventSMChange, ib.EventClientReregister:
		return flushLight
	case ib.EventPortActive, ib.EventPortDown, ib.EventLIDChange, ib.EventGIDChange:
		return flushNormal
	case ib.EventPKeyChange:
		return flushHeavy
	}
	return flushNone
}

// onEvent is the device's event handler.
func (d *driver) onEvent(ev ib.Event) {
	if d.closed || d.fatal {
		return
	}
	if ev.Type == ib.EventDeviceFatal {
		// Nothing made from the device works any more, and nothing
		// that happens to it later can bring the link back: its
		// owner must close it and open the device again, which the
		// link's reason says.
		d.fatal = true
		d.log.Error("device failed", "device", d.dev.Name(), "event", ev.Type)
		d.nd.SetLinkDown(fmt.Errorf("ipoib %s: device %s failed: %w (%w)", d.cfg.Name, d.dev.Name(), ib.ErrDeviceFatal, netdev.ErrLinkDown))
		return
	}
	if ev.Port != d.cfg.Port {
		return
	}
	lvl := levelOf(ev.Type)
	d.log.Info("port event", "event", ev.Type, "flush", lvl)
	if ev.Type == ib.EventPortDown && d.opened {
		d.nd.SetLinkDown(fmt.Errorf("ipoib %s: port %d went down: %w (%w)", d.cfg.Name, d.cfg.Port, ErrPortNotActive, netdev.ErrLinkDown))
	}
	if lvl > d.flushLevel {
		d.flushLevel = lvl
		d.flushBH.Schedule()
	}
}

// runFlush is the flush bottom half.
func (d *driver) runFlush() {
	lvl := d.flushLevel
	d.flushLevel = flushNone
	if lvl != flushNone && !d.closed {
		d.flush(lvl)
	}
}

// flush brings the link up to date with the port after an event.
func (d *driver) flush(lvl flushLevel) {
	attr, err := d.dev.QueryPort(d.cfg.Port)
	if err != nil {
		d.log.Warn("flush: query port", "err", err)
		return
	}
	d.attr = attr
	if d.sa != nil {
		if err := d.sa.UpdatePort(attr); err != nil {
			d.log.Warn("flush: update SA client", "err", err)
		}
	}
	switch lvl {
	case flushLight:
		d.nd.Stats().Inc(FlushLight)
	case flushNormal:
		d.nd.Stats().Inc(FlushNormal)
	case flushHeavy:
		d.nd.Stats().Inc(FlushHeavy)
	}
	if !d.opened {
		// Nothing is joined or resolved; only the QP and the address may
		// need to follow the port.
		if lvl == flushHeavy {
			if err := d.checkPKey(); err != nil {
				d.log.Warn("flush: P_Key", "err", err)
			}
		}
		if lvl >= flushNormal {
			d.updateSelf()
		}
		return
	}
	if lvl == flushLight {
		d.invalidatePaths()
		for _, g := range d.groups {
			g.rejoin = true
		}
		if attr.State == ib.PortActive {
			// The broadcast group first: the others copy its parameters,
			// and applyJoin starts them when it is back.
			if d.bcast.status == groupJoined {
				d.bcast.rejoin = true
			}
			d.startJoin(d.bcast)
		}
		return
	}
	d.nd.SetLinkDown(fmt.Errorf("ipoib %s: %s flush after a port event: %w", d.cfg.Name, lvl, netdev.ErrLinkDown))
	for _, g := range d.groups {
		if g.full {
			d.forget(g, d.errLinkDown)
		} else {
			d.deleteGroup(g, d.errLinkDown)
		}
	}
	d.forget(d.bcast, d.errLinkDown)
	d.flushPaths(d.errLinkDown)
	if lvl == flushHeavy {
		if err := d.checkPKey(); err != nil {
			d.log.Warn("flush: P_Key", "err", err)
			d.nd.SetLinkDown(err)
			return
		}
	}
	d.updateSelf()
	if attr.State != ib.PortActive {
		d.nd.SetLinkDown(fmt.Errorf("ipoib %s: port %d is %v: %w (%w)", d.cfg.Name, d.cfg.Port, attr.State, ErrPortNotActive, netdev.ErrLinkDown))
		return
	}
	d.startJoin(d.bcast)
}

// checkPKey finds the link's P_Key in the port's table again and
// re-creates the QP if its index moved: a UD QP is bound to an index, not
// a key (IBA 10.9.3), so a table rewrite could otherwise put it in another
// partition.
func (d *driver) checkPKey() error {
	idx, err := d.attr.PKeyIndex(d.cfg.PKey)
	if err != nil {
		return fmt.Errorf("ipoib %s: %w: %w (%w)", d.cfg.Name, ErrNoPKey, err, netdev.ErrLinkDown)
	}
	if idx == d.pkeyIndex && d.qp != nil {
		return nil
	}
	d.log.Info("P_Key moved in the table; re-creating the QP", "pkey", d.cfg.PKey, "from", d.pkeyIndex, "to", idx)
	d.writeOffSends(d.errLinkDown)
	if d.qp != nil {
		if err := d.qp.Close(); err != nil {
			d.log.Warn("close old QP", "err", err)
		}
		d.qp = nil
	}
	qp, err := d.createQP(idx)
	if err != nil {
		return err
	}
	d.qp, d.pkeyIndex = qp, idx
	return nil
}

// updateSelf follows the interface's address to the current QPN and port
// GID: the new address is pinned and becomes the netdev's hardware
// address.
func (d *driver) updateSelf() {
	if d.qp == nil || d.cfg.GIDIndex >= len(d.attr.GIDs) {
		return
	}
	self := Addr{QPN: d.qp.QPN(), GID: d.attr.GIDs[d.cfg.GIDIndex]}
	if self == d.self {
		return
	}
	p, err := d.cache.EnterAddr(self)
	if err == nil {
		err = d.cache.Pin(p.Ref())
	}
	if err != nil {
		d.log.Warn("new interface address", "addr", self, "err", err)
		return
	}
	_ = d.cache.Unpin(d.selfRef)
	d.self, d.selfRef = self, p.Ref()
	var hw [AddrLen]byte
	_ = self.Encode(hw[:]) // a QPN from the QP fits 24 bits
	if err := d.nd.SetHWAddr(hw[:]); err != nil {
		d.log.Warn("new interface address", "addr", self, "err", err)
	}
	d.log.Info("interface address changed", "addr", self)
}

// createQP makes the link's UD QP on P_Key index idx, with the Q_Key the
// link uses now.
func (d *driver) createQP(idx int) (ib.QueuePair, error) {
	qp, err := d.dev.CreateUDQP(ib.QPConfig{
		Port: d.cfg.Port, PKeyIndex: idx, QKey: d.qkey,
		SendCQ: d.scq, RecvCQ: d.cq,
		SendDepth: d.cfg.SendDepth, RecvDepth: d.cfg.RecvDepth, RecvBufSize: recvBufSize,
	})
	if err != nil {
		return nil, fmt.Errorf("ipoib %s: create UD QP: %w", d.cfg.Name, err)
	}
	return qp, nil
}
