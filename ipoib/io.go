// Data plane of the peer cache, the link and the driver.
//
// The functions in this file run once or twice per packet on the loop
// that owns the cache (the device's loop): the cache look-ups, the
// link's keying of frames, and the driver's transmit and completion
// handling (the netdev Transmit, TransmitBatch and Poll ops and the CQ
// handler). They never block and allocate nothing once warm, refusals
// included, except where an argument is malformed (a programming error,
// reported with a descriptive error) or a packet needs control work (a
// path query, a multicast join), which happens once per peer or group.
// Because checking the caller costs a system call per packet, they check
// it only in -race builds, where calling one off the loop panics.

package ipoib

import (
	"errors"
	"fmt"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// Enter returns the peer of the 20-byte address addr, giving it a key if
// it has none, and marks it most recently used. It fails with an error
// wrapping netdev.ErrBadAddr for an address of the wrong length and with
// one wrapping ErrCacheFull (and netdev.ErrNoPeer) when no slot can be
// freed.
func (c *PeerCache) Enter(addr []byte) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Enter")
	if len(addr) != AddrLen {
		return nil, fmt.Errorf("ipoib peer cache: enter a %d-byte address, want %d: %w", len(addr), AddrLen, netdev.ErrBadAddr)
	}
	return c.enter((*[AddrLen]byte)(addr))
}

// EnterAddr is Enter for an address in structured form, as a receive path
// has it from the completion's source QPN and the GRH's source GID.
func (c *PeerCache) EnterAddr(a Addr) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.EnterAddr")
	var raw [AddrLen]byte
	if err := a.Encode(raw[:]); err != nil {
		return nil, fmt.Errorf("ipoib peer cache: enter %v: %w: %w", a, netdev.ErrBadAddr, err)
	}
	return c.enter(&raw)
}

// Find returns the peer of addr without entering it or changing its
// place in the LRU order, or nil when addr has no key.
func (c *PeerCache) Find(addr []byte) *Peer {
	c.checkIO("ipoib.PeerCache.Find")
	if len(addr) != AddrLen {
		return nil
	}
	raw := (*[AddrLen]byte)(addr)
	if k, _, _ := c.locate(raw); k != NoKey {
		return &c.slots[k]
	}
	return nil
}

// Lookup returns the peer that holds key k now, or nil. It is for
// inspection; the data path reads keys out of headers with Claim.
func (c *PeerCache) Lookup(k Key) *Peer {
	c.checkIO("ipoib.PeerCache.Lookup")
	return c.lookup(k)
}

// Claim returns the peer of a key just read out of a header and records
// that the header has been read, which lets peers entered before it be
// evicted again (see PeerCache). A key that names no peer yields an error
// wrapping netdev.ErrUnknownKey, and is counted.
func (c *PeerCache) Claim(k Key) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Claim")
	return c.claim(k)
}

func (c *PeerCache) claim(k Key) (*Peer, error) {
	if !c.claimKey(k) {
		return nil, c.errUnknown
	}
	return &c.slots[k], nil
}

// claimKey is claim for callers that need only to know that k is live.
func (c *PeerCache) claimKey(k Key) bool {
	c.epoch++
	if c.isLive(k) {
		return true
	}
	counter.Inc(&c.ctr.V.UnknownKey)
	return false
}

// Settle records that no header written by this cache's keys is waiting
// to be read: a driver calls it when it drops a frame whose keys it set
// but that never reached Link.Pull, or at the start of each pass over its
// completions, so that the eviction fence cannot outlive the frames it
// protects.
func (c *PeerCache) Settle() {
	c.checkIO("ipoib.PeerCache.Settle")
	c.epoch++
}

// Resolve returns the peer r names, unless its slot has been given to
// another address since r was taken (an error wrapping ErrStalePeer) or r
// never named a live peer (netdev.ErrUnknownKey). Both are counted. A
// transmit path resolves its Ref at the moment it sends, so a packet
// whose peer was evicted while it waited is dropped and never reaches the
// slot's new occupant.
func (c *PeerCache) Resolve(r Ref) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.Resolve")
	return c.resolve(r)
}

