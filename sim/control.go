package sim

// Control plane of the simulated devices.
//
// Rule: every method in this file opens, closes, queries or configures a
// device or an object made from it, and runs on the device's home loop
// (the aio.Context given to Host.Open); each asserts it with
// loop.AssertHome. Another goroutine must hop onto that loop first. The
// fabric's own control calls (building the topology, faults, SM, links)
// are in fabric.go, sm.go and faults.go and run on the fabric's loop. The
// data path is in io.go.

import (
	"fmt"
	"slices"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// Open opens the host as an ib.Device whose control and I/O methods
// belong to loop, which may differ from the fabric's loop. Several
// devices may be open on one host; each sees the host's port events.
func (h *Host) Open(loop *aio.Context) (ib.Device, error) {
	if loop == nil {
		return nil, fmt.Errorf("sim: open %s: nil loop: %w", h.name, ib.ErrBadConfig)
	}
	loop.AssertHome("sim.Host.Open")
	if h.f.closed.Load() {
		return nil, fmt.Errorf("sim: open %s/%s: %w", h.f.name, h.name, ib.ErrClosed)
	}
	d := &device{h: h, loop: loop, name: h.f.name + "/" + h.name}
	d.events = aio.NewMailbox(loop, "sim events "+d.name, d.runEvents)
	h.mu.Lock()
	h.devices = append(h.devices, d)
	h.mu.Unlock()
	return d, nil
}

// check asserts the loop and that the device is open and has not failed.
func (d *device) check(op string) error {
	d.loop.AssertHome("sim device." + op)
	if d.closed {
		return fmt.Errorf("sim: %s on %s: %w", op, d.name, ib.ErrClosed)
	}
	if d.dead.Load() {
		return fmt.Errorf("sim: %s on %s: %w", op, d.name, ib.ErrDeviceFatal)
	}
	return nil
}

// Name returns "<fabric>/<host>", the name the driver probes.
func (d *device) Name() string { return d.name }

// Driver returns DriverName.
func (d *device) Driver() string { return DriverName }

// Loop returns the device's home loop.
func (d *device) Loop() *aio.Context { return d.loop }

// NodeGUID returns the host's node GUID.
func (d *device) NodeGUID() ib.GUID { return d.h.guid }

// NumPorts returns the host's port count.
func (d *device) NumPorts() int { return d.h.NumPorts() }

// QueryPort snapshots a port.
func (d *device) QueryPort(num int) (ib.PortAttr, error) {
	if err := d.check("QueryPort"); err != nil {
		return ib.PortAttr{}, err
	}
	return d.h.Port(num)
}

// SetEventHandler installs the port event handler.
func (d *device) SetEventHandler(fn func(ib.Event)) {
	d.loop.AssertHome("sim device.SetEventHandler")
	d.handler = fn
}

// CreateCQ creates a completion queue of depth entries. Completions that
// find it full are lost and counted as DropCQOverflow, so size it for the
// send and receive depths of the QPs that share it, as with verbs.
func (d *device) CreateCQ(depth int) (ib.CompletionQueue, error) {
	if err := d.check("CreateCQ"); err != nil {
		return nil, err
	}
	if depth < 1 || depth > MaxQueueDepth {
		return nil, fmt.Errorf("sim: create CQ on %s: depth %d (1..%d): %w", d.name, depth, MaxQueueDepth, ib.ErrBadConfig)
	}
	c := &cq{dev: d, loop: d.loop, ring: ib.NewCompletionRing(depth)}
	c.bh = d.loop.NewBH("sim cq "+d.name, c.run)
	d.cqs = append(d.cqs, c)
	return c, nil
}

// ownCQ returns c as one of d's live CQs.
func (d *device) ownCQ(c ib.CompletionQueue) (*cq, bool) {
	s, ok := c.(*cq)
	return s, ok && s != nil && s.dev == d && !s.gone
}

// CreateUDQP creates a UD QP, ready to send, with every receive buffer
// posted. The buffers are allocated here, once; completions lend them out
// until RepostRecv.
func (d *device) CreateUDQP(cfg ib.QPConfig) (ib.QueuePair, error) {
	if err := d.check("CreateUDQP"); err != nil {
		return nil, err
	}
	h := d.h
	fail := func(format string, args ...any) (ib.QueuePair, error) {
		return nil, fmt.Errorf("sim: create UD QP on %s: "+format, append([]any{d.name}, args...)...)
	}
	npk := 0
	if cfg.Port >= 1 && cfg.Port <= h.NumPorts() {
		h.mu.RLock()
		npk = len(h.ports[cfg.Port].pkeys)
		h.mu.RUnlock()
	}
	if err := cfg.Validate(ib.QPLimits{Ports: h.NumPorts(), PKeys: npk, MaxDepth: MaxQueueDepth,
		MaxRecvBufSize: MaxRecvBufSize, MaxRecvBytes: maxRecvBytes}); err != nil {
		return fail("%w", err)
	}
	scq, ok1 := d.ownCQ(cfg.SendCQ)
	rcq, ok2 := d.ownCQ(cfg.RecvCQ)
	if !ok1 || !ok2 {
		return fail("send or receive CQ is not a live CQ of this device: %w", ib.ErrBadConfig)
	}
	p := h.ports[cfg.Port]
	q := &qp{
		dev:       d,
		h:         h,
		port:      p,
		pkeyIndex: cfg.PKeyIndex,
		sendDepth: cfg.SendDepth,
		sendCQ:    scq,
		recvCQ:    rcq,
		payload:   make([]byte, 0, maxFrameLen),
		bufSize:   cfg.RecvBufSize,
		slab:      make([]byte, cfg.RecvDepth*cfg.RecvBufSize),
		// The buffer posted last is used first: see ib.NewRecvQueue; in
		// a 1024-host fabric, taking them in order would touch every
		// page of 1024 receive rings, half a gigabyte.
		recv: ib.NewRecvQueue(cfg.RecvDepth, true),
	}
	q.qkey.Store(uint32(cfg.QKey))
	h.mu.Lock()
	for h.qps[h.nextQPN] != nil || h.nextQPN < firstQPN || h.nextQPN >= ib.QPNMulticast {
		h.nextQPN++
		if h.nextQPN >= ib.QPNMulticast {
			h.nextQPN = firstQPN
		}
	}
	q.qpn = h.nextQPN
	h.nextQPN++
	h.qps[q.qpn] = q
	h.mu.Unlock()
	scq.users++
	rcq.users++
	d.qps = append(d.qps, q)
	return q, nil
}

// QPN returns the queue pair number.
func (q *qp) QPN() ib.QPN { return q.qpn }

// SetQKey changes the Q_Key incoming datagrams must carry. The fabric loop
// reads it atomically, so the change applies to the next packet.
func (q *qp) SetQKey(k ib.QKey) error {
	q.dev.loop.AssertHome("sim QP.SetQKey")
	if q.gone {
		return fmt.Errorf("sim: set Q_Key of QP %v: %w", q.qpn, ib.ErrClosed)
	}
	q.qkey.Store(uint32(k))
	return nil
}

// AttachMcast makes the QP receive datagrams for (mgid, mlid). Like an
// HCA, the simulator does not check that the port joined the group: that
// is the SA's business, and without a join the switches never forward the
// group's packets here (except the port's own, which loop back).
func (q *qp) AttachMcast(mgid ib.GID, mlid ib.LID) error {
	q.dev.loop.AssertHome("sim QP.AttachMcast")
	if q.gone {
		return fmt.Errorf("sim: attach QP %v to %v: %w", q.qpn, mgid, ib.ErrClosed)
	}
	if !mgid.IsMulticast() || !mlid.IsMulticast() {
		return fmt.Errorf("sim: attach QP %v to %v/%v: not a multicast GID and LID: %w", q.qpn, mgid, mlid, ib.ErrBadConfig)
	}
	h := q.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if q.attachedTo(mgid, mlid) {
		return nil
	}
	q.groups = append(q.groups, mcAttach{mgid, mlid})
	if q.port.attach == nil {
		q.port.attach = make(map[ib.LID][]*qp)
	}
	if !slices.Contains(q.port.attach[mlid], q) {
		q.port.attach[mlid] = append(q.port.attach[mlid], q)
	}
	return nil
}

// DetachMcast undoes AttachMcast.
func (q *qp) DetachMcast(mgid ib.GID, mlid ib.LID) error {
	q.dev.loop.AssertHome("sim QP.DetachMcast")
	if q.gone {
		return fmt.Errorf("sim: detach QP %v from %v: %w", q.qpn, mgid, ib.ErrClosed)
	}
	h := q.h
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.Index(q.groups, mcAttach{mgid, mlid})
	if i < 0 {
		return fmt.Errorf("sim: detach QP %v from %v/%v: not attached: %w", q.qpn, mgid, mlid, ErrNotFound)
	}
	q.groups = slices.Delete(q.groups, i, i+1)
	q.unlinkLocked(mlid)
	return nil
}

// unlinkLocked drops q from the port's attach list for mlid when it has no
// other attachment with that MLID. The caller holds h.mu.
func (q *qp) unlinkLocked(mlid ib.LID) {
	for _, a := range q.groups {
		if a.mlid == mlid {
			return
		}
	}
	l := q.port.attach[mlid]
	if i := slices.Index(l, q); i >= 0 {
		l = slices.Delete(l, i, i+1)
	}
	if len(l) == 0 {
		delete(q.port.attach, mlid)
	} else {
		q.port.attach[mlid] = l
	}
}

// Close destroys the QP. Posted receive buffers complete with
// ib.StatusFlushed now; sends still queued in the fabric complete with it
// when the fabric reaches them.
func (q *qp) Close() error {
	q.dev.loop.AssertHome("sim QP.Close")
	if q.gone {
		return fmt.Errorf("sim: close QP %v: %w", q.qpn, ib.ErrClosed)
	}
	q.close()
	d := q.dev
	d.qps = slices.DeleteFunc(d.qps, func(x *qp) bool { return x == q })
	return nil
}

func (q *qp) close() {
	q.gone = true
	h := q.h
	h.mu.Lock()
	delete(h.qps, q.qpn)
	groups := q.groups
	q.groups = nil
	for _, a := range groups {
		q.unlinkLocked(a.mlid)
	}
	h.mu.Unlock()
	q.mu.Lock()
	q.closed = true
	for id, ok := q.recv.Next(); ok; id, ok = q.recv.Next() {
		q.recv.Lend()
		wc := ib.Completion{ID: uint64(id), Kind: ib.WorkRecv, Status: ib.StatusFlushed, QPN: q.qpn}
		q.recvCQ.push(&wc)
	}
	q.mu.Unlock()
	q.sendCQ.users--
	q.recvCQ.users--
}

// SetHandler installs the completion handler, run on the loop after
// completions arrive.
func (c *cq) SetHandler(fn func()) {
	c.loop.AssertHome("sim CQ.SetHandler")
	c.handler = fn
	if fn != nil {
		c.mu.Lock()
		pending := c.ring.Len() > 0
		c.mu.Unlock()
		if pending {
			c.bh.Schedule()
		}
	}
}

// SetArming chooses when the CQ runs its handler: after completions
// arrive (ib.ArmAlways) or once per RequestNotify (ib.ArmOnDemand).
func (c *cq) SetArming(a ib.Arming) {
	c.loop.AssertHome("sim CQ.SetArming")
	c.mu.Lock()
	c.onDemand = a == ib.ArmOnDemand
	c.mu.Unlock()
}

// Close destroys the CQ; it fails with ErrBusy while a QP uses it.
func (c *cq) Close() error {
	c.loop.AssertHome("sim CQ.Close")
	if c.gone {
		return fmt.Errorf("sim: close CQ: %w", ib.ErrClosed)
	}
	if c.users > 0 {
		return fmt.Errorf("sim: close CQ: %d QPs still use it: %w", c.users, ErrBusy)
	}
	c.close()
	d := c.dev
	d.cqs = slices.DeleteFunc(d.cqs, func(x *cq) bool { return x == c })
	return nil
}

func (c *cq) close() {
	c.gone = true
	c.bh.Delete()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// CreateAH checks an address vector and prepares it for sends. Multicast
// DLIDs need a multicast DGID, because every multicast packet carries a
// GRH.
func (d *device) CreateAH(av ib.AddressVector) (ib.AddressHandle, error) {
	if err := d.check("CreateAH"); err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (ib.AddressHandle, error) {
		return nil, fmt.Errorf("sim: create AH on %s: "+format, append([]any{d.name}, args...)...)
	}
	ngid := 0
	if av.Port >= 1 && av.Port <= d.h.NumPorts() {
		d.h.mu.RLock()
		ngid = len(d.h.ports[av.Port].gids)
		d.h.mu.RUnlock()
	}
	if err := av.Validate(ib.AVLimits{Ports: d.h.NumPorts(), GIDs: ngid}); err != nil {
		return fail("%w", err)
	}
	return &ah{dev: d, av: av}, nil
}

// AddressVector returns what the handle was made from.
func (a *ah) AddressVector() ib.AddressVector { return a.av }

// Destroy releases the handle; sends using it afterwards fail.
func (a *ah) Destroy() error {
	if a.destroyed.Swap(true) {
		return fmt.Errorf("sim: destroy AH: %w", ib.ErrClosed)
	}
	return nil
}

// OpenMADPort opens QP1 of a port. One MAD port per host port may be open
// at a time. SA requests the port sends reach the SA through the fabric;
// MADs arriving for QP1 (SA answers) go to the handler.
func (d *device) OpenMADPort(num int) (ib.MADPort, error) {
	if err := d.check("OpenMADPort"); err != nil {
		return nil, err
	}
	if num < 1 || num > d.h.NumPorts() {
		return nil, fmt.Errorf("sim: open MAD port %d on %s: %w", num, d.name, ib.ErrNoPort)
	}
	p := d.h.ports[num]
	m := &madPort{dev: d, port: p}
	m.bh = d.loop.NewBH("sim mad "+d.name, m.run)
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	if p.madPort != nil {
		return nil, fmt.Errorf("sim: open MAD port %d on %s: %w", num, d.name, ErrPortInUse)
	}
	p.madPort = m
	d.mads = append(d.mads, m)
	return m, nil
}

// SetHandler installs the handler incoming MADs are given to.
func (m *madPort) SetHandler(fn func(src ib.MADAddress, mad []byte)) {
	m.dev.loop.AssertHome("sim MADPort.SetHandler")
	m.handler = fn
	if fn != nil {
		m.bh.Schedule()
	}
}

// Close releases QP1 of the port; MADs for it are dropped as DropNoQP.
func (m *madPort) Close() error {
	m.dev.loop.AssertHome("sim MADPort.Close")
	if m.gone {
		return fmt.Errorf("sim: close MAD port: %w", ib.ErrClosed)
	}
	m.close()
	d := m.dev
	d.mads = slices.DeleteFunc(d.mads, func(x *madPort) bool { return x == m })
	return nil
}

func (m *madPort) close() {
	m.gone = true
	m.bh.Delete()
	h := m.dev.h
	h.mu.Lock()
	if m.port.madPort == m {
		m.port.madPort = nil
	}
	h.mu.Unlock()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
}

// Close closes every QP, MAD port and CQ made from the device and stops
// its events. It works on a failed device too (Host.FailDevices).
func (d *device) Close() error {
	d.loop.AssertHome("sim device.Close")
	if d.closed {
		return fmt.Errorf("sim: Close on %s: %w", d.name, ib.ErrClosed)
	}
	for _, q := range d.qps {
		q.close()
	}
	for _, m := range d.mads {
		m.close()
	}
	for _, c := range d.cqs {
		c.close()
	}
	d.qps, d.mads, d.cqs = nil, nil, nil
	d.closed = true
	d.events.Close()
	h := d.h
	h.mu.Lock()
	h.devices = slices.DeleteFunc(h.devices, func(x *device) bool { return x == d })
	h.mu.Unlock()
	return nil
}
