//go:build linux

package udp

// I/O plane of the udp driver.
//
// Rule: the functions in this file move datagrams and completions. They
// run on the device's home loop, never block (every socket call is
// non-blocking) and, in steady state, never allocate: sends are encoded
// into the device's send slots and leave in sendmmsg batches, receives
// arrive in recvmmsg batches into the device's buffers and are copied into
// the QP's posted buffers, and completions sit in preallocated rings.
// Nothing here opens, closes or reconfigures anything; that is control.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// ErrInvalidWR is ib.ErrInvalidWR under the driver's name: a work request
// the driver cannot carry out as given (what ib.SendWR.Validate refuses, a
// group address with the wrong QPN, a datagram it cannot encode, a receive
// buffer reposted twice).
var ErrInvalidWR = ib.ErrInvalidWR

// PostSend encodes each work request as a RoCEv2 UD SEND (BTH, DETH,
// payload, pad, ICRC over the IP and UDP headers the kernel will write)
// and hands the batch to the kernel with sendmmsg. A send completes once
// the kernel has taken the datagram; UD being unreliable, that says
// nothing about delivery. A payload larger than the port's MTU completes
// with ib.StatusLocalLength. A multicast send is also delivered to the
// device's other QPs attached to the group, as an HCA loops it back.
func (q *qp) PostSend(wrs []ib.SendWR) (int, error) {
	d := q.dev
	posted := 0
	var err error
	for i := range wrs {
		if err = q.postOne(&wrs[i]); err != nil {
			break
		}
		posted++
	}
	d.flush(d.txq4)
	if d.txq6 != nil {
		d.flush(d.txq6)
	}
	return posted, err
}

func (q *qp) postOne(wr *ib.SendWR) error {
	d := q.dev
	if q.closed || d.closed {
		return fmt.Errorf("udp: post send %d on QP %v: %w", wr.ID, q.qpn, ib.ErrClosed)
	}
	a, _ := wr.AH.(*ah)
	state, ahPort := ib.AHForeign, 0
	if a != nil && a.dev == d {
		state, ahPort = ib.AHLive, a.av.Port
		if a.destroyed {
			state = ib.AHDestroyed
		}
	}
	if err := wr.Validate(state, ahPort, d.attr.Num); err != nil {
		return fmt.Errorf("udp: post send %d on QP %v: %w", wr.ID, q.qpn, err)
	}
	switch {
	// A multicast DGID goes to QPNMulticast and a unicast one never does:
	// a receiving device chooses group delivery by that QPN (dispatch),
	// so a mismatch either way would be dropped or reach the wrong QP.
	case a.mcast != (wr.RemoteQPN == ib.QPNMulticast):
		return fmt.Errorf("udp: post send %d on QP %v: DGID %v with QPN %v: multicast goes to QPN %v: %w",
			wr.ID, q.qpn, a.av.DGID, wr.RemoteQPN, ib.QPNMulticast, ErrInvalidWR)
	case q.outstanding >= q.sendDepth || len(d.txFree) == 0:
		return fmt.Errorf("udp: post send %d on QP %v: %d sends outstanding: %w", wr.ID, q.qpn, q.outstanding, ib.ErrQueueFull)
	}
	q.outstanding++
	if wr.Len() > d.attr.ActiveMTU.Bytes() {
		q.sendDone(wr.ID, ib.StatusLocalLength)
		return nil
	}
	qkey := wr.RemoteQKey
	if qkey&ib.QKeyControlled != 0 {
		// IBA 10.2.4: a UD send may not use a controlled Q_Key handed in
		// a work request; the QP's own goes out instead.
		qkey = q.qkey
	}
	bth := ib.BTH{OpCode: ib.OpUDSendOnly, M: true, PKey: q.pkey, DestQP: wr.RemoteQPN, PSN: q.psn & 0xFFFFFF}
	q.psn++
	deth := ib.DETH{QKey: qkey, SrcQP: q.qpn}
	slot := d.txFree[len(d.txFree)-1]
	out, err := encodeDatagram(slot, &a.hdr, &bth, &deth, wr.Data)
	if err != nil {
		q.outstanding--
		return fmt.Errorf("udp: post send %d on QP %v: %w: %w", wr.ID, q.qpn, ErrInvalidWR, err)
	}
	d.txFree = d.txFree[:len(d.txFree)-1]
	if a.mcast {
		d.loopback(q, slot[maxIPHeader-a.hdr.ipHeaderLen():maxIPHeader+ib.UDPHeaderLen+len(out)])
	}
	t := d.txq4
	if a.v6 {
		t = d.txq6
	}
	name := unsafe.Pointer(&a.sa4)
	if a.v6 {
		name = unsafe.Pointer(&a.sa6)
	}
	// The message header is filled at flush time, from the item.
	t.items = append(t.items, txItem{q: q, id: wr.ID, slot: slot[:maxIPHeader+ib.UDPHeaderLen+len(out)], name: name})
	return nil
}