// SetPath records the path to the peer r names, typically when its path
// record or group join comes back. A stale r is refused: the answer was
// for a peer that is gone.
func (c *PeerCache) SetPath(r Ref, path Path) error {
	c.checkIO("ipoib.PeerCache.SetPath")
	p, err := c.resolve(r)
	if err != nil {
		return err
	}
	p.path, p.hasPath = path, true
	return nil
}

// ClearPath forgets the path to the peer r names and returns it, so the
// caller can destroy its address handle. The peer keeps its key.
func (c *PeerCache) ClearPath(r Ref) (Path, error) {
	c.checkIO("ipoib.PeerCache.ClearPath")
	p, err := c.resolve(r)
	if err != nil {
		return Path{}, err
	}
	old := p.path
	p.path, p.hasPath = Path{}, false
	return old, nil
}

// Park stores b in the slot of the peer r names until its path is known.
// The peer is not evicted while packets are parked. It fails with an
// error wrapping ErrParkFull (and netdev.ErrNoPath) when MaxParked packets
// already wait, and with Resolve's errors for a stale r; b is then still
// the caller's.
func (c *PeerCache) Park(r Ref, b *netdev.Buffer) error {
	c.checkIO("ipoib.PeerCache.Park")
	p, err := c.resolve(r)
	if err != nil {
		return err
	}
	if int(p.nparked) >= MaxParked {
		return c.errParkFull
	}
	was := p.held()
	p.parked[p.nparked] = b
	p.nparked++
	c.setHeld(r.Key, was)
	return nil
}

// Unpark appends the packets parked for the peer r names to dst, oldest
// first, empties the slot's queue and returns the extended slice. The
// peer becomes evictable again unless pinned. A dst with room for
// MaxParked more buffers keeps this allocation-free.
func (c *PeerCache) Unpark(r Ref, dst []*netdev.Buffer) ([]*netdev.Buffer, error) {
	c.checkIO("ipoib.PeerCache.Unpark")
	p, err := c.resolve(r)
	if err != nil {
		return dst, err
	}
	was := p.held()
	dst = append(dst, p.parked[:p.nparked]...)
	clear(p.parked[:])
	p.nparked = 0
	c.setHeld(r.Key, was)
	return dst, nil
}

// TakeTx is the driver's first step with a frame that Link.Push built:
// it reads the destination key out of the header, claims it, zeroes both
// keys as the wire wants them, and returns the destination peer. The
// destination thus travels down in the frame itself, written once by
// Push above netdev and read once here below it; the driver asks no
// layer where a frame goes. A driver that will send the frame later keeps
// the peer's Ref, not the *Peer. A frame without a header, or whose key
// names no peer, yields an error wrapping netdev.ErrNoPeer.
func (c *PeerCache) TakeTx(b *netdev.Buffer) (*Peer, error) {
	c.checkIO("ipoib.PeerCache.TakeTx")
	dk, _, err := ClearKeys(b)
	if err != nil {
		return nil, fmt.Errorf("ipoib transmit: %w (%w)", err, netdev.ErrNoPeer)
	}
	p, err := c.claim(dk)
	if err != nil {
		return nil, c.errTxNoPeer
	}
	return p, nil
}

// SetRxPeers is the driver's step with a received frame, positioned at the
// IPoIB header (the GRH already pulled): it enters the destination (the
// interface's own address, or the group for a multicast datagram) and the
// source (the completion's source QPN and the GRH's source GID) in the
// cache and writes their keys into the header for Link.Pull to read.
func (l *Link) SetRxPeers(b *netdev.Buffer, dst, src Addr) error {
	l.cache.checkIO("ipoib.Link.SetRxPeers")
	if b.Len() < HeaderLen {
		return fmt.Errorf("ipoib receive: %d-byte frame, header is %d: %w", b.Len(), HeaderLen, netdev.ErrShort)
	}
	dp, err := l.cache.EnterAddr(dst)
	if err != nil {
		return fmt.Errorf("ipoib receive: destination: %w", err)
	}
	// The sender of a multicast datagram enters cold (see enterKeyCold).
	var raw [AddrLen]byte
	if err := src.Encode(raw[:]); err != nil {
		return fmt.Errorf("ipoib receive: source %v: %w: %w", src, netdev.ErrBadAddr, err)
	}
	var sk Key
	if dst.IsMulticast() {
		sk, err = l.cache.enterKeyCold(&raw)
	} else {
		sk, err = l.cache.enterKey(&raw)
	}
	if err != nil {
		return fmt.Errorf("ipoib receive: source: %w", err)
	}
	return SetKeys(b, dp.key, sk)
}

