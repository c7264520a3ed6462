package sim

// I/O plane of the simulated devices.
//
// Rule: the methods in this file move datagrams and completions. They run
// on the device's home loop, never block (they take short mutexes shared
// with the fabric loop) and, in steady state, never allocate: sends are
// encoded into pooled frames, receives land in the QP's own buffers, and
// completions sit in a preallocated ring. Nothing here opens, closes or
// reconfigures anything; that is control.go.

import (
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
)

// PostSend builds each work request into a UD packet (LRH, a GRH when the
// address handle asks for one or the DLID is multicast, BTH, DETH,
// payload, ICRC, VCRC) and queues it for the fabric. The send completes
// on the send CQ once the fabric has taken the packet; UD being
// unreliable, success says nothing about delivery. A payload larger than
// the port's active MTU does not leave: the send completes with
// ib.StatusLocalLength (as a verbs HCA reports it) and counts as
// DropSendLength. Invalid requests stop the batch with an error wrapping
// ErrInvalidWR; a full send queue stops it with ib.ErrQueueFull.
func (q *qp) PostSend(wrs []ib.SendWR) (int, error) {
	for i := range wrs {
		if err := q.postOne(&wrs[i]); err != nil {
			return i, err
		}
	}
	return len(wrs), nil
}

func (q *qp) postOne(wr *ib.SendWR) error {
	// A handle of any device of this host will do: they share the ports.
	a, _ := wr.AH.(*ah)
	state, ahPort := ib.AHForeign, 0
	if a != nil && a.dev.h == q.h {
		state, ahPort = ib.AHLive, a.av.Port
		if a.destroyed.Load() {
			state = ib.AHDestroyed
		}
	}
	if err := wr.Validate(state, ahPort, q.port.num); err != nil {
		return fmt.Errorf("sim: post send %d on QP %v: %w", wr.ID, q.qpn, err)
	}
	// IBA 9.8.1: a packet to a multicast DLID carries DestQP 0xFFFFFF.
	// The other way round, that QPN to a unicast DLID, goes out, and the
	// receiving port drops it as malformed.
	if a.av.DLID.IsMulticast() && wr.RemoteQPN != ib.QPNMulticast {
		return fmt.Errorf("sim: post send %d on QP %v: multicast DLID %v needs QPN %v, got %v: %w",
			wr.ID, q.qpn, a.av.DLID, ib.QPNMulticast, wr.RemoteQPN, ErrInvalidWR)
	}
	f := q.h.f
	if f.closed.Load() {
		return fmt.Errorf("sim: post send %d on QP %v: fabric %q: %w", wr.ID, q.qpn, f.name, ib.ErrClosed)
	}
	if q.dev.dead.Load() {
		return fmt.Errorf("sim: post send %d on QP %v: %w", wr.ID, q.qpn, ib.ErrDeviceFatal)
	}
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return fmt.Errorf("sim: post send %d on QP %v: %w", wr.ID, q.qpn, ib.ErrClosed)
	case q.outstanding >= q.sendDepth:
		q.mu.Unlock()
		return fmt.Errorf("sim: post send %d on QP %v: %d sends outstanding: %w", wr.ID, q.qpn, q.outstanding, ib.ErrQueueFull)
	}
	q.outstanding++
	q.mu.Unlock()

	av := &a.av
	p := q.port
	h := q.h
	h.mu.RLock()
	lid, mtu := p.lid, p.activeMTU
	var pkey ib.PKey
	if q.pkeyIndex < len(p.pkeys) {
		pkey = p.pkeys[q.pkeyIndex]
	}
	var sgid ib.GID
	if av.SGIDIndex < len(p.gids) {
		sgid = p.gids[av.SGIDIndex]
	}
	h.mu.RUnlock()

	if wr.Len() > mtu.Bytes() {
		f.drop(DropSendLength, p, h)
		q.sendDone(wr.ID, ib.StatusLocalLength)
		return nil
	}
	q.payload = q.payload[:0]
	for _, d := range wr.Data {
		q.payload = append(q.payload, d...)
	}
	qkey := wr.RemoteQKey
	if qkey&ib.QKeyControlled != 0 {
		// IBA 10.2.4: a UD send may not use a controlled Q_Key it was
		// handed in a work request; the QP's own Q_Key goes out instead.
		qkey = ib.QKey(q.qkey.Load())
	}
	pkt := &q.pkt
	*pkt = ib.Packet{Payload: q.payload}
	pkt.LRH.SL = av.SL
	pkt.LRH.DLID = av.DLID
	pkt.LRH.SLID = lid | ib.LID(av.SrcPathBits)
	if av.GlobalRoute || av.DLID.IsMulticast() {
		pkt.HasGRH = true
		pkt.GRH.TClass = av.TClass
		pkt.GRH.FlowLabel = av.FlowLabel
		pkt.GRH.HopLmt = av.HopLimit
		pkt.GRH.SGID = sgid
		pkt.GRH.DGID = av.DGID
	}
	pkt.BTH.OpCode = ib.OpUDSendOnly
	// HCAs set MigReq on UD sends (the IPoIB packets in the testdata
	// capture carry it); it means nothing to a UD receiver.
	pkt.BTH.M = true
	pkt.BTH.PKey = pkey
	pkt.BTH.DestQP = wr.RemoteQPN
	pkt.BTH.PSN = q.psn & 0xFFFFFF
	q.psn++
	pkt.DETH.QKey = qkey
	pkt.DETH.SrcQP = q.qpn
	if err := f.dp.emit(p, pkt, q, wr.ID); err != nil {
		q.mu.Lock()
		q.outstanding--
		q.mu.Unlock()
		return fmt.Errorf("sim: post send %d on QP %v: %w: %w", wr.ID, q.qpn, ErrInvalidWR, err)
	}
	return nil
}

