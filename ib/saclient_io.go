package ib

// SA client, I/O half: transmissions, the MAD handler, retry timers and
// completion.
//
// Rule: everything here runs on the client's home loop, called by the
// MADPort's handler, by a retry timer or by the control half in
// saclient.go. Nothing here blocks, and an answer that completes a query
// allocates nothing beyond what the caller's callback does. These paths do
// not assert the loop themselves: the MADPort and aio.Timer contracts
// already put them there, and the check costs a system call per MAD.

import (
	"fmt"

	"github.com/ipoibd/ipoibd/counter"
)

// transmit sends q's MAD to the current SM. A failed send is counted and
// remembered for the final error; the retry timer, armed by the caller
// before transmit, covers it like a lost MAD. The port may answer from
// inside Send, so q is not touched after Send if that finished it.
func (c *SAClient) transmit(q *saQuery) {
	if q.tries == 0 {
		counter.Inc(&c.stats.V.Sent)
	} else {
		counter.Inc(&c.stats.V.Retransmitted)
	}
	q.tries++
	q.busy = 0
	if c.smLID == LIDReserved {
		counter.Inc(&c.stats.V.SendErrors)
		q.sendErr = ErrSANoSM
		return
	}
	dst := MADAddress{LID: c.smLID, SL: c.smSL, QPN: QPNGSI, QKey: QKeyGSI, PKeyIndex: c.pkeyIndex}
	tid := q.tid
	err := c.port.Send(dst, q.buf[:])
	if !q.active || q.tid != tid {
		return
	}
	if err != nil {
		counter.Inc(&c.stats.V.SendErrors)
		q.sendErr = err
		return
	}
	q.sendErr = nil
	q.sentLID = dst.LID
}

// expire runs when q's wait is over: retransmit with a doubled wait, or
// give up after the last try.
func (c *SAClient) expire(q *saQuery) {
	if !q.active {
		return
	}
	if q.tries >= c.cfg.Tries {
		counter.Inc(&c.stats.V.Timeouts)
		elapsed := c.loop.Now().Sub(q.start)
		var err error
		if q.sendErr != nil {
			err = fmt.Errorf("%v: no reply after %d tries (%v): %w; last send failed: %w",
				q.name, q.tries, elapsed, ErrSATimeout, q.sendErr)
		} else {
			err = fmt.Errorf("%v: no reply after %d tries (%v): %w", q.name, q.tries, elapsed, ErrSATimeout)
		}
		c.fail(q, err)
		return
	}
	q.wait = min(2*q.wait, c.cfg.MaxTimeout)
	q.timer.Reset(q.wait)
	c.transmit(q)
}

// handleMAD is the MADPort handler: it matches an incoming MAD to an
// outstanding query and finishes, fails or reschedules the query.
// Anything that does not answer an outstanding query is counted and
// dropped.
func (c *SAClient) handleMAD(src MADAddress, b []byte) {
	if c.closed {
		return
	}
	if len(b) != MADLen || b[0] != MADBaseVersion {
		counter.Inc(&c.stats.V.Malformed)
		return
	}
	if MgmtClass(b[1]) != MgmtClassSubnAdm {
		counter.Inc(&c.stats.V.Unsolicited)
		return
	}
	m := &c.rx
	if err := m.Decode(b); err != nil {
		counter.Inc(&c.stats.V.Malformed)
		return
	}
	if !m.Method.IsResponse() {
		counter.Inc(&c.stats.V.Unsolicited) // a Report or a request aimed at us
		return
	}
	q := c.pending[m.TransactionID]
	if q == nil {
		counter.Inc(&c.stats.V.Unsolicited) // late, duplicate or someone else's
		return
	}
	// The TID is ours, but only the SA's answer to this very request may
	// finish it. A reply to a transmission sent before SetSM still comes
	// from the old SM, hence two LIDs.
	if m.Method != q.name.method.Response() || m.AttributeID != q.name.attr ||
		src.QPN != QPNGSI || src.LID == LIDReserved || (src.LID != q.sentLID && src.LID != c.smLID) {
		counter.Inc(&c.stats.V.Mismatched)
		return
	}
	counter.Inc(&c.stats.V.Replies)
	st := m.Status
	switch {
	case st.Busy():
		// IBA 13.4.7: busy asks for a retry later; wait a full interval
		// from now rather than only what is left of the current one.
		counter.Inc(&c.stats.V.Busy)
		if q.tries >= c.cfg.Tries {
			counter.Inc(&c.stats.V.Timeouts)
			c.fail(q, fmt.Errorf("%v: SA still busy after %d tries (%v): %w (%w)",
				q.name, q.tries, c.loop.Now().Sub(q.start), ErrSATimeout, c.statusErr(q)))
			return
		}
		q.busy = st
		q.timer.Reset(q.wait)
	case st != 0:
		counter.Inc(&c.stats.V.Errors)
		c.fail(q, &saStatusError{name: q.name, mse: *c.statusErr(q)})
	default:
		c.succeed(q)
	}
}

// statusErr describes the status of the MAD in rx.
func (c *SAClient) statusErr(q *saQuery) *MADStatusError {
	m := &c.rx
	return &MADStatusError{Class: m.MgmtClass, Method: m.Method, Attribute: m.AttributeID, Status: m.Status}
}

// retire takes q off the books: no more retransmissions, no more matching.
func (c *SAClient) retire(q *saQuery) {
	delete(c.pending, q.tid)
	q.timer.Stop()
}

// succeed decodes the record of the answer in rx and completes q with it.
// The record is copied out before the callback, which may start queries
// or even receive MADs of its own.
func (c *SAClient) succeed(q *saQuery) {
	onPath, onMC := q.onPath, q.onMC
	c.retire(q)
	c.release(q)
	if onPath != nil {
		var r PathRecord
		_ = r.Decode(c.rx.Data[:]) // 200 bytes always hold one
		onPath(r, nil)
		return
	}
	var r MCMemberRecord
	_ = r.Decode(c.rx.Data[:])
	onMC(r, nil)
}

// fail completes q with err and a zero record.
func (c *SAClient) fail(q *saQuery, err error) {
	onPath, onMC := q.onPath, q.onMC
	c.retire(q)
	c.release(q)
	if onPath != nil {
		onPath(PathRecord{}, err)
		return
	}
	onMC(MCMemberRecord{}, err)
}

// saStatusError is a status answer, named after the query that got it:
// "MCMemberRecord Set MGID ff12:401b:ffff::ffff:ffff: SA status
// ERR_REQ_INVALID (2)". It unwraps to the *MADStatusError, which in turn
// matches the SAStatus, ErrMADRedirect or InvalidFieldCode it carries.
type saStatusError struct {
	name saQueryName
	mse  MADStatusError
}

// Error names the query and the status, spelling an SA class code by its
// IBA name and anything else in the common status bits.
func (e *saStatusError) Error() string {
	st := e.mse.Status
	s := e.name.String() + ": "
	if st&^(madStatusClassMask<<madStatusClassShift) != 0 || st.ClassCode() == 0 {
		s += "MAD status " + st.String()
		if st.ClassCode() == 0 {
			return s
		}
		s += ": "
	}
	return s + st.SAStatus().Error()
}

// Unwrap exposes the MAD status for errors.Is and errors.As.
func (e *saStatusError) Unwrap() error { return &e.mse }