// Transmit is the netdev op for one frame: it takes the frame's peer
// with PeerCache.TakeTx and sends it, parks it until its path or group is ready,
// or refuses it with the reason.
func (d *driver) Transmit(_ *netdev.Device, b *netdev.Buffer) error {
	err := d.xmit(b)
	d.flushWRs()
	return err
}

// TransmitBatch is the netdev op for several frames: they are posted to
// the QP in one call. Every frame is taken; one that cannot go is
// completed here with its reason, so the rest of the batch still goes.
func (d *driver) TransmitBatch(_ *netdev.Device, bufs []*netdev.Buffer) (int, error) {
	for _, b := range bufs {
		if err := d.xmit(b); err != nil {
			_ = d.nd.TxComplete(b, err)
		}
	}
	d.flushWRs()
	return len(bufs), nil
}

// Poll is the netdev op that reaps completions without waiting for the
// CQ's handler.
func (d *driver) Poll(*netdev.Device) bool { return d.pollCQ() }

// xmit routes one frame: queued for the QP (nil), parked or dropped with
// its buffer completed (nil), or refused untaken (the error).
func (d *driver) xmit(b *netdev.Buffer) error {
	p, err := d.cache.TakeTx(b)
	if err != nil {
		return err
	}
	if p.addr.QPN == ib.QPNMulticast {
		return d.xmitGroup(p, b)
	}
	st := d.state(p)
	if path, ok := p.Path(); ok && path.AH != nil {
		if b.Len() > path.MTU.Bytes() {
			return d.errTooBig
		}
		if st.stale && !st.querying {
			// Keep using the old path while the SA confirms it.
			_ = d.startPathQuery(p, st)
		}
		d.nd.Stats().Inc(PathCacheHits)
		d.queueWR(b, path.AH, p.addr.QPN)
		return nil
	}
	if err := d.cache.Park(st.ref, b); err != nil {
		if err == d.cache.errParkFull {
			d.nd.Stats().Inc(PendingDrops)
		}
		return err
	}
	if !st.querying {
		if err := d.startPathQuery(p, st); err != nil {
			d.nd.Stats().Inc(PathFailures)
			d.dropParked(st.ref, d.errNoPath) // b among them
		}
	}
	return nil
}

// xmitGroup sends a frame to a multicast group: at once when the group
// is joined, else parked while it is joined (on demand, as a send-only
// member, for a group never seen before).
func (d *driver) xmitGroup(p *Peer, b *netdev.Buffer) error {
	st := d.state(p)
	st.used = true
	if path, ok := p.Path(); ok && path.AH != nil {
		if b.Len() > path.MTU.Bytes() {
			return d.errTooBig
		}
		d.queueWR(b, path.AH, ib.QPNMulticast)
		return nil
	}
	if !p.addr.GID.IsMulticast() {
		return d.errNotJoined
	}
	g := d.groupOf(p)
	if g == nil {
		if d.bcast.status != groupJoined {
			return d.errNotJoined
		}
		var err error
		if g, err = d.newGroup(p.addr.GID, false, false); err != nil {
			return errNotJoinedFor(d.cfg.Name, p.addr.GID, err)
		}
	}
	if g.status == groupIdle && g.timer.Pending() {
		return d.errNotJoined // a join failed; wait for the retry
	}
	if err := d.cache.Park(g.ref, b); err != nil {
		if err == d.cache.errParkFull {
			d.nd.Stats().Inc(PendingDrops)
		}
		return err
	}
	if g.status == groupIdle {
		d.startJoin(g) // on failure joinFailed drops the parked frames, b included
	}
	return nil
}

