// Data plane of the endpoint: transmit and receive.
//
// The rule of this room: WritePackets runs on whatever goroutine gVisor
// sends from and touches only the mutex-guarded input ring and atomics;
// drainTx and receive run on the device's loop, as the netdev data path
// requires, and touch the loop-owned output ring and batch. Nothing here
// blocks, and once warm nothing here allocates: packets are copied into
// buffers of the device's pool, queued in fixed rings, and errors are
// counted rather than built.

package stack

import (
	"bytes"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/netdev"
)

// Ethernet multicast prefixes gVisor still hands a link endpoint for
// groups it resolves itself (IGMP reports, IPv6 solicited-node groups).
const (
	// ethIPv4MulticastPrefix is 01:00:5e, the IANA OUI under which the
	// low 23 bits of an IPv4 group form an Ethernet address (RFC 1112
	// section 6.4).
	ethIPv4MulticastPrefix = "\x01\x00\x5e"
	// ethIPv6MulticastPrefix is 33:33, followed by the low 32 bits of an
	// IPv6 group (RFC 2464 section 7).
	ethIPv6MulticastPrefix = "\x33\x33"
	// ethAddrLen is an Ethernet address's length.
	ethAddrLen = 6
)

// WritePackets implements stack.LinkWriter. Safe from any goroutine. Each
// packet's link destination is mapped to a device address and the packet
// (a reference, not a copy) is appended to the transmit queue; then the
// transmit bottom half is scheduled. It returns how many packets were
// queued and, if not all, why the first refused one was (counted in
// Stats).
func (e *Endpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	var (
		n    int
		ferr tcpip.Error
	)
	for _, pkt := range pkts.AsSlice() {
		if err := e.enqueue(pkt); err != nil {
			if ferr == nil {
				ferr = err
			}
			continue
		}
		n++
	}
	if n > 0 {
		// An idle loop sends at once, on this goroutine; a busy one picks
		// the packets up on its next pass.
		e.txBH.ScheduleNow()
	}
	return n, ferr
}

// enqueue appends pkt to the transmit queue.
func (e *Endpoint) enqueue(pkt *gvstack.PacketBuffer) tcpip.Error {
	if e.closed.Load() {
		counter.Inc(&e.stats.V.TxClosed)
		return &tcpip.ErrClosedForSend{}
	}
	e.txMu.Lock()
	if e.closed.Load() {
		// Close's drain may already have run; whatever it missed would
		// stay in the queue for good.
		e.txMu.Unlock()
		counter.Inc(&e.stats.V.TxClosed)
		return &tcpip.ErrClosedForSend{}
	}
	if e.txLen == len(e.txq) && !e.growTx() {
		e.txMu.Unlock()
		counter.Inc(&e.stats.V.TxQueueFull)
		return &tcpip.ErrNoBufferSpace{}
	}
	// The destination is mapped straight into the slot: a local array
	// would escape through the link protocol's interface.
	ent := &e.txq[(e.txHead+e.txLen)%len(e.txq)]
	dlen, ok := e.linkDst(pkt, &ent.dst)
	if !ok {
		e.txMu.Unlock()
		counter.Inc(&e.stats.V.TxBadAddr)
		return &tcpip.ErrBadAddress{}
	}
	ent.pkt, ent.proto, ent.dlen = pkt.IncRef(), uint16(pkt.NetworkProtocolNumber), uint8(dlen)
	e.txLen++
	e.txMu.Unlock()
	counter.Inc(&e.stats.V.TxQueued)
	return nil
}

// growTx moves the transmit queue into a ring twice the size, up to
// txMax, and reports whether it did. txMu is held. The slots the bottom
// half has claimed are not copied, since it may be reading or clearing
// them: it reads them from the ring it took, and the new ring leaves
// their places (its first txClaimed slots) empty for the head to move
// past. It allocates, once per doubling in the endpoint's life.
func (e *Endpoint) growTx() bool {
	old := len(e.txq)
	if old >= e.txMax {
		return false
	}
	q := make([]txEntry, min(2*old, e.txMax))
	for i := e.txClaimed; i < e.txLen; i++ {
		q[i] = e.txq[(e.txHead+i)%old]
	}
	e.txq, e.txHead = q, 0
	return true
}