// sendDone completes a send.
func (q *qp) sendDone(id uint64, st ib.Status) {
	q.outstanding--
	if q.closed {
		return
	}
	wc := ib.Completion{ID: id, Kind: ib.WorkSend, Status: st, QPN: q.qpn}
	if !q.sendCQ.push(&wc) {
		counter.Inc(&q.dev.ctr.V.RxNoBuffer)
	}
}

// flush hands t's queued datagrams to the kernel, txBatch at a time, and
// completes the ones it took. When the socket is full it waits for it to
// drain (a write handler on the loop); a datagram the kernel refuses (no
// route, too long for the path) completes in error and the rest go on.
func (d *device) flush(t *txQueue) {
	for len(t.items) > 0 && t.fd >= 0 {
		n := min(len(t.items), txBatch)
		for i := range n {
			it := &t.items[i]
			data := it.slot[maxIPHeader+ib.UDPHeaderLen:]
			t.iovs[i].Base = &data[0]
			t.iovs[i].SetLen(len(data))
			h := &t.hdrs[i].Hdr
			*h = unix.Msghdr{Name: (*byte)(it.name), Iov: &t.iovs[i], Iovlen: 1}
			if t.v6 {
				h.Namelen = unix.SizeofSockaddrInet6
			} else {
				h.Namelen = unix.SizeofSockaddrInet4
			}
		}
		sent, err := sendmmsg(t.fd, t.hdrs[:n])
		switch {
		case err == unix.EAGAIN || err == unix.ENOBUFS:
			if !t.waiting {
				t.waiting = true
				_ = d.loop.SetFDHandler(t.fd, aio.FDHandler{Write: func() { d.flush(t) }})
			}
			return
		case err != nil:
			// The first datagram was refused; the others may pass.
			counter.Inc(&d.ctr.V.TxErrors)
			d.finish(t, 1, ib.StatusGeneral)
		default:
			counter.Add(&d.ctr.V.TxPackets, uint64(sent))
			d.finish(t, sent, ib.StatusSuccess)
		}
	}
	if t.waiting {
		t.waiting = false
		_ = d.loop.SetFDHandler(t.fd, aio.FDHandler{})
	}
}

// finish completes the first n queued datagrams of t with st and returns
// their slots.
func (d *device) finish(t *txQueue, n int, st ib.Status) {
	for i := range n {
		it := &t.items[i]
		d.txFree = append(d.txFree, it.slot[:cap(it.slot)])
		it.q.sendDone(it.id, st)
		*it = txItem{}
	}
	k := copy(t.items, t.items[n:])
	clear(t.items[k:])
	t.items = t.items[:k]
}

// loopback delivers a multicast datagram the device is sending (pkt: the
// pseudo IP header through the ICRC) to its other QPs attached to the
// group; the socket does not loop multicast back.
func (d *device) loopback(from *qp, pkt []byte) {
	dg := &d.dg
	if decodeDatagram(pkt, dg) != nil {
		return
	}
	for _, q := range d.qps {
		if q != from && q.attached(dg.DGID) {
			d.deliver(q, dg)
		}
	}
}

// attached reports whether q is attached to mgid.
func (q *qp) attached(mgid ib.GID) bool {
	for _, g := range q.groups {
		if g == mgid {
			return true
		}
	}
	return false
}

// RepostRecv gives receive buffers back to the QP.
func (q *qp) RepostRecv(ids ...uint64) error {
	if q.closed {
		return fmt.Errorf("udp: repost receive on QP %v: %w", q.qpn, ib.ErrClosed)
	}
	if err := q.recv.RepostAll(ids); err != nil {
		return fmt.Errorf("udp: repost receive on QP %v: %w: %w", q.qpn, err, ErrInvalidWR)
	}
	return nil
}

// Poll copies up to len(wcs) completions out of the queue, oldest first.
func (c *cq) Poll(wcs []ib.Completion) (int, error) {
	if c.closed {
		return 0, fmt.Errorf("udp: poll CQ: %w", ib.ErrClosed)
	}
	return c.ring.Poll(wcs), nil
}

