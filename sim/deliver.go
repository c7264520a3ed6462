package sim

// The data path: frames queued by ports, their walk through the switches,
// and the checks a receiving port makes before a datagram lands in a
// receive buffer. Senders on any loop queue frames with emit; everything
// else here runs on the fabric loop.

import (
	"errors"
	"sync"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// maxFrameLen is the largest UD frame a port can send: LRH, GRH, BTH, DETH,
// a 4096-byte payload (the largest IB MTU), ICRC and VCRC.
const maxFrameLen = ib.LRHLen + ib.GRHLen + ib.BTHLen + ib.DETHLen + 4096 + ib.ICRCLen + ib.VCRCLen

// frame is one packet in flight. Frames are pooled; the buffer is
// allocated once and reused.
type frame struct {
	buf []byte
	src *port
	qp  *qp // the sending QP, owed a send completion; nil for QP1
	// sealed says buf holds what a port's encoder wrote, untouched since,
	// so its CRCs need no check (see decode). crcsDue says the ICRC and
	// VCRC fields are still zero (ib.Packet.AppendToLeavingCRCs): bytes
	// reports the frame with them filled in.
	sealed, crcsDue bool
	wrID            uint64 // the send's work request ID
	due             time.Time
	seq             uint64
}

// dataPath holds the queue between senders and the fabric loop.
type dataPath struct {
	f *Fabric

	in *aio.Mailbox[*frame] // frames for the fabric loop

	mu   sync.Mutex // guards free
	free []*frame

	// Fabric loop only. backlog[head:] are the frames taken from in and
	// not yet put on the wire; more runs the next batch of them.
	backlog []*frame
	head    int
	more    *aio.BH
	pkt     ib.Packet
	stack   []mcastHop
}

// mcastHop is a switch a multicast packet has reached, and the port it came
// in by.
type mcastHop struct {
	sw *node
	in int
}

func (dp *dataPath) init(f *Fabric) {
	dp.f = f
	dp.in = aio.NewMailbox(f.loop, "sim fabric "+f.name, dp.run)
	dp.more = f.loop.NewBH("sim fabric batch "+f.name, dp.pump)
}

// get returns a free frame. Any goroutine.
func (dp *dataPath) get() *frame {
	dp.mu.Lock()
	var fr *frame
	if n := len(dp.free); n > 0 {
		fr = dp.free[n-1]
		dp.free = dp.free[:n-1]
	}
	dp.mu.Unlock()
	if fr == nil {
		fr = &frame{buf: make([]byte, 0, maxFrameLen)}
	}
	return fr
}

// put returns a frame to the pool. Any goroutine.
func (dp *dataPath) put(fr *frame) {
	fr.src, fr.qp, fr.buf, fr.sealed, fr.crcsDue = nil, nil, fr.buf[:0], false, false
	dp.mu.Lock()
	dp.free = append(dp.free, fr)
	dp.mu.Unlock()
}

// emit encodes pkt into a pooled frame and queues it for the fabric loop.
// src is the port it leaves by; owner, if set, gets a send completion with
// wrID once the fabric has taken the frame. Any goroutine.
func (dp *dataPath) emit(src *port, pkt *ib.Packet, owner *qp, wrID uint64) error {
	fr := dp.get()
	b, err := pkt.AppendToLeavingCRCs(fr.buf[:0])
	if err != nil {
		dp.put(fr)
		return err
	}
	fr.buf, fr.src, fr.qp, fr.wrID, fr.sealed, fr.crcsDue = b, src, owner, wrID, true, true
	dp.queue(fr)
	return nil
}

// queue hands a ready frame to the fabric loop. Any goroutine.
func (dp *dataPath) queue(fr *frame) {
	if !dp.in.Post(fr) {
		dp.flush(fr)
	}
}

// flush drops a frame the closed fabric will not carry, completing its
// send as flushed.
func (dp *dataPath) flush(fr *frame) {
	dp.f.drop(DropFabricClosed, fr.src, nil)
	if fr.qp != nil {
		fr.qp.sendDone(fr.wrID, ib.StatusFlushed)
	}
	dp.put(fr)
}

// fabricBatch is how many frames one pass of the fabric loop puts on the
// wire before the hosts' completion handlers, which delivery scheduled,
// get to run.
//
// A real host drains its receive queue while the fabric fills it, on a
// CPU of its own. The simulated hosts share the loops, so a fabric that
// put its whole backlog on the wire at once (as it used to) landed it in
// every receive queue before any host could drain one: at 1024 hosts a
// backlog of a few hundred broadcasts built up while one pass ran, every
// host's 64 buffers filled, and 3.6–4.5 million datagrams were dropped
// for want of a buffer, among them the server's copies of DISCOVERs and
// the clients' own OFFERs and ACKs, whose retransmissions tripled the
// DHCP broadcasts. No real host would see those bursts: they were the
// hosts' CPUs serialised onto one. A few frames a pass keeps deliveries
// and draining interleaved as on real hardware; a host still drops at
// its receive queue when it is short of buffers, as an HCA does.
//
// Eight is where the demo's 1024 hosts ran fastest (one run each, under
// a CPU profiler; 1 frame a pass: 56 s, the per-pass work of 1,025
// completion handlers per frame; 4: 19.3 s; 8: 17.4 s; 16: 18.6 s; 32:
// 17.3–18.0 s). It also bounds how many of a
// host's receive buffers one burst touches (they are reused newest
// first), which is what keeps the untouched rest of the rings out of the
// resident set. Pacing pays only when the load is below the loop's
// capacity: offered more (DHCP clients retransmitting every 500 ms into
// a backlog that takes longer than that to clear), the backlog grows
// without bound instead of being dropped, which is why the demo's
// clients keep RFC 2131's backoff and spread their starts
// (docs/performance.md, "The 1024-host demo").
const fabricBatch = 8

// run queues a batch of posted frames behind any not yet sent and puts
// the next fabricBatch on the wire. Fabric loop.
func (dp *dataPath) run(frames []*frame) {
	dp.backlog = append(dp.backlog, frames...)
	dp.pump()
}

// pump puts up to fabricBatch frames of the backlog on the wire, oldest
// first, and comes back for the rest on a later pass. Fabric loop.
func (dp *dataPath) pump() {
	end := min(len(dp.backlog), dp.head+fabricBatch)
	for dp.head < end {
		fr := dp.backlog[dp.head]
		dp.backlog[dp.head] = nil
		dp.head++
		dp.f.take(fr)
	}
	if dp.head < len(dp.backlog) {
		dp.more.Schedule()
		return
	}
	dp.backlog, dp.head = dp.backlog[:0], 0
}

// close refuses further frames and flushes those still queued.
func (dp *dataPath) close() {
	dp.more.Delete()
	left := append(dp.backlog[dp.head:], dp.in.Close()...)
	dp.backlog, dp.head = nil, 0
	for _, fr := range left {
		dp.flush(fr)
	}
}

// drop counts a discard on the fabric and on the host it is attributed to.
func (f *Fabric) drop(r DropReason, p *port, h *Host) {
	counter.Inc(&f.counters.V.Drops[r])
	if h == nil && p != nil && !p.node.isSwitch {
		h = f.hostOf(p.node)
	}
	if h != nil {
		counter.Inc(&h.counters.V.Drops[r])
	}
}

// take is the moment the sending port puts the frame on the wire: the
// send completes, the capture records it, and the fault injector decides
// its fate.
func (f *Fabric) take(fr *frame) {
	if q := fr.qp; q != nil {
		if q.isClosed() {
			q.sendDone(fr.wrID, ib.StatusFlushed)
			f.dp.put(fr)
			return
		}
		q.sendDone(fr.wrID, ib.StatusSuccess)
	}
	counter.Inc(&f.counters.V.Sent)
	if h := f.hostOf(fr.src.node); h != nil {
		counter.Inc(&h.counters.V.Sent)
	}
	if f.capture != nil {
		// A capture that cannot be written is not worth losing the packet
		// over; the writer's error is sticky in the file anyway.
		_ = f.capture.WriteInfiniBand(f.loop.Now(), 0, fr.bytes())
	}
	f.fi.admit(fr)
}

// transmit walks a frame from its source port to its destination(s) and
// releases it. Fabric loop.
func (f *Fabric) transmit(fr *frame) {
	f.forward(fr)
	f.dp.put(fr)
}

// payloadLen returns the UD payload size of a frame, which the IB MTU
// limits, or -1 if the frame is too short to tell.
func payloadLen(b []byte) int {
	if len(b) < ib.LRHLen+ib.BTHLen {
		return -1
	}
	hdr := ib.LRHLen + ib.BTHLen + ib.DETHLen
	bth := ib.LRHLen
	if ib.LNH(b[1]&0x3) == ib.LNHIBAGlobal {
		hdr += ib.GRHLen
		bth += ib.GRHLen
	}
	if len(b) < bth+ib.BTHLen {
		return -1
	}
	if ib.Opcode(b[bth]) == ib.OpUDSendOnlyImm {
		hdr += ib.ImmDtLen
	}
	pad := int(b[bth+1] >> 4 & 0x3)
	return len(b) - hdr - pad - ib.ICRCLen - ib.VCRCLen
}

// forward routes a frame by its DLID. Fabric loop.
func (f *Fabric) forward(fr *frame) {
	src := fr.src
	var lrh ib.LRH
	if lrh.Decode(fr.buf) != nil {
		f.drop(DropMalformed, src, nil)
		return
	}
	if src.state != ib.PortActive {
		f.drop(DropPortNotActive, src, nil)
		return
	}
	size := payloadLen(fr.buf)
	dlid := lrh.DLID
	if dlid.IsMulticast() {
		f.forwardMcast(fr, dlid, size)
		return
	}
	if dlid == src.lid {
		// The HCA turns a packet for its own LID around without putting
		// it on the link.
		f.receive(src, fr)
		return
	}
	// A packet from a switch's management port (the SA's answers) starts
	// in the switch itself.
	at := src
	var sw *node
	if src.node.isSwitch {
		sw = src.node
	}
	for range maxHops {
		if sw != nil {
			if dlid == sw.ports[0].lid || dlid == ib.LIDPermissive {
				f.receive(sw.ports[0], fr)
				return
			}
			if int(dlid) >= len(sw.lft) || sw.lft[dlid] == noPort || sw.lft[dlid] == 0 {
				f.drop(DropNoRoute, src, nil)
				return
			}
			at = sw.ports[sw.lft[dlid]]
		}
		q, ok := f.cross(at, src, size)
		if !ok {
			return
		}
		if !q.node.isSwitch {
			f.receive(q, fr)
			return
		}
		sw = q.node
	}
	f.drop(DropNoRoute, src, nil)
}

// forwardMcast floods a frame down the group's tree: each switch sends it
// out of every tree port but the one it came in by. The sending port's own
// attached QPs get a copy first, as an HCA loops multicast back.
func (f *Fabric) forwardMcast(fr *frame, mlid ib.LID, size int) {
	src := fr.src
	// Decode once for the whole fan-out, into a packet of our own: the
	// shared one is scratch for anything a delivery might decode.
	var pkt ib.Packet
	derr := fr.decode(&pkt)
	if src.hasAttach(mlid) {
		f.receiveDecoded(src, &pkt, derr)
	}
	var first *port
	if src.node.isSwitch {
		first = src
	} else {
		var ok bool
		if first, ok = f.cross(src, src, size); !ok {
			return
		}
	}
	if !first.node.isSwitch {
		f.receiveDecoded(first, &pkt, derr)
		return
	}
	if _, ok := first.node.mft[mlid]; !ok {
		f.drop(DropNoRoute, src, nil)
		return
	}
	stack := append(f.dp.stack[:0], mcastHop{first.node, first.num})
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, pn := range h.sw.mft[mlid] {
			if int(pn) == h.in {
				continue
			}
			r, ok := f.cross(h.sw.ports[pn], src, size)
			if !ok {
				continue
			}
			if r.node.isSwitch {
				stack = append(stack, mcastHop{r.node, r.num})
			} else {
				f.receiveDecoded(r, &pkt, derr)
			}
		}
	}
	f.dp.stack = stack
}