// RepostRecv gives receive buffers back to the QP. Each ID must be lent
// out by a receive completion; reposting one twice fails.
func (q *qp) RepostRecv(ids ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("sim: repost receive on QP %v: %w", q.qpn, ib.ErrClosed)
	}
	if err := q.recv.RepostAll(ids); err != nil {
		return fmt.Errorf("sim: repost receive on QP %v: %w: %w", q.qpn, err, ErrInvalidWR)
	}
	return nil
}

// Poll copies up to len(wcs) completions out of the queue, oldest first.
// A receive completion's Buf stays valid until its ID is reposted.
func (c *cq) Poll(wcs []ib.Completion) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, fmt.Errorf("sim: poll CQ: %w", ib.ErrClosed)
	}
	return c.ring.Poll(wcs), nil
}

// RequestNotify arms a CQ set to ib.ArmOnDemand: the next completion
// runs the handler once.
func (c *cq) RequestNotify() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("sim: arm CQ: %w", ib.ErrClosed)
	}
	c.armed = c.onDemand
	return nil
}

// Send transmits one MAD from QP1 of the port: LRH, BTH with the P_Key at
// dst.PKeyIndex, DETH with dst.QKey and source QP 1, the 256-byte MAD,
// ICRC and VCRC.
func (m *madPort) Send(dst ib.MADAddress, mad []byte) error {
	if m.gone {
		return fmt.Errorf("sim: MAD send: %w", ib.ErrClosed)
	}
	if len(mad) != ib.MADLen {
		return fmt.Errorf("sim: MAD send: %d bytes: %w", len(mad), ib.ErrMADLength)
	}
	if err := dst.Validate(); err != nil {
		return fmt.Errorf("sim: MAD send %w: %w", err, ErrInvalidWR)
	}
	f := m.dev.h.f
	if f.closed.Load() {
		return fmt.Errorf("sim: MAD send: fabric %q: %w", f.name, ib.ErrClosed)
	}
	if m.dev.dead.Load() {
		return fmt.Errorf("sim: MAD send: %w", ib.ErrDeviceFatal)
	}
	p := m.port
	h := m.dev.h
	h.mu.RLock()
	lid := p.lid
	ok := dst.PKeyIndex >= 0 && dst.PKeyIndex < len(p.pkeys)
	var pkey ib.PKey
	if ok {
		pkey = p.pkeys[dst.PKeyIndex]
	}
	h.mu.RUnlock()
	if !ok {
		return fmt.Errorf("sim: MAD send to %v: P_Key index %d out of range: %w", dst.LID, dst.PKeyIndex, ErrInvalidWR)
	}
	pkt := &m.pkt
	*pkt = ib.Packet{Payload: mad}
	pkt.LRH.SL = dst.SL
	pkt.LRH.DLID = dst.LID
	pkt.LRH.SLID = lid
	pkt.BTH.OpCode = ib.OpUDSendOnly
	pkt.BTH.PKey = pkey
	pkt.BTH.DestQP = dst.QPN
	pkt.BTH.PSN = m.psn & 0xFFFFFF
	m.psn++
	pkt.DETH.QKey = dst.QKey
	pkt.DETH.SrcQP = ib.QPNGSI
	if err := f.dp.emit(p, pkt, nil, 0); err != nil {
		return fmt.Errorf("sim: MAD send to %v: %w", dst.LID, err)
	}
	return nil
}