// push appends a completion and schedules the handler; false when full.
func (c *cq) push(wc *ib.Completion) bool {
	if c.closed {
		return true
	}
	if !c.ring.Push(wc) {
		return false
	}
	if c.onDemand {
		if !c.armed {
			return true
		}
		c.armed = false
	}
	c.bh.Schedule()
	return true
}

// RequestNotify arms a CQ set to ib.ArmOnDemand: the next completion
// runs the handler once.
func (c *cq) RequestNotify() error {
	if c.closed {
		return fmt.Errorf("udp: arm CQ: %w", ib.ErrClosed)
	}
	c.armed = c.onDemand
	return nil
}

// receive takes one recvmmsg batch from a raw socket (the socket's read
// handler). One batch per wake-up, not a drain: the loop then runs the
// completion handlers, which repost the receive buffers the batch used,
// before it reads again (the socket is level-triggered, so what is left
// wakes it at once). Draining first would run the QPs out of buffers in
// a burst.
func (d *device) receive(r *rxRing) {
	if d.closed {
		return
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Flags = 0
		h.SetControllen(len(r.ctrl[i]))
		if r.v6 {
			h.Namelen = unix.SizeofSockaddrInet6
		}
	}
	n, err := recvmmsg(r.fd, r.hdrs)
	if err != nil {
		return // EAGAIN: drained; other errors are retried on the next wake-up
	}
	for i := range n {
		d.receiveOne(r, i)
	}
}

// receiveOne decodes datagram i of the last batch and delivers it.
func (d *device) receiveOne(r *rxRing, i int) {
	m := &r.hdrs[i]
	ln := int(m.Len)
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		counter.Inc(&d.ctr.V.RxTooLong)
		return
	}
	var c control
	if !parseControl(r.ctrl[i][:m.Hdr.Controllen], &c) {
		counter.Inc(&d.ctr.V.RxMalformed)
		return
	}
	if c.hasDrops {
		// The count is the socket's total, stamped on each datagram as
		// it was queued; it only grows (modulo 2^32).
		if n := c.drops - r.drops; int32(n) > 0 {
			counter.Add(&d.ctr.V.RxSocketDrops, uint64(n))
			r.drops = c.drops
		}
	}
	buf := r.bufs[i]
	var pkt []byte
	if r.v6 {
		if !rebuildIPv6(buf, ln, &r.names[i], &c) {
			counter.Inc(&d.ctr.V.RxMalformed)
			return
		}
		pkt = buf[:maxIPHeader+ln]
	} else {
		pkt = buf[:ln]
	}
	dg := &d.dg
	if err := decodeDatagram(pkt, dg); err != nil {
		switch {
		case errors.Is(err, ib.ErrBadICRC):
			counter.Inc(&d.ctr.V.RxBadICRC)
		case errors.Is(err, ErrNotRoCEv2):
			counter.Inc(&d.ctr.V.RxNotUD)
		default:
			counter.Inc(&d.ctr.V.RxMalformed)
		}
		return
	}
	d.dispatch(dg)
}

// dispatch hands a decoded datagram to its QP, or to every QP attached to
// its group.
func (d *device) dispatch(dg *datagram) {
	if dg.BTH.DestQP == ib.QPNMulticast {
		matched := false
		if dg.DGID.IsMulticast() {
			for _, q := range d.qps {
				if q.attached(dg.DGID) {
					matched = true
					d.deliver(q, dg)
				}
			}
		}
		if !matched {
			counter.Inc(&d.ctr.V.RxNoQP)
		}
		return
	}
	q := d.qps[dg.BTH.DestQP]
	if q == nil {
		counter.Inc(&d.ctr.V.RxNoQP)
		return
	}
	d.deliver(q, dg)
}

