package sim

// The objects a simulated host hands out through the ib driver model:
// devices, completion queues, UD queue pairs, address handles and MAD
// ports. Their control methods are in control.go, their I/O methods in
// io.go. Fields are sorted by who may touch them: "loop only" fields belong
// to the device's home loop; fields behind a mutex are shared with the
// fabric loop, which delivers completions, receives and events.

import (
	"sync"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// ErrInvalidWR is ib.ErrInvalidWR under the driver's name: a work request
// the simulator cannot carry out as given (what ib.SendWR.Validate
// refuses, a multicast DLID to a unicast QPN, a frame it cannot encode, a
// receive buffer reposted twice).
var ErrInvalidWR = ib.ErrInvalidWR

// Limits on what a device creates, so a bad argument fails instead of
// exhausting memory.
const (
	// MaxQueueDepth bounds CQ depth and QP send and receive depths.
	MaxQueueDepth = 1 << 16
	// MaxRecvBufSize bounds one receive buffer.
	MaxRecvBufSize = 1 << 20
	// maxRecvBytes bounds the receive buffers of one QP together, which
	// the two bounds above would let reach 64 GiB.
	maxRecvBytes = 1 << 30
	// madRingLen is how many received MADs a MAD port holds before its
	// handler has run; more are dropped as DropNoRecvBuffer.
	madRingLen = 64
	// firstQPN is the first QPN a host hands out; 0 and 1 are the
	// management QPs, and real HCAs start well above them too.
	firstQPN ib.QPN = 0x400
)

// device is an open simulated host.
type device struct {
	h    *Host
	loop *aio.Context
	name string

	// Loop only.
	closed  bool
	handler func(ib.Event)
	cqs     []*cq
	qps     []*qp
	mads    []*madPort

	events *aio.Mailbox[ib.Event] // port and device events, from any goroutine

	// dead is set by Host.FailDevices: the device has failed as a whole
	// and only Close still works on it. Any goroutine.
	dead atomic.Bool
}

// runEvents hands queued events to the handler. Device loop.
func (d *device) runEvents(evs []ib.Event) {
	for _, ev := range evs {
		if d.closed || d.handler == nil {
			return
		}
		d.handler(ev)
	}
}

// raise reports an event on one of the host's ports to every device open
// on the host. Fabric loop.
func (h *Host) raise(num int, t ib.EventType) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, d := range h.devices {
		d.events.Post(ib.Event{Type: t, Port: num})
	}
}

// cq is a completion queue: a ring the fabric loop fills and the device
// loop drains, and a bottom half on the device loop that runs the handler.
type cq struct {
	dev  *device
	bh   *aio.BH
	loop *aio.Context

	// Loop only.
	handler func()
	users   int
	gone    bool

	mu     sync.Mutex
	ring   ib.CompletionRing
	closed bool
	// onDemand: the handler runs only after RequestNotify armed the CQ
	// (ib.ArmOnDemand), once per arming. Under mu: completions are pushed
	// from the fabric's loop, which need not be the device's.
	onDemand, armed bool
}

// push appends a completion and wakes the handler; false when the CQ is
// full. A closed CQ swallows completions: nobody can poll them, and that is
// not an overflow. Any goroutine.
func (c *cq) push(wc *ib.Completion) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return true
	}
	if !c.ring.Push(wc) {
		c.mu.Unlock()
		return false
	}
	wake := !c.onDemand || c.armed
	c.armed = false
	c.mu.Unlock()
	if wake {
		c.bh.Schedule()
	}
	return true
}

func (c *cq) run() {
	if c.handler != nil && !c.gone {
		c.handler()
	}
}

// qp is a UD queue pair.
type qp struct {
	dev       *device
	h         *Host
	port      *port
	qpn       ib.QPN
	pkeyIndex int
	sendDepth int
	sendCQ    *cq
	recvCQ    *cq
	qkey      atomic.Uint32

	// Loop only: send scratch.
	pkt     ib.Packet
	payload []byte
	psn     uint32
	gone    bool

	// Guarded by h.mu: the multicast groups the QP is attached to.
	groups []mcAttach

	mu          sync.Mutex
	closed      bool
	outstanding int
	bufSize     int
	slab        []byte
	recv        ib.RecvQueue
}