// copyPacket copies the whole of pkt (headers and data) into dst, which
// is pkt.Size() bytes long, walking gVisor's view list rather than asking
// for a slice of slices, which would allocate.
func copyPacket(dst []byte, pkt *gvstack.PacketBuffer) {
	vl, skip := pkt.AsViewList()
	for v := vl.Front(); v != nil && len(dst) > 0; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		dst = dst[copy(dst, s):]
	}
}

// linkDst puts the device address pkt goes to in dst and returns its
// length. Device-length addresses pass through. A 6-byte Ethernet
// address, which gVisor uses for subnet broadcasts and for groups it
// resolves itself, is mapped: ff:ff:ff:ff:ff:ff to the link broadcast,
// 01:00:5e:.. and 33:33:.. to the link address of the packet's IP
// destination group, after checking that the group agrees with the bits
// the Ethernet address kept.
func (e *Endpoint) linkDst(pkt *gvstack.PacketBuffer, dst *[maxLinkAddrLen]byte) (int, bool) {
	ra := pkt.EgressRoute.RemoteLinkAddress
	al := e.link.AddrLen()
	switch {
	case len(ra) == al:
		return copy(dst[:], ra), true
	case len(ra) != ethAddrLen:
		return 0, false
	case ra == header.EthernetBroadcastAddress:
		bc := e.link.Broadcast()
		if len(bc) != al {
			return 0, false
		}
		return copy(dst[:], bc), true
	}
	var group tcpip.Address
	nh := pkt.NetworkHeader().Slice()
	switch {
	case string(ra[:3]) == ethIPv4MulticastPrefix && pkt.NetworkProtocolNumber == header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return 0, false
		}
		group = header.IPv4(nh).DestinationAddress()
		g := group.As4()
		if !header.IsV4MulticastAddress(group) || g[1]&0x7f != ra[3] || g[2] != ra[4] || g[3] != ra[5] {
			return 0, false
		}
	case string(ra[:2]) == ethIPv6MulticastPrefix && pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber:
		if len(nh) < header.IPv6MinimumSize {
			return 0, false
		}
		group = header.IPv6(nh).DestinationAddress()
		g := group.As16()
		if !header.IsV6MulticastAddress(group) || string(g[12:]) != string(ra[2:]) {
			return 0, false
		}
	default:
		return 0, false
	}
	mapped, err := e.link.Multicast(addrFromTCPIP(group), dst[:0])
	if err != nil || len(mapped) != al || &mapped[0] != &dst[0] {
		return 0, false
	}
	return al, true
}

// drainTx is the transmit bottom half. It takes as many queued packets
// as the device's transmit queue has room for, copies each into a device
// buffer (the one copy on the way down), releases gVisor's reference and
// hands the lot to the device in one batch. If packets remain, it runs
// again on the loop's next pass, by which time the driver has had a
// chance to complete some. After Close it only releases the packets.
func (e *Endpoint) drainTx() {
	if e.closed.Load() {
		e.txMu.Lock()
		for ; e.txLen > 0; e.txLen-- {
			ent := &e.txq[e.txHead]
			ent.pkt.DecRef()
			ent.pkt = nil
			e.txHead = (e.txHead + 1) % len(e.txq)
		}
		e.txMu.Unlock()
		return
	}
	room := min(e.dev.TxQueueLen()-e.dev.TxQueued(), cap(e.txBatch))
	e.txMu.Lock()
	q, head, n := e.txq, e.txHead, min(e.txLen, room)
	pending := e.txLen > 0
	e.txClaimed = max(n, 0)
	e.txMu.Unlock()
	if n <= 0 {
		if pending {
			e.txBH.Schedule()
		}
		return
	}
	// Slots head..head+n of q stay ours until the head moves past them,
	// so they are read without the lock, and the batch may point into
	// them; a producer that grows the queue meanwhile leaves them in q.
	batch := e.txBatch[:0]
	for i := range n {
		ent := &q[(head+i)%len(q)]
		pkt := ent.pkt
		ent.pkt = nil
		b, ok := e.copyOut(pkt)
		pkt.DecRef()
		if !ok {
			continue
		}
		dst := ent.dst[:ent.dlen]
		if e.tap != nil {
			e.tap.transmit(e, dst, ent.proto, b.Bytes())
		}
		batch = append(batch, netdev.Packet{Buf: b, Dst: dst, Proto: ent.proto})
	}
	if len(batch) > 0 {
		sent, _ := e.dev.TransmitBatch(batch)
		counter.Add(&e.stats.V.TxSent, uint64(sent))
		if d := len(batch) - sent; d > 0 {
			counter.Add(&e.stats.V.TxDevice, uint64(d))
		}
		clear(batch)
	}
	e.txBatch = batch[:0]
	e.txMu.Lock()
	e.txHead = (e.txHead + n) % len(e.txq)
	e.txLen -= n
	e.txClaimed = 0
	more := e.txLen > 0
	e.txMu.Unlock()
	if more {
		e.txBH.Schedule()
	}
}