// sendParked sends the packets that waited for r's path or join.
func (d *driver) sendParked(r Ref) {
	p, err := d.cache.Resolve(r)
	if err != nil {
		return
	}
	bufs, _ := d.cache.Unpark(r, d.parked[:0])
	if len(bufs) == 0 {
		return
	}
	path, ok := p.Path()
	for i, b := range bufs {
		bufs[i] = nil
		switch {
		case !ok || path.AH == nil:
			_ = d.nd.TxComplete(b, d.errNoPath)
		case b.Len() > path.MTU.Bytes():
			_ = d.nd.TxComplete(b, d.errTooBig)
		default:
			d.queueWR(b, path.AH, p.addr.QPN)
		}
	}
	d.flushWRs()
}

// queueWR adds a send of b to the batch flushWRs posts, in a free send
// slot; with none free (SendDepth sends in flight) b is dropped.
func (d *driver) queueWR(b *netdev.Buffer, ah ib.AddressHandle, qpn ib.QPN) {
	n := len(d.txFree)
	if n == 0 {
		_ = d.nd.TxComplete(b, d.errSendFull)
		return
	}
	i := d.txFree[n-1]
	d.txFree = d.txFree[:n-1]
	s := &d.tx[i]
	s.b = b
	s.seg[0] = b.Bytes()
	d.wrs = append(d.wrs, ib.SendWR{
		ID: uint64(d.txEpoch)<<32 | uint64(i), AH: ah, RemoteQPN: qpn, RemoteQKey: d.qkey, Data: s.seg[:],
	})
}

// flushWRs posts the queued sends. Those the QP refuses are completed
// with ErrSend.
func (d *driver) flushWRs() {
	if len(d.wrs) == 0 {
		return
	}
	var n int
	var err error
	if d.qp != nil {
		n, err = d.qp.PostSend(d.wrs)
	} else {
		err = ib.ErrClosed
	}
	d.posted += uint64(n)
	if n < len(d.wrs) {
		ferr := d.errSendFull
		if !errors.Is(err, ib.ErrQueueFull) {
			ferr = fmt.Errorf("ipoib %s: post send: %w: %w", d.cfg.Name, ErrSend, err)
		}
		for _, wr := range d.wrs[n:] {
			i := uint32(wr.ID)
			b := d.tx[i].b
			d.tx[i] = txSlot{}
			d.txFree = append(d.txFree, i)
			_ = d.nd.TxComplete(b, ferr)
		}
	}
	clear(d.wrs)
	d.wrs = d.wrs[:0]
	if n > 0 {
		d.reapSends(false)
	}
}

// onCQ is the receive completion queue's handler.
func (d *driver) onCQ() { d.pollCQ() }

// onSendCQ is the send completion queue's handler: it runs once per
// RequestNotify, when a send that was still in flight completes.
func (d *driver) onSendCQ() { d.reapSends(true) }

// reapSends finishes the sends that have completed and reports whether
// it found any. Sends still in flight are waited for in two steps: the
// first call (arm false) leaves them to a bottom half, which finds them
// done as a rule (a device that completes sends on the loop, as the
// simulator's fabric does, has run by then); the bottom half's call (arm
// true) arms the send CQ for one event and polls once more, for a
// completion that landed between the poll and the arming raises none.
// Soft-RoCE completes a send inside the post, so the first call finds it
// and nothing is armed.
func (d *driver) reapSends(arm bool) bool {
	// Nothing in flight, nothing to find: the receive path calls this on
	// every batch, and a poll is a cgo call on verbs.
	if d.closed || d.scq == nil || d.reaping || d.finished >= d.posted {
		return false
	}
	// Finishing a packet frees its buffer, whose owner may send again
	// from inside: that send's own reaping is left to this loop.
	d.reaping = true
	defer func() { d.reaping = false }()
	found := false
	for armed := false; ; {
		n, err := d.scq.Poll(d.swcs)
		for i := range d.swcs[:n] {
			d.sendDone(&d.swcs[i])
		}
		found = found || n > 0
		switch {
		case err != nil:
			return found
		case n == len(d.swcs):
			continue
		case armed || d.finished >= d.posted:
		case !arm:
			d.sendBH.Schedule()
		case d.scq.RequestNotify() == nil:
			armed = true
			continue
		}
		if len(d.dead) > 0 {
			d.reap()
		}
		return found
	}
}