// hasAttach reports whether a QP on the port is attached to mlid.
func (p *port) hasAttach(mlid ib.LID) bool {
	if p.node.isSwitch {
		return false
	}
	p.node.mu.RLock()
	defer p.node.mu.RUnlock()
	return len(p.attach[mlid]) > 0
}

// matchPKey returns the index of the first table entry that accepts a
// packet carrying key, or -1 (IBA 10.9.3).
func matchPKey(table []ib.PKey, key ib.PKey) int {
	for i, k := range table {
		if key.Matches(k) {
			return i
		}
	}
	return -1
}

// decode decodes the frame into pkt. A frame one of the fabric's ports
// encoded is decoded without computing its CRCs: the simulator stands in
// for HCAs and switches that compute and check them in hardware, and
// checking a CRC over bytes nothing could have changed costs a fifth of a
// TCP stream's CPU and can never fail. The CRCs are still on the wire
// (captures carry them) and still checked in every frame not sealed.
func (fr *frame) decode(pkt *ib.Packet) error {
	if fr.sealed {
		return ib.DecodeSealedPacket(fr.buf, pkt)
	}
	return ib.DecodePacket(fr.bytes(), pkt)
}

// bytes returns the frame as it is on the wire, computing its ICRC and
// VCRC first if they are still due. Every reader of the whole frame (a
// capture, a check of both CRCs) goes through it; routing reads only the
// LRH, and delivery the headers and payload, none of which the CRCs
// change. A frame nothing reads whole never pays for its CRCs, as on a
// link where the HCAs compute them in hardware.
func (fr *frame) bytes() []byte {
	if fr.crcsDue {
		ib.PutCRCs(fr.buf)
		fr.crcsDue = false
	}
	return fr.buf
}

