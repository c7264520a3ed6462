//go:build linux

package udp

// Control plane of the udp driver.
//
// Rule: every function in this file opens, closes, queries or configures,
// and runs on the device's home loop (it asserts so). The I/O methods are
// in io.go.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// Errors of the control plane.
var (
	// ErrNoSA says a MAD port was asked for: RoCE has no subnet manager
	// or subnet administrator; paths and groups resolve locally.
	ErrNoSA = errors.New("udp: RoCE port: there is no subnet manager or SA to send MADs to")
	// ErrNoIPv6 says multicast (or an IPv6 GID) was asked for on an
	// interface without an IPv6 link-local address: RoCEv2 sends an MGID
	// as an IPv6 multicast address, which needs one as the source.
	ErrNoIPv6 = errors.New("udp: interface has no IPv6 link-local address (RoCEv2 multicast is IPv6)")
)

// newDevice opens the sockets for info and registers them on loop.
func newDevice(loop *aio.Context, info *ifaceInfo) (_ *device, err error) {
	loop.AssertHome("udp open")
	d := &device{loop: loop, info: info,
		qps: map[ib.QPN]*qp{}, cqs: map[*cq]struct{}{}, groups: map[ib.GID]int{},
		tx4: -1, rx4: -1, tx6: -1, rx6: -1,
		// A random first QPN keeps two processes on one interface (which
		// share its address) apart, and restarts from reusing a QPN a
		// peer may still have cached.
		nextQPN: ib.QPN(0x100 + rand.IntN(0xF00000)),
	}
	d.slotSize = maxIPHeader + ib.UDPHeaderLen + udOverhead + 3 + max(info.mtu, ib.MTU4096.Bytes())
	defer func() {
		if err != nil {
			d.closeSockets()
		}
	}()
	v4 := info.v4.As4()
	d.src4 = info.v4.As16()
	if d.tx4, err = openSendSocket4(v4); err != nil {
		return nil, fmt.Errorf("udp %s: %w", info.name, err)
	}
	if d.rx4, err = openRawSocket4(v4); err != nil {
		return nil, fmt.Errorf("udp %s: %w", info.name, err)
	}
	if err = d.selfTest4(); err != nil {
		return nil, err
	}
	d.rxq4 = newRxRing(d.rx4, false, d.rxBufSize())
	d.txq4 = newTxQueue(d.tx4, false)
	if err = loop.SetFDHandler(d.rx4, aio.FDHandler{Read: func() { d.receive(d.rxq4) }}); err != nil {
		return nil, fmt.Errorf("udp %s: %w", info.name, err)
	}
	if info.hasLL {
		if err = d.openIPv6(); err != nil {
			return nil, err
		}
	}
	d.attr = d.info.portAttr(d.tx6 >= 0)
	d.linkTimer = loop.NewTimer("udp link "+info.name, d.checkLink)
	d.linkTimer.Reset(linkPollInterval)
	return d, nil
}

// rxBufSize is the size of a receive-batch buffer: the largest datagram
// the interface can carry, and room to rebuild an IPv6 header before it.
func (d *device) rxBufSize() int { return max(d.info.mtu, 1500) + maxIPHeader }

// openIPv6 opens the IPv6 sockets, bound to the interface's link-local
// address; it runs at open or once that address appears (checkLink).
func (d *device) openIPv6() error {
	info := d.info
	var err error
	d.src6 = info.ll.As16()
	if d.tx6, err = openSendSocket6(d.src6, info.index); err != nil {
		return fmt.Errorf("udp %s: %w", info.name, err)
	}
	if d.rx6, err = openRawSocket6(info.name); err != nil {
		unix.Close(d.tx6)
		d.tx6 = -1
		return fmt.Errorf("udp %s: %w", info.name, err)
	}
	d.rxq6 = newRxRing(d.rx6, true, d.rxBufSize())
	d.txq6 = newTxQueue(d.tx6, true)
	d.txq6.grow(len(d.txFree))
	if err = d.loop.SetFDHandler(d.rx6, aio.FDHandler{Read: func() { d.receive(d.rxq6) }}); err != nil {
		unix.Close(d.tx6)
		unix.Close(d.rx6)
		d.tx6, d.rx6, d.txq6, d.rxq6 = -1, -1, nil, nil
		return fmt.Errorf("udp %s: %w", info.name, err)
	}
	return nil
}