// copyOut copies pkt into a fresh device buffer, counting why when it
// cannot.
func (e *Endpoint) copyOut(pkt *gvstack.PacketBuffer) (*netdev.Buffer, bool) {
	b, err := e.dev.AllocBuffer()
	if err != nil {
		counter.Inc(&e.stats.V.TxNoBuffer)
		return nil, false
	}
	size := pkt.Size()
	if size > b.Tailroom() {
		b.Free()
		counter.Inc(&e.stats.V.TxTooBig)
		return nil, false
	}
	data, _ := b.Put(size) // cannot fail: checked against the tailroom
	copyPacket(data, pkt)
	return b, true
}

// receive is the device's Receiver: it runs on the loop for every frame
// the device accepted, copies the packet into a gVisor packet buffer,
// frees the device buffer and delivers the packet to the stack.
func (e *Endpoint) receive(_ *netdev.Device, b *netdev.Buffer, proto uint16, dst, src []byte) {
	ref := e.dispatcher.Load()
	if ref == nil || e.closed.Load() {
		counter.Inc(&e.stats.V.RxDropped)
		b.Free()
		return
	}
	if e.tap != nil {
		e.tap.receive(e, b, proto, dst, src)
	}
	if !e.admit(proto, b.Bytes()) {
		counter.Inc(&e.stats.V.RxFiltered)
		b.Free()
		return
	}
	coalesce := e.groBH != nil && coalescible(proto, b.Bytes())
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		Payload: buffer.MakeWithData(b.Bytes()),
	})
	b.Free()
	pkt.PktType = e.packetType(dst)
	if coalesce {
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		e.coalesce(ref.d, pkt)
	} else {
		ref.d.DeliverNetworkPacket(tcpip.NetworkProtocolNumber(proto), pkt)
	}
	pkt.DecRef()
	counter.Inc(&e.stats.V.RxDelivered)
}

// packetType classifies a frame by its link destination, which ARP needs
// to tell a solicited (unicast) reply from a gratuitous broadcast one.
func (e *Endpoint) packetType(dst []byte) tcpip.PacketType {
	if bytes.Equal(dst, e.link.Broadcast()) {
		return tcpip.PacketBroadcast
	}
	if isMulticastLinkAddr(dst) {
		return tcpip.PacketMulticast
	}
	return tcpip.PacketHost
}

// isMulticastLinkAddr reports whether a names a group: for IPoIB, QPN
// 0xFFFFFF with a multicast GID (RFC 4391 section 4); for 6-byte
// addresses, the Ethernet group bit.
func isMulticastLinkAddr(a []byte) bool {
	switch len(a) {
	case ipoib.AddrLen:
		return a[1] == 0xff && a[2] == 0xff && a[3] == 0xff && a[4] == 0xff
	case ethAddrLen:
		return a[0]&1 != 0
	}
	return false
}