// pollCQ drains the receive CQ in batches: receive completions are lent
// up the stack in the QP's own buffers (see rxSlot), which the stack
// frees, as a rule, before Receive returns; they go back to the QP once a
// batch. Then it reaps the sends still in flight (reapSends), so that
// netdev's Poll op finds both kinds.
func (d *driver) pollCQ() bool {
	if d.closed {
		return false
	}
	// Every key written into a header during the last pass has been read
	// by now (Receive pulls it synchronously): let the cache evict again.
	d.cache.Settle()
	found := false
	d.polling = true
	defer func() { d.polling = false }()
	for {
		n, err := d.cq.Poll(d.wcs)
		if err != nil || n == 0 {
			break
		}
		found = true
		for i := range d.wcs[:n] {
			wc := &d.wcs[i]
			switch {
			case wc.QPN != d.self.QPN || wc.Status == ib.StatusFlushed:
				// A buffer of a QP that is gone or going: nothing to
				// deliver and nowhere to repost it.
			case wc.Status != ib.StatusSuccess:
				d.nd.ReceiveError(nil, d.errRecvStatus(wc.Status))
				d.repost = append(d.repost, wc.ID)
			default:
				// The buffer goes back to the QP when the stack frees
				// it (rxSlot.Release), here as a rule.
				d.receive(wc)
			}
		}
		d.flushRepost()
		if n < len(d.wcs) {
			break
		}
	}
	found = d.reapSends(false) || found
	if len(d.dead) > 0 {
		d.reap()
	}
	return found
}

// sendDone finishes the packet of a send completion.
func (d *driver) sendDone(wc *ib.Completion) {
	if uint32(wc.ID>>32) != d.txEpoch || uint32(wc.ID) >= uint32(len(d.tx)) {
		return // written off
	}
	i := uint32(wc.ID)
	s := &d.tx[i]
	b := s.b
	if b == nil {
		return
	}
	s.b, s.seg[0] = nil, nil
	d.txFree = append(d.txFree, i)
	d.finished++
	var err error
	if wc.Status != ib.StatusSuccess {
		err = d.errSendStatus[ib.StatusGeneral]
		if int(wc.Status) < len(d.errSendStatus) {
			err = d.errSendStatus[wc.Status]
		}
	}
	_ = d.nd.TxComplete(b, err)
}

// errRecvStatus returns the error a receive completion in error is
// counted with.
func (d *driver) errRecvStatus(s ib.Status) error {
	if int(s) < len(d.errRecvWC) {
		return d.errRecvWC[s]
	}
	return d.errRecvWC[ib.StatusGeneral]
}

// receive hands one received datagram to netdev: lent up in the QP's
// own buffer (see rxSlot), its source and destination entered in the
// peer cache and their keys written into the IPoIB header.
func (d *driver) receive(wc *ib.Completion) {
	if wc.ID >= uint64(len(d.rx)) || len(wc.Buf) < ib.GRHSize {
		// Not a buffer of ours (drivers number them 0 to RecvDepth-1,
		// each with room for the GRH area at least): hand it back for
		// the driver to judge.
		d.nd.ReceiveError(nil, d.errRecvWC[ib.StatusGeneral])
		d.repost = append(d.repost, wc.ID)
		return
	}
	data := wc.Payload()
	mcast := false
	if wc.HasGRH {
		_ = d.grh.Decode(wc.Buf) // the completion's buffer starts with the GRH area
		mcast = d.grh.DGID.IsMulticast()
		// On RoCE every LID is 0, and hosts that create their QPs in the
		// same order get the same QPNs (two rxe VMs both hand out 0x12),
		// so only the GID tells our own datagram from a peer's.
		if mcast && wc.SrcQPN == d.self.QPN && (d.grh.SGID == d.self.GID || (!d.roce && wc.SLID == d.attr.LID)) {
			d.nd.ReceiveError(nil, d.errLoopback)
			d.repost = append(d.repost, wc.ID)
			return
		}
	}
	b := d.lend(wc, len(data))
	dst := d.self
	if mcast {
		dst = MulticastAddr(d.grh.DGID)
	}
	var err error
	if wc.HasGRH {
		err = d.l.SetRxPeers(b, dst, Addr{QPN: wc.SrcQPN, GID: d.grh.SGID})
		if err == nil {
			d.checkSource(b, wc)
		}
	} else {
		err = d.keyWithoutGRH(b, dst, wc)
	}
	if err != nil {
		d.nd.ReceiveError(b, err)
		return
	}
	_ = d.nd.Receive(b)
}