// receive is a port taking a frame off its link: decode (both CRCs
// checked unless the frame is sealed), port state, DLID, P_Key, then
// dispatch by destination QP.
func (f *Fabric) receive(p *port, fr *frame) {
	pkt := &f.dp.pkt
	f.receiveDecoded(p, pkt, fr.decode(pkt))
}

// receiveDecoded is receive for a frame already decoded into pkt (with
// decoding's outcome in err): a multicast fan-out decodes, and checks the
// CRCs of, its one frame once rather than once per receiving port, since
// every port sees the same bytes.
func (f *Fabric) receiveDecoded(p *port, pkt *ib.Packet, err error) {
	var h *Host
	if !p.node.isSwitch {
		h = f.hostOf(p.node)
	}
	if err != nil {
		if errors.Is(err, ib.ErrBadICRC) || errors.Is(err, ib.ErrBadVCRC) {
			f.drop(DropBadCRC, p, h)
		} else {
			f.drop(DropMalformed, p, h)
		}
		return
	}
	if p.state != ib.PortActive {
		f.drop(DropPortNotActive, p, h)
		return
	}
	dlid := pkt.LRH.DLID
	mcast := dlid.IsMulticast()
	if !mcast && dlid != p.lid && dlid != ib.LIDPermissive {
		f.drop(DropWrongDLID, p, h)
		return
	}
	pkIdx := matchPKey(p.pkeys, pkt.BTH.PKey)
	if pkIdx < 0 {
		f.drop(DropPKey, p, h)
		return
	}
	dqp := pkt.BTH.DestQP
	switch {
	case mcast:
		if dqp != ib.QPNMulticast || !pkt.HasGRH || h == nil {
			f.drop(DropMalformed, p, h)
			return
		}
		f.deliverMcast(h, p, pkt)
	case dqp == ib.QPNMulticast:
		f.drop(DropMalformed, p, h)
	case dqp == ib.QPNGSI:
		// SA requests are the SA's; answers (R bit set) go to the port's
		// MAD port, which matters when the SM runs on a host.
		if p == f.sm.port && len(pkt.Payload) > 3 && ib.MgmtClass(pkt.Payload[1]) == ib.MgmtClassSubnAdm &&
			!ib.Method(pkt.Payload[3]).IsResponse() {
			f.saReceive(p, pkt, pkIdx)
			return
		}
		if h == nil {
			f.drop(DropNoQP, p, h)
			return
		}
		f.deliverMAD(h, p, pkt, pkIdx)
	case dqp == ib.QPNSMI || h == nil:
		// Subnet management packets are not carried in band: the SM
		// programs ports directly.
		f.drop(DropNoQP, p, h)
	default:
		h.mu.RLock()
		q := h.qps[dqp]
		if q == nil || q.port != p {
			h.mu.RUnlock()
			f.drop(DropNoQP, p, h)
			return
		}
		f.deliverUD(h, q, pkt)
		h.mu.RUnlock()
	}
}