// mcAttach is one multicast attachment of a QP.
type mcAttach struct {
	mgid ib.GID
	mlid ib.LID
}

func (q *qp) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// attachedTo reports whether the QP is attached to (mgid, mlid). The
// caller holds h.mu.
func (q *qp) attachedTo(mgid ib.GID, mlid ib.LID) bool {
	for _, a := range q.groups {
		if a.mgid == mgid && a.mlid == mlid {
			return true
		}
	}
	return false
}

// sendDone completes a send on the send CQ. Any goroutine.
func (q *qp) sendDone(id uint64, st ib.Status) {
	q.mu.Lock()
	q.outstanding--
	q.mu.Unlock()
	wc := ib.Completion{ID: id, Kind: ib.WorkSend, Status: st, QPN: q.qpn}
	if !q.sendCQ.push(&wc) {
		q.h.f.drop(DropCQOverflow, q.port, q.h)
	}
}

// deliver lands a packet that passed every check in the next posted
// receive buffer and completes it. It reports a drop reason when the
// packet is lost (no buffer, CQ full) or the buffer completes in error
// (too small). Fabric loop, with h.mu held for reading.
func (q *qp) deliver(pkt *ib.Packet) (DropReason, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.dev.dead.Load() {
		return DropNoQP, true
	}
	id, ok := q.recv.Next()
	if !ok {
		return DropNoRecvBuffer, true
	}
	off := int(id) * q.bufSize
	buf := q.slab[off : off+q.bufSize : off+q.bufSize]
	wc := ib.Completion{ID: uint64(id), Kind: ib.WorkRecv, QPN: q.qpn, Buf: buf}
	need := ib.GRHSize + len(pkt.Payload)
	reason, dropped := DropReason(0), false
	if need > len(buf) {
		wc.Status = ib.StatusLocalLength
		reason, dropped = DropRecvLength, true
	} else {
		if pkt.HasGRH {
			// The decoded GRH re-encodes to the bytes on the wire.
			_ = pkt.GRH.Encode(buf)
		} else {
			clear(buf[:ib.GRHSize])
		}
		copy(buf[ib.GRHSize:], pkt.Payload)
		wc.Status = ib.StatusSuccess
		wc.Len = need
		wc.HasGRH = pkt.HasGRH
		wc.SrcQPN = pkt.DETH.SrcQP
		wc.SLID = pkt.LRH.SLID
		wc.SL = pkt.LRH.SL
		wc.PKeyIndex = q.pkeyIndex
	}
	if !q.recvCQ.push(&wc) {
		return DropCQOverflow, true
	}
	q.recv.Lend()
	return reason, dropped
}

// ah is an address handle.
type ah struct {
	dev       *device
	av        ib.AddressVector
	destroyed atomic.Bool
}

// madPort is QP1 of a host port, as the SA client sees it.
type madPort struct {
	dev  *device
	port *port
	bh   *aio.BH

	// Loop only.
	handler func(ib.MADAddress, []byte)
	pkt     ib.Packet
	psn     uint32
	out     [ib.MADLen]byte
	gone    bool

	mu     sync.Mutex
	ring   [madRingLen]madMsg
	head   int
	n      int
	closed bool
}

// madMsg is one received MAD waiting for the handler.
type madMsg struct {
	src  ib.MADAddress
	data [ib.MADLen]byte
}

// push queues a received MAD; false when the ring is full or the port
// closed. Fabric loop.
func (m *madPort) push(src ib.MADAddress, data []byte) bool {
	m.mu.Lock()
	if m.closed || m.n == len(m.ring) || m.dev.dead.Load() {
		m.mu.Unlock()
		return false
	}
	i := (m.head + m.n) % len(m.ring)
	m.ring[i].src = src
	copy(m.ring[i].data[:], data)
	m.n++
	m.mu.Unlock()
	m.bh.Schedule()
	return true
}

// run hands queued MADs to the handler one by one. Device loop.
func (m *madPort) run() {
	for !m.gone {
		m.mu.Lock()
		if m.n == 0 {
			m.mu.Unlock()
			return
		}
		msg := &m.ring[m.head]
		src := msg.src
		m.out = msg.data
		m.head = (m.head + 1) % len(m.ring)
		m.n--
		m.mu.Unlock()
		if m.handler != nil {
			m.handler(src, m.out[:])
		}
	}
}