// linkPollInterval is how often the device reads its interface's state to
// report the port going ACTIVE or DOWN. A veth or a NIC may come up after
// the daemon started (carrier follows the peer); the IPoIB layer waits
// for the event. Polling once a second costs one netlink request and
// keeps the driver free of a netlink listener of its own.
const linkPollInterval = time.Second

// checkLink reads the interface's state and reports a change as a port
// event (the link timer).
func (d *device) checkLink() {
	if d.closed {
		return
	}
	defer d.linkTimer.Reset(linkPollInterval)
	ifc, err := net.InterfaceByName(d.info.name)
	up := err == nil && ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagRunning != 0
	d.info.up = up
	if up && d.tx6 < 0 {
		// The link-local address appears with the carrier.
		if now, err := lookupIface(ifc); err == nil && now.hasLL {
			d.info.ll, d.info.hasLL = now.ll, true
			if err := d.openIPv6(); err != nil {
				d.info.hasLL = false
			}
		}
	}
	was := d.attr.State
	d.attr = d.info.portAttr(d.tx6 >= 0)
	if d.attr.State == was {
		return
	}
	ev := ib.Event{Type: ib.EventPortDown, Port: 1}
	if d.attr.State == ib.PortActive {
		ev.Type = ib.EventPortActive
	}
	if d.handler != nil {
		d.handler(ev)
	}
}

// newRxRing prepares a receive batch of rxBatch buffers of bufSize bytes.
func newRxRing(fd int, v6 bool, bufSize int) *rxRing {
	r := &rxRing{fd: fd, v6: v6,
		hdrs: make([]unix.Mmsghdr, rxBatch), iovs: make([]unix.Iovec, rxBatch), bufs: make([][]byte, rxBatch)}
	slab := make([]byte, rxBatch*bufSize)
	ctrl := make([]byte, rxBatch*ctrlSize)
	r.ctrl = make([][]byte, rxBatch)
	if v6 {
		r.names = make([]unix.RawSockaddrInet6, rxBatch)
	}
	for i := range r.bufs {
		r.bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		r.ctrl[i] = ctrl[i*ctrlSize : (i+1)*ctrlSize : (i+1)*ctrlSize]
		r.hdrs[i].Hdr.Control = &r.ctrl[i][0]
		data := r.bufs[i]
		if v6 {
			data = data[maxIPHeader:] // room to rebuild the IPv6 header
			r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		}
		r.iovs[i].Base = &data[0]
		r.iovs[i].SetLen(len(data))
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.Iovlen = 1
	}
	return r
}

// newTxQueue prepares a send batch for fd.
func newTxQueue(fd int, v6 bool) *txQueue {
	return &txQueue{fd: fd, v6: v6, hdrs: make([]unix.Mmsghdr, txBatch), iovs: make([]unix.Iovec, txBatch)}
}