// deliverUD applies a UD QP's own checks and fills a receive buffer. The
// caller holds h.mu for reading.
func (f *Fabric) deliverUD(h *Host, q *qp, pkt *ib.Packet) {
	p := q.port
	if q.pkeyIndex >= len(p.pkeys) || !pkt.BTH.PKey.Matches(p.pkeys[q.pkeyIndex]) {
		// A UD QP belongs to one partition (IBA 10.9.3): the packet's key
		// must match the entry its P_Key index names.
		f.drop(DropPKey, p, h)
		return
	}
	if ib.QKey(q.qkey.Load()) != pkt.DETH.QKey {
		f.drop(DropQKey, p, h)
		return
	}
	if r, dropped := q.deliver(pkt); dropped {
		f.drop(r, p, h)
		return
	}
	counter.Inc(&f.counters.V.Delivered)
	counter.Inc(&h.counters.V.Delivered)
}

// deliverMcast hands a multicast packet to every QP of the port attached
// to its MGID.
func (f *Fabric) deliverMcast(h *Host, p *port, pkt *ib.Packet) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	matched := false
	for _, q := range p.attach[pkt.LRH.DLID] {
		if !q.attachedTo(pkt.GRH.DGID, pkt.LRH.DLID) {
			continue
		}
		matched = true
		f.deliverUD(h, q, pkt)
	}
	if !matched {
		f.drop(DropNoQP, p, h)
	}
}