// deliver applies the QP's P_Key and Q_Key checks (IBA 10.9.3, 10.2.4)
// and lands the datagram in the next posted receive buffer: a GRH built
// from the IP header, then the payload.
func (d *device) deliver(q *qp, dg *datagram) {
	if !dg.BTH.PKey.Matches(q.pkey) {
		counter.Inc(&d.ctr.V.RxPKey)
		return
	}
	if dg.DETH.QKey != q.qkey {
		counter.Inc(&d.ctr.V.RxQKey)
		return
	}
	id, ok := q.recv.Next()
	if !ok {
		counter.Inc(&d.ctr.V.RxNoBuffer)
		return
	}
	off := int(id) * q.bufSize
	buf := q.slab[off : off+q.bufSize : off+q.bufSize]
	wc := ib.Completion{ID: uint64(id), Kind: ib.WorkRecv, QPN: q.qpn, Buf: buf}
	need := ib.GRHSize + len(dg.Payload)
	if need > len(buf) {
		wc.Status = ib.StatusLocalLength
		counter.Inc(&d.ctr.V.RxTooLong)
	} else {
		grh := ib.GRH{IPVer: ib.GRHIPVer, TClass: dg.TClass, FlowLabel: dg.FlowLabel, NxtHdr: ib.NxtHdrIBA,
			HopLmt: dg.HopLimit, SGID: dg.SGID, DGID: dg.DGID,
			PayLen: uint16(udOverhead + len(dg.Payload) + int(dg.BTH.PadCnt))}
		_ = grh.Encode(buf)
		copy(buf[ib.GRHSize:], dg.Payload)
		wc.Status = ib.StatusSuccess
		wc.Len = need
		wc.HasGRH = true
		wc.SrcQPN = dg.DETH.SrcQP
		wc.PKeyIndex = q.pkeyIndex
	}
	if !q.recvCQ.push(&wc) {
		counter.Inc(&d.ctr.V.RxNoBuffer)
		return
	}
	q.recv.Lend()
	if wc.Status == ib.StatusSuccess {
		counter.Inc(&d.ctr.V.RxPackets)
	}
}

// Control-message types the raw sockets deliver: the IPv6 ones from
// linux/in6.h, the drop count from asm-generic/socket.h.
const (
	ipv6PktInfo  = unix.IPV6_PKTINFO
	ipv6HopLimit = unix.IPV6_HOPLIMIT
	sockRxqOvfl  = unix.SO_RXQ_OVFL
)

// ctrlSize is the control buffer of each received datagram: room for
// IPV6_PKTINFO (36 bytes aligned to 40), IPV6_HOPLIMIT and SO_RXQ_OVFL
// (20 aligned to 24 each), with some to spare.
const ctrlSize = 128

// control is what the driver reads from one datagram's control messages.
type control struct {
	dst      []byte // IPV6_PKTINFO's destination address; nil if absent
	hop      byte   // IPV6_HOPLIMIT
	drops    uint32 // SO_RXQ_OVFL: the datagrams the socket dropped so far
	hasDrops bool   // the kernel sends SO_RXQ_OVFL once the count is not 0
}

// parseControl reads the control messages of one datagram into c. It
// reports false when they are malformed (a length that runs short of the
// header or past the buffer); messages of other types are skipped.
func parseControl(ctrl []byte, c *control) bool {
	for len(ctrl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		if h.Len < unix.SizeofCmsghdr || uint64(h.Len) > uint64(len(ctrl)) {
			return false
		}
		data := ctrl[unix.SizeofCmsghdr:h.Len]
		switch {
		case h.Level == unix.IPPROTO_IPV6 && h.Type == ipv6PktInfo:
			if len(data) >= 16 {
				c.dst = data[:16]
			}
		case h.Level == unix.IPPROTO_IPV6 && h.Type == ipv6HopLimit:
			if len(data) >= 4 {
				c.hop = byte(binary.NativeEndian.Uint32(data))
			}
		case h.Level == unix.SOL_SOCKET && h.Type == sockRxqOvfl:
			if len(data) >= 4 {
				c.drops, c.hasDrops = binary.NativeEndian.Uint32(data), true
			}
		}
		next := cmsgAlign(int(h.Len))
		if next >= len(ctrl) {
			break
		}
		ctrl = ctrl[next:]
	}
	return true
}

// rebuildIPv6 writes the IPv6 header of a datagram a raw IPv6 socket
// delivered (n bytes from the UDP header on, at buf[maxIPHeader:]) into
// buf[:maxIPHeader]: the source from the socket address, the destination
// and hop limit from the control messages. Traffic class and flow label
// are left zero; the ICRC does not cover them.
func rebuildIPv6(buf []byte, n int, src *unix.RawSockaddrInet6, c *control) bool {
	if c.dst == nil || n > 0xFFFF {
		return false
	}
	ip := buf[:maxIPHeader]
	binary.BigEndian.PutUint32(ip, 6<<28)
	binary.BigEndian.PutUint16(ip[4:], uint16(n))
	ip[6], ip[7] = ipProtoUDP, c.hop
	copy(ip[8:24], src.Addr[:])
	copy(ip[24:40], c.dst)
	return true
}

// cmsgAlign rounds a control message length up to the platform's
// alignment.
func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}