// rxSlot is one of the QP's receive buffers while it is lent up the
// stack: the QP's own memory, wrapped as a netdev.Buffer whose Free
// gives it back to the QP. Receiving without a copy is what a real HCA's
// driver does with the memory it posted; here it also spares a host a
// second set of buffers and the cache misses of filling it.
type rxSlot struct {
	d   *driver
	qp  ib.QueuePair // the QP the buffer belongs to
	id  uint64       // its completion ID
	mem []byte       // the memory b wraps
	b   *netdev.Buffer
	out bool // lent, not yet freed
}

// lend wraps the buffer of receive completion wc, whose payload is n
// bytes after the GRH area, as a netdev buffer holding that payload.
func (d *driver) lend(wc *ib.Completion, n int) *netdev.Buffer {
	s := &d.rx[wc.ID]
	if s.b == nil || len(s.mem) != len(wc.Buf) || &s.mem[0] != &wc.Buf[0] {
		// First use of the slot, or a QP whose memory is elsewhere.
		s.d, s.mem = d, wc.Buf
		s.b = netdev.NewBuffer(wc.Buf, s)
	}
	s.qp, s.id, s.out = d.qp, wc.ID, true
	_ = s.b.Reset(ib.GRHSize) // Buf is GRHSize bytes and more
	_, _ = s.b.Put(n)         // the payload is already in place
	return s.b
}

// Release implements netdev.Releaser: the buffer goes back to its QP,
// now when freed on the loop (the usual case: the stack copies a packet
// out and frees it within Receive), through a bottom half otherwise. A
// buffer of a QP that has been replaced is not reposted; the old QP's
// memory stays valid until the device closes (ib.Completion.Buf).
func (s *rxSlot) Release(*netdev.Buffer) {
	d := s.d
	if !d.loop.InHome() {
		_ = d.rxLate.Post(s) // refused once closed: nothing to repost to
		return
	}
	d.recycle(s)
}

// recycle queues s's buffer for reposting. Loop.
func (d *driver) recycle(s *rxSlot) {
	if !s.out {
		return // freed twice: the first Free gave it back
	}
	s.out = false
	if s.qp != d.qp || d.closed {
		return
	}
	d.repost = append(d.repost, s.id)
	if !d.polling {
		d.flushRepost()
	}
}

// recycleLate reposts the buffers freed off the loop. Loop.
func (d *driver) recycleLate(late []*rxSlot) {
	for _, s := range late {
		d.recycle(s)
	}
}

// flushRepost hands the queued receive buffers back to the QP in one
// call. Loop.
func (d *driver) flushRepost() {
	if len(d.repost) == 0 {
		return
	}
	if d.qp != nil && !d.closed {
		if err := d.qp.RepostRecv(d.repost...); err != nil {
			d.log.Warn("repost receive buffers", "err", err)
		}
	}
	d.repost = d.repost[:0]
}

// checkSource compares the LID a datagram came from with the path to its
// sender, whose key SetRxPeers just wrote into the header.
func (d *driver) checkSource(b *netdev.Buffer, wc *ib.Completion) {
	h := b.Bytes()
	p := d.cache.lookup(Key(h[SrcKeyOffset]))
	if p == nil {
		return
	}
	if path, ok := p.Path(); ok && path.LID != wc.SLID && !d.roce {
		d.pathMismatch(p, wc.SLID)
	}
}

// keyWithoutGRH keys a datagram that came without a GRH, so without the
// sender's GID: the sender is found by LID and QPN among the peers whose
// paths we resolved, else the frame goes up with no source key.
func (d *driver) keyWithoutGRH(b *netdev.Buffer, dst Addr, wc *ib.Completion) error {
	dp, err := d.cache.EnterAddr(dst)
	if err != nil {
		return fmt.Errorf("ipoib receive: destination: %w", err)
	}
	sk := NoKey
	if r, ok := d.byLID[lidKey(wc.SLID, wc.SrcQPN)]; ok {
		if p := d.cache.lookup(r.Key); p != nil && p.Ref() == r {
			d.cache.touch(r.Key)
			sk = r.Key
		}
	}
	return SetKeys(b, dp.key, sk)
}