// deliverMAD hands a QP1 packet to the port's MAD port. QP1 accepts any
// partition in the port's table but only the GSI Q_Key (IBA 13.5.1).
func (f *Fabric) deliverMAD(h *Host, p *port, pkt *ib.Packet, pkIdx int) {
	if pkt.DETH.QKey != ib.QKeyGSI {
		f.drop(DropQKey, p, h)
		return
	}
	if len(pkt.Payload) != ib.MADLen {
		f.drop(DropMAD, p, h)
		return
	}
	h.mu.RLock()
	mp := p.madPort
	ok := mp != nil && mp.push(ib.MADAddress{
		LID:       pkt.LRH.SLID,
		SL:        pkt.LRH.SL,
		QPN:       pkt.DETH.SrcQP,
		QKey:      pkt.DETH.QKey,
		PKeyIndex: pkIdx,
	}, pkt.Payload)
	h.mu.RUnlock()
	switch {
	case mp == nil:
		f.drop(DropNoQP, p, h)
	case !ok:
		f.drop(DropNoRecvBuffer, p, h)
	default:
		counter.Inc(&f.counters.V.Delivered)
		counter.Inc(&h.counters.V.Delivered)
	}
}

// cross sends a frame of size bytes out of port out and returns the port at
// the link's far end, or counts the drop against src (link down or the
// frame larger than the link's MTU) and reports false.
func (f *Fabric) cross(out, src *port, size int) (*port, bool) {
	l := out.link
	if l == nil || !l.up {
		f.drop(DropLinkDown, src, nil)
		return nil, false
	}
	if size > l.mtu.Bytes() {
		f.drop(DropOversize, src, nil)
		return nil, false
	}
	return l.other(out), true
}
