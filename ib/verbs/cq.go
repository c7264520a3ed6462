//go:build linux && cgo && !noverbs

package verbs

// Completion queues: a libibverbs CQ with its own completion channel,
// whose fd the device loop watches. Control methods are in control.go,
// Poll in io.go.

/*
#include "shim.h"
*/
import "C"

import (
	"log/slog"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// pollBatch is how many completions one cgo call fetches at most: enough
// to amortise the call, small enough to live in a fixed array per CQ.
const pollBatch = 64

// cq is a completion queue. Loop only.
type cq struct {
	dev   *device
	cq    *C.struct_ibv_cq
	ch    *C.struct_ibv_comp_channel
	fd    int
	depth int

	handler func()
	// onDemand: armed only by RequestNotify (ib.ArmOnDemand); armed says
	// an event has been asked for and not yet taken, so asking again
	// would be a wasted system call on providers whose arming is one
	// (rxe's is).
	onDemand, armed bool
	// bh runs the handler when completions exist that no channel event
	// announces: ones the driver makes itself (flushes when a QP closes,
	// sends refused for length) and ones already queued when a handler is
	// installed.
	bh *aio.BH
	// rearmBH consumes the channel's event and re-arms the CQ after the
	// handler's run (see channelReady); rearming says it is scheduled.
	rearmBH  *aio.BH
	rearming bool
	// made holds those driver-made completions, oldest first from
	// madeHead; Poll returns them before the hardware's.
	made     []ib.Completion
	madeHead int
	// raw receives each batch from the C helper.
	raw   [pollBatch]C.struct_ipo_wc
	users int
	gone  bool
}

// channelReady is the completion channel's read handler. It runs the
// handler first, so the completion that raised the event reaches the
// stack before anything else, and leaves consuming the event and
// re-arming (one cgo call, two system calls on soft-RoCE) to a bottom
// half scheduled after it: bottom halves run in the order they were
// scheduled, so an answer the stack queued while the handler ran (its
// transmit bottom half) is posted before the re-arm, and the re-arm's
// system calls leave the answer's path (under emulation each costs tens
// to hundreds of microseconds). Until the bottom half has run the event
// is still unread and the fd readable; the loop's passes in between find
// the bottom half pending and leave the fd alone.
//
// A CQ armed on demand takes its event and runs the handler, which arms
// again if it still waits for something.
func (c *cq) channelReady() {
	if c.gone || c.rearming {
		return
	}
	if c.onDemand {
		if C.ipo_cq_take_event(c.ch, c.cq) > 0 {
			c.armed = false
		}
		c.run()
		return
	}
	c.run()
	if c.gone {
		return
	}
	c.rearming = true
	c.rearmBH.Schedule()
}

// rearm consumes the event, re-arms notification and runs the handler
// once more: a completion that landed after the handler's last poll but
// before the re-arm raised no event, and this run finds it. One that
// lands after the re-arm raises a fresh event.
func (c *cq) rearm() {
	c.rearming = false
	if c.gone {
		return
	}
	if rc := C.ipo_cq_rearm(c.ch, c.cq); rc < 0 {
		slog.Warn("verbs: re-arming CQ notification failed", "device", c.dev.name, "errno", -int(rc))
	}
	c.run()
}

func (c *cq) run() {
	if c.handler != nil && !c.gone {
		c.handler()
	}
}

// addMade queues a driver-made completion and wakes the handler.
func (c *cq) addMade(wc ib.Completion) {
	if c.gone {
		return
	}
	c.made = append(c.made, wc)
	c.bh.Schedule()
}

// ibv_wc_status values used by statusOf (libibverbs' enum ibv_wc_status,
// after IBA 11.6.2's completion return status).
const (
	ibvWCSuccess    = 0
	ibvWCLocLenErr  = 1
	ibvWCLocProtErr = 4
	ibvWCWRFlushErr = 5
	ibvWCFlagGRH    = 1 // IBV_WC_GRH: the GRH area holds a real GRH
)

// statusOf maps an ibv_wc_status to ib.Status.
func statusOf(s uint32) ib.Status {
	switch s {
	case ibvWCSuccess:
		return ib.StatusSuccess
	case ibvWCLocLenErr:
		return ib.StatusLocalLength
	case ibvWCLocProtErr:
		return ib.StatusLocalProtection
	case ibvWCWRFlushErr:
		return ib.StatusFlushed
	}
	return ib.StatusGeneral
}

// convert turns one raw completion into out. It returns false for a
// completion of a QP that has been closed (the driver already reported
// its work as flushed) or one whose ID it does not recognise.
func (c *cq) convert(w *C.struct_ipo_wc, out *ib.Completion) bool {
	handle, recv, idx := splitWRID(uint64(w.wr_id))
	q := c.dev.qps[handle]
	if q == nil {
		return false
	}
	st := statusOf(uint32(w.status))
	if !recv {
		if int(idx) >= len(q.sendIDs) || !q.slotBusy[idx] {
			return false
		}
		id := q.sendIDs[idx]
		q.releaseSlot(idx)
		*out = ib.Completion{ID: id, Kind: ib.WorkSend, Status: st, QPN: q.qpn}
		return true
	}
	if int(idx) >= q.recvDepth || q.lent[idx] {
		return false
	}
	q.lent[idx] = true
	q.posted--
	*out = ib.Completion{ID: uint64(idx), Kind: ib.WorkRecv, Status: st, QPN: q.qpn}
	if st != ib.StatusSuccess {
		return true
	}
	out.Buf = q.recvBuf(idx)
	out.Len = int(w.byte_len)
	out.HasGRH = uint32(w.wc_flags)&ibvWCFlagGRH != 0
	out.SrcQPN = ib.QPN(w.src_qp) & ib.QPNMask
	out.SLID = ib.LID(w.slid)
	out.SL = ib.SL(w.sl)
	out.PKeyIndex = int(w.pkey_index)
	out.DLIDPathBits = uint8(w.dlid_path_bits)
	return true
}
