//go:build linux && cgo && !noverbs

package verbs

// I/O plane of the verbs driver.
//
// Rule: the methods in this file move datagrams and completions. They run
// on the device's home loop, never block (every fd is non-blocking) and,
// in steady state, never allocate: sends are copied into registered slots
// of a slab mapped at QP creation, receives land in another, completions
// are converted from a fixed array in the CQ, and each method makes one
// cgo call per batch, not per work request. Only error returns allocate
// (the error value). Nothing here opens, closes or reconfigures anything;
// that is control.go.

/*
#cgo noescape ipo_poll
#cgo nocallback ipo_poll
#cgo noescape ipo_post_send
#cgo nocallback ipo_post_send
#cgo noescape ipo_post_recv
#cgo nocallback ipo_post_recv
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/ipoibd/ipoibd/ib"
)

// PostSend copies each work request's segments into a free send slot and
// posts the whole batch with one call into libibverbs. It stops at the
// first request it cannot take: ib.ErrQueueFull when every slot is busy,
// ErrInvalidWR for a malformed one; the requests before it are posted. A
// payload larger than the port's active MTU is taken and completes with
// ib.StatusLocalLength without reaching the device (providers differ in
// how they fail such a send, and some move the QP to the error state).
func (q *qp) PostSend(wrs []ib.SendWR) (int, error) {
	if q.gone {
		return 0, fmt.Errorf("verbs: post send on QP %v: %w", q.qpn, ib.ErrClosed)
	}
	k := 0
	taken := len(wrs)
	var stop error
	for i := range wrs {
		wr := &wrs[i]
		a, _ := wr.AH.(*ah)
		state, ahPort := ib.AHForeign, 0
		if a != nil && a.dev == q.dev {
			state, ahPort = ib.AHLive, a.port
			if a.destroyed {
				state = ib.AHDestroyed
			}
		}
		// Whether a group address goes to QPNMulticast is the HCA's to
		// check, as it is for any verbs consumer.
		if err := wr.Validate(state, ahPort, q.port); err != nil {
			stop = fmt.Errorf("verbs: post send %d on QP %v: %w", wr.ID, q.qpn, err)
			taken = i
			break
		}
		n := wr.Len()
		if n > q.mtuBytes || n > sendSlotSize {
			q.scq.addMade(ib.Completion{ID: wr.ID, Kind: ib.WorkSend, Status: ib.StatusLocalLength, QPN: q.qpn})
			continue
		}
		if len(q.free) == 0 {
			stop = fmt.Errorf("verbs: post send %d on QP %v: %d sends outstanding: %w", wr.ID, q.qpn, len(q.slotBusy), ib.ErrQueueFull)
			taken = i
			break
		}
		slot := q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
		q.slotBusy[slot] = true
		q.sendIDs[slot] = wr.ID
		off := int(slot) * sendSlotSize
		buf := q.sendSlab[off : off+sendSlotSize]
		m := 0
		for _, seg := range wr.Data {
			m += copy(buf[m:], seg)
		}
		q.batch[k] = C.struct_ipo_send{
			wr_id:       C.uint64_t(wrID(q.handle, false, slot)),
			addr:        C.uint64_t(slabAddr(q.sendSlab) + uint64(off)),
			ah:          a.ah,
			length:      C.uint32_t(n),
			lkey:        C.uint32_t(q.sendLKey),
			remote_qpn:  C.uint32_t(wr.RemoteQPN),
			remote_qkey: C.uint32_t(wr.RemoteQKey),
		}
		q.batchWR[k] = i
		k++
	}
	if k == 0 {
		return taken, stop
	}
	var posted C.int
	rc := C.ipo_post_send(q.qp, &q.batch[0], C.int(k), &posted)
	if rc == 0 {
		return taken, stop
	}
	// The provider refused batch entry posted and everything after it:
	// give their slots back and report the first as the stopping point.
	for j := int(posted); j < k; j++ {
		_, _, slot := splitWRID(uint64(q.batch[j].wr_id))
		q.releaseSlot(slot)
	}
	first := q.batchWR[int(posted)]
	err := error(syscall.Errno(rc))
	if err == syscall.ENOMEM {
		err = fmt.Errorf("%w (%w)", ib.ErrQueueFull, err)
	}
	return first, fmt.Errorf("verbs: post send %d on QP %v: %w", wrs[first].ID, q.qpn, err)
}

// RepostRecv gives receive buffers back to the QP and posts them with one
// call into libibverbs. Each ID must have been lent out by a receive
// completion; the batch stops at the first that was not.
func (q *qp) RepostRecv(ids ...uint64) error {
	if q.gone {
		return fmt.Errorf("verbs: repost receive on QP %v: %w", q.qpn, ib.ErrClosed)
	}
	k := 0
	var stop error
	for _, id := range ids {
		if id >= uint64(q.recvDepth) || !q.lent[id] {
			stop = fmt.Errorf("verbs: repost receive buffer %d on QP %v: not lent out: %w", id, q.qpn, ErrInvalidWR)
			break
		}
		q.lent[id] = false
		q.repost[k] = C.uint32_t(id)
		k++
	}
	if k == 0 {
		return stop
	}
	var posted C.int
	rc := C.ipo_post_recv(q.qp, C.uint64_t(slabAddr(q.recvSlab)), C.uint32_t(q.recvSize), C.uint32_t(q.recvLKey),
		C.uint64_t(wrID(q.handle, true, 0)), &q.repost[0], C.int(k), &posted)
	q.posted += int(posted)
	if rc != 0 {
		for j := int(posted); j < k; j++ {
			q.lent[q.repost[j]] = true
		}
		return fmt.Errorf("verbs: repost receive buffer %d on QP %v: %w", uint32(q.repost[posted]), q.qpn, syscall.Errno(rc))
	}
	return stop
}

// Poll fills wcs with up to len(wcs) completions, oldest first: those the
// driver made itself, then the device's, fetched pollBatch at a time. A
// receive completion's Buf stays valid until its ID is reposted.
func (c *cq) Poll(wcs []ib.Completion) (int, error) {
	if c.gone {
		return 0, fmt.Errorf("verbs: poll CQ: %w", ib.ErrClosed)
	}
	n := 0
	for n < len(wcs) && c.madeHead < len(c.made) {
		wcs[n] = c.made[c.madeHead]
		c.made[c.madeHead] = ib.Completion{}
		c.madeHead++
		n++
	}
	if c.madeHead == len(c.made) {
		c.made = c.made[:0]
		c.madeHead = 0
	}
	for n < len(wcs) {
		want := min(len(wcs)-n, pollBatch)
		got := int(C.ipo_poll(c.cq, &c.raw[0], C.int(want)))
		if got < 0 {
			return n, fmt.Errorf("verbs: poll CQ on %s: %w", c.dev.name, syscall.Errno(-got))
		}
		for i := 0; i < got; i++ {
			if c.convert(&c.raw[i], &wcs[n]) {
				n++
			}
		}
		if got < want {
			break
		}
	}
	return n, nil
}

// RequestNotify arms a CQ set to ib.ArmOnDemand for its next completion,
// unless an event is already asked for.
func (c *cq) RequestNotify() error {
	if c.gone {
		return fmt.Errorf("verbs: arm CQ: %w", ib.ErrClosed)
	}
	if !c.onDemand || c.armed {
		return nil
	}
	if rc := C.ipo_req_notify_cq(c.cq); rc != 0 {
		return fmt.Errorf("verbs: arm CQ on %s: %w", c.dev.name, rcErr(rc))
	}
	c.armed = true
	return nil
}

// Send writes one MAD to the umad file. For a request it remembers the TID
// so the reply can be given back with the TID the caller chose, and asks
// the kernel to hold the request for madReplyWindowMS so the reply is
// routed to this agent.
func (m *madPort) Send(dst ib.MADAddress, mad []byte) error {
	if m.gone {
		return fmt.Errorf("verbs: MAD send: %w", ib.ErrClosed)
	}
	if len(mad) != ib.MADLen {
		return fmt.Errorf("verbs: MAD send: %d bytes: %w", len(mad), ib.ErrMADLength)
	}
	if err := dst.Validate(); err != nil {
		return fmt.Errorf("verbs: MAD send %w: %w", err, ErrInvalidWR)
	}
	h := umadHeader{
		AgentID:   m.agent,
		QPN:       dst.QPN,
		QKey:      dst.QKey,
		LID:       dst.LID,
		SL:        dst.SL,
		PKeyIndex: uint16(dst.PKeyIndex),
	}
	req := isRequest(mad)
	if req {
		h.TimeoutMS = madReplyWindowMS
	}
	_ = h.Encode(m.wbuf[:]) // wbuf is large enough by construction
	copy(m.wbuf[umadHeaderLen:], mad)
	if err := m.sendOne(int(h.TimeoutMS)); err != nil {
		return fmt.Errorf("verbs: MAD send to %v QP %v: umad_send: %w", dst.LID, dst.QPN, err)
	}
	if req {
		m.tids.remember(madTID(mad))
	}
	return nil
}

// readable is the umad fd's read handler: receive every pending message
// and hand the MADs on. A message too large for rbuf (which an agent
// registered without RMPP should never get) is dropped, so it cannot
// wedge the fd.
func (m *madPort) readable() {
	for !m.gone {
		n, err := m.recvOne()
		switch {
		case errors.Is(err, errOversized):
			slog.Warn("verbs: dropped an oversized MAD", "device", m.name, "port", m.port)
		case err != nil:
			slog.Warn("verbs: reading umad failed", "device", m.name, "port", m.port, "err", err)
			return
		case n == 0:
			return
		default:
			m.received(m.rbuf[:n])
		}
	}
}