// closeSockets closes whatever sockets are open.
func (d *device) closeSockets() {
	for _, fd := range []*int{&d.rx4, &d.rx6, &d.tx4, &d.tx6} {
		if *fd >= 0 {
			_ = d.loop.SetFDHandler(*fd, aio.FDHandler{})
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// check fails once the device is closed.
func (d *device) check(op string) error {
	d.loop.AssertHome("udp " + op)
	if d.closed {
		return fmt.Errorf("udp %s: %s: %w", d.info.name, op, ib.ErrClosed)
	}
	return nil
}

// Name is the interface's name.
func (d *device) Name() string { return d.info.name }

// Driver is DriverName.
func (d *device) Driver() string { return DriverName }

// Loop is the device's home loop.
func (d *device) Loop() *aio.Context { return d.loop }

// NodeGUID is the EUI-64 of the interface's MAC address.
func (d *device) NodeGUID() ib.GUID { return d.info.nodeGID }

// NumPorts is 1.
func (d *device) NumPorts() int { return 1 }

// QueryPort reads the interface's MTU again. The state is the one the
// last port event reported (checkLink), so the two never disagree; the
// GID table keeps the addresses the sockets were bound to, which an
// address change on the interface does not move.
func (d *device) QueryPort(port int) (ib.PortAttr, error) {
	if err := d.check("QueryPort"); err != nil {
		return ib.PortAttr{}, err
	}
	if port != 1 {
		return ib.PortAttr{}, fmt.Errorf("udp %s: port %d: %w", d.info.name, port, ib.ErrNoPort)
	}
	if ifc, err := net.InterfaceByName(d.info.name); err == nil {
		d.info.mtu = min(ifc.MTU, d.slotSize-(maxIPHeader+ib.UDPHeaderLen+udOverhead+3), d.rxBufSize()-maxIPHeader)
		d.attr = d.info.portAttr(d.tx6 >= 0)
	}
	return d.attr, nil
}

// SetEventHandler installs fn for port events: EventPortActive and
// EventPortDown as the interface's state changes (checkLink).
func (d *device) SetEventHandler(fn func(ib.Event)) { d.handler = fn }

// CreateCQ creates a completion queue with room for depth completions.
func (d *device) CreateCQ(depth int) (ib.CompletionQueue, error) {
	if err := d.check("CreateCQ"); err != nil {
		return nil, err
	}
	if depth < 1 || depth > MaxQueueDepth {
		return nil, fmt.Errorf("udp %s: CQ depth %d (1 to %d): %w", d.info.name, depth, MaxQueueDepth, ib.ErrBadConfig)
	}
	c := &cq{dev: d, ring: ib.NewCompletionRing(depth)}
	c.bh = d.loop.NewBH("udp cq "+d.info.name, c.run)
	d.cqs[c] = struct{}{}
	return c, nil
}

// CreateUDQP creates a UD queue pair on port 1, ready to send.
func (d *device) CreateUDQP(cfg ib.QPConfig) (ib.QueuePair, error) {
	if err := d.check("CreateUDQP"); err != nil {
		return nil, err
	}
	fail := func(format string, a ...any) (ib.QueuePair, error) {
		return nil, fmt.Errorf("udp %s: create UD QP: "+format, append([]any{d.info.name}, a...)...)
	}
	if err := cfg.Validate(ib.QPLimits{Ports: 1, PKeys: len(d.attr.PKeys), MaxDepth: MaxQueueDepth,
		MaxRecvBufSize: MaxRecvBufSize, MaxRecvBytes: maxRecvBytes}); err != nil {
		return fail("%w", err)
	}
	scq, ok1 := cfg.SendCQ.(*cq)
	rcq, ok2 := cfg.RecvCQ.(*cq)
	if !ok1 || !ok2 || scq.dev != d || rcq.dev != d || scq.closed || rcq.closed {
		return fail("completion queues not from this device: %w", ib.ErrBadConfig)
	}
	for d.qps[d.nextQPN] != nil || d.nextQPN < 2 || d.nextQPN >= ib.QPNMulticast {
		d.nextQPN = (d.nextQPN + 1) & ib.QPNMask
	}
	q := &qp{dev: d, qpn: d.nextQPN, pkeyIndex: cfg.PKeyIndex, pkey: d.attr.PKeys[cfg.PKeyIndex], qkey: cfg.QKey,
		sendCQ: scq, recvCQ: rcq, sendDepth: cfg.SendDepth, bufSize: cfg.RecvBufSize,
		slab: make([]byte, cfg.RecvDepth*cfg.RecvBufSize), recv: ib.NewRecvQueue(cfg.RecvDepth, false)}
	d.nextQPN++
	scq.users++
	rcq.users++
	d.qps[q.qpn] = q
	// Send slots: one per send the QP may have outstanding.
	for range cfg.SendDepth {
		d.txFree = append(d.txFree, make([]byte, d.slotSize))
	}
	d.txq4.grow(cfg.SendDepth)
	if d.txq6 != nil {
		d.txq6.grow(cfg.SendDepth)
	}
	return q, nil
}

// grow makes room for n more queued datagrams, so that queueing never
// allocates.
func (t *txQueue) grow(n int) {
	if cap(t.items)-len(t.items) < n {
		items := make([]txItem, len(t.items), cap(t.items)+n)
		copy(items, t.items)
		t.items = items
	}
}

// CreateAH prepares the destination of sends: the IPv4 address of an
// IPv4-mapped DGID, else the DGID as an IPv6 address (scoped to the
// interface when link-local or multicast) sent from the interface's
// link-local address. That is how rdma_rxe turns a GID into an IP
// address (docs/protocol.md).
func (d *device) CreateAH(av ib.AddressVector) (ib.AddressHandle, error) {
	if err := d.check("CreateAH"); err != nil {
		return nil, err
	}
	fail := func(format string, a ...any) (ib.AddressHandle, error) {
		return nil, fmt.Errorf("udp %s: create AH: "+format, append([]any{d.info.name}, a...)...)
	}
	if err := av.Validate(ib.AVLimits{Ports: 1, GIDs: len(d.attr.GIDs), RoCE: true}); err != nil {
		return fail("%w", err)
	}
	a := &ah{dev: d, av: av, mcast: av.DGID.IsMulticast()}
	a.hdr.SrcPort = ib.RoCEv2Port
	a.hdr.Dst = av.DGID
	if av.DGID.IsIPv4Mapped() {
		if a.mcast || av.DGID[12] >= 224 {
			return fail("IPv4 multicast DGID %v: IPoIB groups are IPv6 MGIDs: %w", av.DGID, ib.ErrBadConfig)
		}
		a.hdr.Src = d.src4
		a.sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(ib.RoCEv2Port)}
		copy(a.sa4.Addr[:], av.DGID[12:])
		return a, nil
	}
	if d.tx6 < 0 {
		return fail("DGID %v: %w", av.DGID, ErrNoIPv6)
	}
	a.v6 = true
	a.hdr.V6 = true
	a.hdr.Src = d.src6
	a.sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(ib.RoCEv2Port), Addr: av.DGID}
	if a.mcast || (av.DGID[0] == 0xfe && av.DGID[1]&0xc0 == 0x80) {
		a.sa6.Scope_id = uint32(d.info.index)
	}
	return a, nil
}

// htons puts a port in network byte order, as socket addresses hold it.
func htons(p uint16) uint16 { return p<<8 | p>>8 }

// OpenMADPort fails with ErrNoSA: RoCE has no SA.
func (d *device) OpenMADPort(port int) (ib.MADPort, error) {
	if err := d.check("OpenMADPort"); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("udp %s port %d: %w", d.info.name, port, ErrNoSA)
}

// Close closes the sockets and everything created from the device.
func (d *device) Close() error {
	if err := d.check("Close"); err != nil {
		return err
	}
	for _, q := range d.qps {
		_ = q.Close()
	}
	for c := range d.cqs {
		c.closed = true
		c.bh.Delete()
	}
	d.linkTimer.Stop()
	d.closeSockets()
	d.closed = true
	return nil
}

// Counters returns the device's counts; safe from any goroutine.
func (d *device) Counters() Counters { return d.ctr.Load() }

// DriverCounters returns Counters by name (ib.CounterSource).
func (d *device) DriverCounters() counter.Snapshot { return d.ctr.Snapshot() }

// SetHandler installs fn to run on the loop when completions arrive.
func (c *cq) SetHandler(fn func()) {
	c.dev.loop.AssertHome("udp CQ.SetHandler")
	c.handler = fn
	if fn != nil && c.ring.Len() > 0 {
		c.bh.Schedule()
	}
}

// SetArming chooses when the CQ runs its handler: after every completion
// (ib.ArmAlways) or once per RequestNotify (ib.ArmOnDemand).
func (c *cq) SetArming(a ib.Arming) {
	c.dev.loop.AssertHome("udp CQ.SetArming")
	c.onDemand = a == ib.ArmOnDemand
}

// run calls the handler (the CQ's bottom half).
func (c *cq) run() {
	if c.handler != nil && !c.closed {
		c.handler()
	}
}

// Close destroys the CQ; it fails while a QP still uses it.
func (c *cq) Close() error {
	c.dev.loop.AssertHome("udp CQ.Close")
	if c.closed {
		return fmt.Errorf("udp: close CQ: %w", ib.ErrClosed)
	}
	if c.users > 0 {
		return fmt.Errorf("udp: close CQ: %d QPs still use it: %w", c.users, ib.ErrBadConfig)
	}
	c.closed = true
	c.bh.Delete()
	delete(c.dev.cqs, c)
	return nil
}

// QPN is the queue pair number.
func (q *qp) QPN() ib.QPN { return q.qpn }

// SetQKey changes the Q_Key incoming datagrams must carry.
func (q *qp) SetQKey(k ib.QKey) error {
	q.dev.loop.AssertHome("udp QP.SetQKey")
	if q.closed {
		return fmt.Errorf("udp: QP %v: %w", q.qpn, ib.ErrClosed)
	}
	q.qkey = k
	return nil
}

// AttachMcast makes the QP receive datagrams sent to mgid, and joins the
// IPv6 group mgid on the interface (the first QP to attach does), without
// which the kernel does not deliver the group's datagrams.
func (q *qp) AttachMcast(mgid ib.GID, _ ib.LID) error {
	d := q.dev
	if err := d.check("AttachMcast"); err != nil {
		return err
	}
	if q.closed {
		return fmt.Errorf("udp: attach QP %v: %w", q.qpn, ib.ErrClosed)
	}
	if !mgid.IsMulticast() {
		return fmt.Errorf("udp %s: attach QP %v to %v: not a multicast GID: %w", d.info.name, q.qpn, mgid, ib.ErrBadConfig)
	}
	if d.tx6 < 0 {
		return fmt.Errorf("udp %s: attach QP %v to %v: %w", d.info.name, q.qpn, mgid, ErrNoIPv6)
	}
	for _, g := range q.groups {
		if g == mgid {
			return nil
		}
	}
	if d.groups[mgid] == 0 {
		mr := unix.IPv6Mreq{Multiaddr: mgid, Interface: uint32(d.info.index)}
		if err := unix.SetsockoptIPv6Mreq(d.tx6, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &mr); err != nil {
			return fmt.Errorf("udp %s: join IPv6 group %v: %w", d.info.name, mgid, err)
		}
	}
	d.groups[mgid]++
	q.groups = append(q.groups, mgid)
	return nil
}

// DetachMcast undoes AttachMcast.
func (q *qp) DetachMcast(mgid ib.GID, _ ib.LID) error {
	d := q.dev
	d.loop.AssertHome("udp QP.DetachMcast")
	for i, g := range q.groups {
		if g != mgid {
			continue
		}
		q.groups = append(q.groups[:i], q.groups[i+1:]...)
		if d.groups[mgid]--; d.groups[mgid] == 0 {
			delete(d.groups, mgid)
			if d.tx6 >= 0 {
				mr := unix.IPv6Mreq{Multiaddr: mgid, Interface: uint32(d.info.index)}
				if err := unix.SetsockoptIPv6Mreq(d.tx6, unix.IPPROTO_IPV6, unix.IPV6_LEAVE_GROUP, &mr); err != nil {
					return fmt.Errorf("udp %s: leave IPv6 group %v: %w", d.info.name, mgid, err)
				}
			}
		}
		return nil
	}
	return fmt.Errorf("udp %s: QP %v is not attached to %v: %w", d.info.name, q.qpn, mgid, ib.ErrBadConfig)
}

// Close destroys the QP: it leaves its groups, and datagrams queued for
// it are dropped.
func (q *qp) Close() error {
	d := q.dev
	d.loop.AssertHome("udp QP.Close")
	if q.closed {
		return fmt.Errorf("udp: close QP %v: %w", q.qpn, ib.ErrClosed)
	}
	for len(q.groups) > 0 {
		_ = q.DetachMcast(q.groups[0], 0)
	}
	q.closed = true
	delete(d.qps, q.qpn)
	q.sendCQ.users--
	q.recvCQ.users--
	return nil
}

// AddressVector returns what the handle was created from.
func (a *ah) AddressVector() ib.AddressVector { return a.av }

// Destroy releases the handle.
func (a *ah) Destroy() error {
	a.dev.loop.AssertHome("udp AH.Destroy")
	if a.destroyed {
		return fmt.Errorf("udp: destroy AH: %w", ib.ErrClosed)
	}
	a.destroyed = true
	return nil
}
