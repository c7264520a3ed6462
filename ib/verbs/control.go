//go:build linux && cgo && !noverbs

package verbs

// Control plane of the verbs driver.
//
// Rule: every method in this file opens, closes, queries or configures a
// device or an object made from it, and runs on the device's home loop
// (the aio.Context given to Open); each asserts it with loop.AssertHome.
// Another goroutine must hop onto that loop first (a bottom half). These
// calls may allocate and may make system calls that take milliseconds
// (creating a QP, registering memory). The data path is in io.go.

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// check asserts the loop and that the device is open.
func (d *device) check(op string) error {
	d.loop.AssertHome("verbs device." + op)
	if d.closed {
		return fmt.Errorf("verbs: %s on %s: %w", op, d.name, ib.ErrClosed)
	}
	return nil
}

// Name returns the libibverbs device name ("mlx5_0", "rxe0").
func (d *device) Name() string { return d.name }

// Driver returns DriverName.
func (d *device) Driver() string { return DriverName }

// Loop returns the device's home loop.
func (d *device) Loop() *aio.Context { return d.loop }

// NodeGUID returns the HCA's node GUID.
func (d *device) NodeGUID() ib.GUID { return d.guid }

// NumPorts returns the number of physical ports.
func (d *device) NumPorts() int { return d.nports }

// QueryPort asks the device for a fresh snapshot of a port, GID and P_Key
// tables included.
func (d *device) QueryPort(port int) (ib.PortAttr, error) {
	if err := d.check("QueryPort"); err != nil {
		return ib.PortAttr{}, err
	}
	if port < 1 || port > d.nports {
		return ib.PortAttr{}, fmt.Errorf("verbs: query port %d of %s: %w", port, d.name, ib.ErrNoPort)
	}
	gids, err := gidTable(d.ctx)
	if err != nil {
		return ib.PortAttr{}, fmt.Errorf("verbs: %s: %w", d.name, err)
	}
	a, err := queryPort(d.ctx, port, gids)
	if err != nil {
		return ib.PortAttr{}, fmt.Errorf("verbs: %s: %w", d.name, err)
	}
	return a, nil
}

// SetEventHandler installs the port event handler (nil removes it).
func (d *device) SetEventHandler(fn func(ib.Event)) {
	d.loop.AssertHome("verbs device.SetEventHandler")
	d.handler = fn
}

// CreateCQ creates a completion queue with its own completion channel and
// puts the channel's fd on the loop. The CQ holds depth completions; size
// it for the send and receive depths of the QPs that share it, because a
// CQ that overflows is an error the HCA reports as fatal to the QPs.
func (d *device) CreateCQ(depth int) (ib.CompletionQueue, error) {
	if err := d.check("CreateCQ"); err != nil {
		return nil, err
	}
	if depth < 1 || depth > MaxQueueDepth {
		return nil, fmt.Errorf("verbs: create CQ on %s: depth %d (1..%d): %w", d.name, depth, MaxQueueDepth, ib.ErrBadConfig)
	}
	ch, err := C.ipo_create_comp_channel(d.ctx)
	if ch == nil {
		return nil, fmt.Errorf("verbs: create completion channel on %s: %w", d.name, errnoOr(err))
	}
	c := &cq{dev: d, ch: ch, fd: int(C.ipo_comp_channel_fd(ch)), depth: depth}
	fail := func(err error) (ib.CompletionQueue, error) {
		if c.cq != nil {
			C.ipo_destroy_cq(c.cq)
		}
		C.ipo_destroy_comp_channel(ch)
		return nil, err
	}
	if err := unix.SetNonblock(c.fd, true); err != nil {
		return fail(fmt.Errorf("verbs: %s: make completion channel non-blocking: %w", d.name, err))
	}
	raw, err := C.ipo_create_cq(d.ctx, C.int(depth), ch)
	if raw == nil {
		return fail(fmt.Errorf("verbs: create CQ of depth %d on %s: %w", depth, d.name, errnoOr(err)))
	}
	c.cq = raw
	if rc := C.ipo_req_notify_cq(raw); rc != 0 {
		return fail(fmt.Errorf("verbs: %s: arm CQ notification: %w", d.name, rcErr(rc)))
	}
	c.armed = true
	if err := d.loop.SetFDHandler(c.fd, aio.FDHandler{Read: c.channelReady}); err != nil {
		return fail(fmt.Errorf("verbs: %s: watch completion channel: %w", d.name, err))
	}
	c.bh = d.loop.NewBH("verbs cq "+d.name, c.run)
	c.rearmBH = d.loop.NewBH("verbs cq re-arm "+d.name, c.rearm)
	d.cqs = append(d.cqs, c)
	return c, nil
}

// ownCQ returns c as one of d's live CQs.
func (d *device) ownCQ(c ib.CompletionQueue) (*cq, bool) {
	x, ok := c.(*cq)
	return x, ok && x != nil && x.dev == d && !x.gone
}

// CreateUDQP creates a UD queue pair, moves it to RTS with the P_Key index
// and Q_Key of cfg, maps and registers its receive and send slabs, and
// posts every receive buffer.
func (d *device) CreateUDQP(cfg ib.QPConfig) (ib.QueuePair, error) {
	if err := d.check("CreateUDQP"); err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (ib.QueuePair, error) {
		return nil, fmt.Errorf("verbs: create UD QP on %s: "+format, append([]any{d.name}, args...)...)
	}
	// The P_Key table's size is the port's to know; the kernel checks the
	// index when the QP moves to INIT, so only its 16-bit range is ours.
	if err := cfg.Validate(ib.QPLimits{Ports: d.nports, PKeys: 1 << 16, MaxDepth: MaxQueueDepth, MaxRecvBufSize: MaxRecvBufSize}); err != nil {
		return fail("%w", err)
	}
	scq, ok1 := d.ownCQ(cfg.SendCQ)
	rcq, ok2 := d.ownCQ(cfg.RecvCQ)
	if !ok1 || !ok2 {
		return fail("send or receive CQ is not a live CQ of this device: %w", ib.ErrBadConfig)
	}
	handle, err := d.newHandle()
	if err != nil {
		return nil, err
	}
	raw, err := C.ipo_create_ud_qp(d.pd, scq.cq, rcq.cq, C.uint32_t(cfg.SendDepth), C.uint32_t(cfg.RecvDepth))
	if raw == nil {
		return fail("ibv_create_qp (send %d, receive %d): %w", cfg.SendDepth, cfg.RecvDepth, errnoOr(err))
	}
	q := &qp{
		dev:       d,
		handle:    handle,
		qp:        raw,
		qpn:       ib.QPN(C.ipo_qp_num(raw)),
		port:      cfg.Port,
		scq:       scq,
		rcq:       rcq,
		mtuBytes:  d.ports[cfg.Port].mtuBytes,
		recvSize:  cfg.RecvBufSize,
		recvDepth: cfg.RecvDepth,
		lent:      make([]bool, cfg.RecvDepth),
		repost:    make([]C.uint32_t, cfg.RecvDepth),
		free:      make([]uint32, cfg.SendDepth),
		slotBusy:  make([]bool, cfg.SendDepth),
		sendIDs:   make([]uint64, cfg.SendDepth),
		batch:     make([]C.struct_ipo_send, cfg.SendDepth),
		batchWR:   make([]int, cfg.SendDepth),
	}
	undo := func() {
		C.ipo_destroy_qp(raw)
		freeSlab(q.recvSlab, q.recvMR)
		freeSlab(q.sendSlab, q.sendMR)
	}
	if rc := C.ipo_ud_qp_ready(raw, C.uint8_t(cfg.Port), C.uint16_t(cfg.PKeyIndex), C.uint32_t(cfg.QKey)); rc != 0 {
		undo()
		steps := [...]string{"", "RESET to INIT", "INIT to RTR", "RTR to RTS"}
		step := int(rc>>8) & 3
		return fail("QP %v %s (P_Key index %d): %w", q.qpn, steps[step], cfg.PKeyIndex, syscall.Errno(rc&0xff))
	}
	if q.recvSlab, q.recvMR, err = d.slab(cfg.RecvDepth * cfg.RecvBufSize); err != nil {
		undo()
		return fail("receive buffers: %w", err)
	}
	q.recvLKey = uint32(C.ipo_mr_lkey(q.recvMR))
	if q.sendSlab, q.sendMR, err = d.slab(cfg.SendDepth * sendSlotSize); err != nil {
		undo()
		return fail("send slots: %w", err)
	}
	q.sendLKey = uint32(C.ipo_mr_lkey(q.sendMR))
	for i := range q.free {
		q.free[i] = uint32(cfg.SendDepth - 1 - i) // slot 0 on top
	}
	for i := range q.repost {
		q.repost[i] = C.uint32_t(i)
	}
	var posted C.int
	if rc := C.ipo_post_recv(raw, C.uint64_t(slabAddr(q.recvSlab)), C.uint32_t(q.recvSize), C.uint32_t(q.recvLKey),
		C.uint64_t(wrID(handle, true, 0)), &q.repost[0], C.int(cfg.RecvDepth), &posted); rc != 0 {
		undo()
		return fail("post %d receive buffers (%d taken): %w", cfg.RecvDepth, int(posted), syscall.Errno(rc))
	}
	q.posted = cfg.RecvDepth
	d.qps[handle] = q
	scq.users++
	rcq.users++
	return q, nil
}

// QPN returns the queue pair number.
func (q *qp) QPN() ib.QPN { return q.qpn }

// SetQKey changes the Q_Key incoming datagrams must carry (a modify QP in
// RTS, which UD allows).
func (q *qp) SetQKey(k ib.QKey) error {
	q.dev.loop.AssertHome("verbs QP.SetQKey")
	if q.gone {
		return fmt.Errorf("verbs: set Q_Key of QP %v: %w", q.qpn, ib.ErrClosed)
	}
	if rc := C.ipo_set_qkey(q.qp, C.uint32_t(k)); rc != 0 {
		return fmt.Errorf("verbs: set Q_Key %v on QP %v: %w", k, q.qpn, rcErr(rc))
	}
	return nil
}

// AttachMcast attaches the QP to a multicast group (ibv_attach_mcast). On
// an Ethernet (RoCE) port it also joins the group at IP level on the
// port's network interface, which RoCE v2 needs for the datagrams to be
// delivered at all (see joinIP); the MLID is not used there.
func (q *qp) AttachMcast(mgid ib.GID, mlid ib.LID) error {
	q.dev.loop.AssertHome("verbs QP.AttachMcast")
	if q.gone {
		return fmt.Errorf("verbs: attach QP %v to %v: %w", q.qpn, mgid, ib.ErrClosed)
	}
	if !mgid.IsMulticast() {
		return fmt.Errorf("verbs: attach QP %v to %v: not a multicast GID: %w", q.qpn, mgid, ib.ErrBadConfig)
	}
	for _, g := range q.groups {
		if g.mgid == mgid && g.mlid == mlid {
			return nil
		}
	}
	d := q.dev
	g := mcGroup{mgid: mgid, mlid: mlid}
	if d.ports[q.port].linkLayer == ib.LinkLayerEthernet {
		gids, err := gidTable(d.ctx)
		if err == nil {
			g.ifindex, err = netdevIndex(q.port, gids)
		}
		if err != nil {
			return fmt.Errorf("verbs: attach QP %v to %v: find the port's network interface: %w", q.qpn, mgid, err)
		}
	} else if !mlid.IsMulticast() {
		return fmt.Errorf("verbs: attach QP %v to %v: MLID %v is not multicast: %w", q.qpn, mgid, mlid, ib.ErrBadConfig)
	}
	if rc := C.ipo_attach_mcast(q.qp, (*C.uint8_t)(unsafe.Pointer(&mgid[0])), C.uint16_t(mlid)); rc != 0 {
		return fmt.Errorf("verbs: attach QP %v to %v/%v: %w", q.qpn, mgid, mlid, rcErr(rc))
	}
	if g.ifindex != 0 {
		if err := d.joinIP(g.ifindex, mgid); err != nil {
			C.ipo_detach_mcast(q.qp, (*C.uint8_t)(unsafe.Pointer(&mgid[0])), C.uint16_t(mlid))
			return fmt.Errorf("verbs: attach QP %v to %v: %w", q.qpn, mgid, err)
		}
	}
	q.groups = append(q.groups, g)
	return nil
}

// DetachMcast undoes AttachMcast, leaving the IP-level group with the
// last QP of the device that was attached to it.
func (q *qp) DetachMcast(mgid ib.GID, mlid ib.LID) error {
	q.dev.loop.AssertHome("verbs QP.DetachMcast")
	if q.gone {
		return fmt.Errorf("verbs: detach QP %v from %v: %w", q.qpn, mgid, ib.ErrClosed)
	}
	i := slices.IndexFunc(q.groups, func(g mcGroup) bool { return g.mgid == mgid && g.mlid == mlid })
	if i < 0 {
		return fmt.Errorf("verbs: detach QP %v from %v/%v: not attached: %w", q.qpn, mgid, mlid, ib.ErrBadConfig)
	}
	err := q.detach(q.groups[i])
	q.groups = slices.Delete(q.groups, i, i+1)
	return err
}

func (q *qp) detach(g mcGroup) error {
	var errs []error
	if rc := C.ipo_detach_mcast(q.qp, (*C.uint8_t)(unsafe.Pointer(&g.mgid[0])), C.uint16_t(g.mlid)); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: detach QP %v from %v/%v: %w", q.qpn, g.mgid, g.mlid, rcErr(rc)))
	}
	if g.ifindex != 0 {
		if err := q.dev.leaveIP(g.ifindex, g.mgid); err != nil {
			errs = append(errs, fmt.Errorf("verbs: detach QP %v from %v: %w", q.qpn, g.mgid, err))
		}
	}
	return errors.Join(errs...)
}

// Close destroys the QP. Every receive buffer it still held and every send
// not yet completed come back on the CQs as ib.StatusFlushed completions
// (made by the driver: providers differ in whether destroying a QP leaves
// its completions in the CQ, so the driver drops the provider's and
// reports its own). Buffers lent out by earlier completions stay mapped
// until the device closes, so a consumer still reading one does not fault.
func (q *qp) Close() error {
	q.dev.loop.AssertHome("verbs QP.Close")
	if q.gone {
		return fmt.Errorf("verbs: close QP %v: %w", q.qpn, ib.ErrClosed)
	}
	return q.close()
}

func (q *qp) close() error {
	d := q.dev
	var errs []error
	for _, g := range q.groups {
		if err := q.detach(g); err != nil {
			errs = append(errs, err)
		}
	}
	q.groups = nil
	if rc := C.ipo_destroy_qp(q.qp); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: destroy QP %v: %w", q.qpn, rcErr(rc)))
	}
	q.gone = true
	delete(d.qps, q.handle)
	for i, lent := range q.lent {
		if !lent {
			q.lent[i] = true
			q.rcq.addMade(ib.Completion{ID: uint64(i), Kind: ib.WorkRecv, Status: ib.StatusFlushed, QPN: q.qpn})
		}
	}
	q.posted = 0
	for i, busy := range q.slotBusy {
		if busy {
			q.slotBusy[i] = false
			q.scq.addMade(ib.Completion{ID: q.sendIDs[i], Kind: ib.WorkSend, Status: ib.StatusFlushed, QPN: q.qpn})
		}
	}
	C.ipo_dereg_mr(q.recvMR)
	q.recvMR = nil
	d.retired = append(d.retired, q.recvSlab)
	freeSlab(q.sendSlab, q.sendMR)
	q.sendSlab, q.sendMR = nil, nil
	q.scq.users--
	q.rcq.users--
	return errors.Join(errs...)
}

// SetHandler installs the completion handler, run on the loop when the
// completion channel fires. Completions already queued are handed over at
// once through a bottom half.
func (c *cq) SetHandler(fn func()) {
	c.dev.loop.AssertHome("verbs CQ.SetHandler")
	c.handler = fn
	if fn != nil && !c.gone {
		c.bh.Schedule()
	}
}

// SetArming chooses when the CQ is armed. A CQ comes armed from
// CreateCQ; switched to ib.ArmOnDemand it raises that one event and is
// then armed only by RequestNotify.
func (c *cq) SetArming(a ib.Arming) {
	c.dev.loop.AssertHome("verbs CQ.SetArming")
	c.onDemand = a == ib.ArmOnDemand
}

// Close destroys the CQ; it fails with ErrBusy while a QP uses it.
func (c *cq) Close() error {
	c.dev.loop.AssertHome("verbs CQ.Close")
	if c.gone {
		return fmt.Errorf("verbs: close CQ: %w", ib.ErrClosed)
	}
	if c.users > 0 {
		return fmt.Errorf("verbs: close CQ: %d QPs still use it: %w", c.users, ErrBusy)
	}
	err := c.close()
	d := c.dev
	d.cqs = slices.DeleteFunc(d.cqs, func(x *cq) bool { return x == c })
	return err
}

func (c *cq) close() error {
	c.gone = true
	c.bh.Delete()
	c.rearmBH.Delete()
	c.made = nil
	var errs []error
	if err := c.dev.loop.RemoveFDHandler(c.fd); err != nil {
		errs = append(errs, err)
	}
	// Every event taken from the channel has been acknowledged, which
	// ibv_destroy_cq insists on.
	if rc := C.ipo_destroy_cq(c.cq); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: destroy CQ: %w", rcErr(rc)))
	}
	if rc := C.ipo_destroy_comp_channel(c.ch); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: destroy completion channel: %w", rcErr(rc)))
	}
	return errors.Join(errs...)
}

// Hop limits put into the GRH (on RoCE v2, the IP TTL or hop limit) when
// the address vector leaves HopLimit 0 on an Ethernet port, where every
// packet carries one: 1 keeps a link-local multicast group on the link, 64
// is the usual IP default for unicast.
const (
	roceMcastHopLimit   = 1
	roceUnicastHopLimit = 64
)

// CreateAH creates an address handle (ibv_create_ah). On an Ethernet
// (RoCE) port every packet carries a GRH, so GlobalRoute is implied and a
// DGID required, and a multicast DGID is sent from the port's first
// link-local GID when the vector names an IPv4-mapped one: RoCE v2 sends a
// multicast GID as an IPv6 packet, which cannot have an IPv4 source, and
// rdma_rxe silently drops such sends. On InfiniBand a multicast DLID or
// DGID also implies a GRH, so receivers learn the sender's GID.
func (d *device) CreateAH(av ib.AddressVector) (ib.AddressHandle, error) {
	if err := d.check("CreateAH"); err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (ib.AddressHandle, error) {
		return nil, fmt.Errorf("verbs: create AH on %s: "+format, append([]any{d.name}, args...)...)
	}
	roce := av.Port >= 1 && av.Port <= d.nports && d.ports[av.Port].linkLayer == ib.LinkLayerEthernet
	// The AH takes a one-byte SGID index; the kernel checks it against
	// the port's GID table.
	if err := av.Validate(ib.AVLimits{Ports: d.nports, GIDs: 0x100, RoCE: roce}); err != nil {
		return fail("%w", err)
	}
	global := av.GlobalRoute || av.DLID.IsMulticast() || av.DGID.IsMulticast()
	sgid := av.SGIDIndex
	hop := av.HopLimit
	dlid := av.DLID
	if roce {
		global = true
		dlid = 0 // RoCE has no LIDs; the DGID is the address
		if hop == 0 {
			hop = roceUnicastHopLimit
			if av.DGID.IsMulticast() {
				hop = roceMcastHopLimit
			}
		}
		if av.DGID.IsMulticast() {
			gids, err := gidTable(d.ctx)
			if err != nil {
				return fail("%w", err)
			}
			sgid = mcastSourceGID(gids, av.Port, sgid)
		}
	}
	g := 0
	if global {
		g = 1
	}
	raw, err := C.ipo_create_ah(d.pd, C.uint8_t(av.Port), C.uint16_t(dlid), C.uint8_t(av.SL),
		C.uint8_t(av.SrcPathBits), C.uint8_t(av.StaticRate), C.int(g),
		(*C.uint8_t)(unsafe.Pointer(&av.DGID[0])), C.uint8_t(sgid), C.uint32_t(av.FlowLabel),
		C.uint8_t(hop), C.uint8_t(av.TClass))
	if raw == nil {
		return fail("to %v (DLID %v, SGID index %d): %w", av.DGID, av.DLID, sgid, errnoOr(err))
	}
	a := &ah{dev: d, ah: raw, av: av, port: av.Port}
	d.ahs[a] = struct{}{}
	return a, nil
}

// mcastSourceGID keeps the SGID index asked for unless it names an
// IPv4-mapped GID, in which case it returns the port's first link-local
// (fe80::/64) GID, the one RoCE v2 multicast has to be sent from.
func mcastSourceGID(gids []gidEntry, port, want int) int {
	for _, e := range gids {
		if e.port == port && e.index == want && !isV4Mapped(e.gid) {
			return want
		}
	}
	best := -1
	for _, e := range gids {
		if e.port == port && e.gid[0] == 0xfe && e.gid[1]&0xc0 == 0x80 && (best < 0 || e.index < best) {
			best = e.index
		}
	}
	if best < 0 {
		return want
	}
	return best
}

// isV4Mapped reports whether g is an IPv4-mapped address (::ffff:a.b.c.d),
// the form of a RoCE v2 GID made from an IPv4 address.
func isV4Mapped(g ib.GID) bool {
	for _, b := range g[:10] {
		if b != 0 {
			return false
		}
	}
	return g[10] == 0xff && g[11] == 0xff
}

// AddressVector returns what the handle was created from (before the
// RoCE adjustments CreateAH describes).
func (a *ah) AddressVector() ib.AddressVector { return a.av }

// Destroy releases the handle; sends using it afterwards fail.
func (a *ah) Destroy() error {
	a.dev.loop.AssertHome("verbs AH.Destroy")
	if a.destroyed {
		return fmt.Errorf("verbs: destroy AH: %w", ib.ErrClosed)
	}
	a.destroyed = true
	delete(a.dev.ahs, a)
	if rc := C.ipo_destroy_ah(a.ah); rc != 0 {
		return fmt.Errorf("verbs: destroy AH to %v: %w", a.av.DGID, rcErr(rc))
	}
	return nil
}

// umadInit runs libibumad's one-time set-up.
var umadInit = sync.OnceValue(func() error {
	if err := loadUMAD(); err != nil {
		return err
	}
	if rc := C.ipo_umad_init(); rc < 0 {
		return fmt.Errorf("umad_init: %w", rcErr(rc))
	}
	return nil
})

// MAD class this driver registers for: subnet administration (IBA 15.2.1,
// management class 0x03, class version 2).
const (
	saMgmtClass    = int(ib.MgmtClassSubnAdm)
	saClassVersion = ib.SAClassVersion
)

// OpenMADPort opens the general services interface of an InfiniBand port
// as a libibumad agent of the SA class. On an Ethernet (RoCE) port there
// is no SA to talk to and it fails with ErrNoSA.
func (d *device) OpenMADPort(port int) (ib.MADPort, error) {
	if err := d.check("OpenMADPort"); err != nil {
		return nil, err
	}
	if port < 1 || port > d.nports {
		return nil, fmt.Errorf("verbs: open MAD port %d on %s: %w", port, d.name, ib.ErrNoPort)
	}
	if d.ports[port].linkLayer == ib.LinkLayerEthernet {
		return nil, fmt.Errorf("verbs: open MAD port %d on %s: %w", port, d.name, ErrNoSA)
	}
	return d.openMADPort(port)
}

// openMADPort opens the umad agent without looking at the link layer; the
// tests use it on soft-RoCE, whose ports have umad files too (for the
// connection manager), to exercise the libibumad plumbing.
func (d *device) openMADPort(port int) (*madPort, error) {
	if err := umadInit(); err != nil {
		return nil, fmt.Errorf("verbs: open MAD port %d on %s: %w", port, d.name, err)
	}
	m, err := openUMAD(d.loop, d.name, d.name, port)
	if err != nil {
		return nil, err
	}
	m.onClose = func(m *madPort) {
		d.mads = slices.DeleteFunc(d.mads, func(x *madPort) bool { return x == m })
	}
	d.mads = append(d.mads, m)
	return m, nil
}

// release unregisters the agent and closes the umad file.
func (m *madPort) release() {
	C.ipo_umad_unregister(C.int(m.portID), C.int(m.agent))
	C.ipo_umad_close_port(C.int(m.portID))
}

// SetHandler installs the handler incoming MADs are given to.
func (m *madPort) SetHandler(fn func(src ib.MADAddress, mad []byte)) {
	m.loop.AssertHome("verbs MADPort.SetHandler")
	m.handler = fn
}

// Close unregisters the agent and closes the port's umad file.
func (m *madPort) Close() error {
	m.loop.AssertHome("verbs MADPort.Close")
	if m.gone {
		return fmt.Errorf("verbs: close MAD port: %w", ib.ErrClosed)
	}
	err := m.close()
	if m.onClose != nil {
		m.onClose(m)
	}
	return err
}

// close stops receiving, then releases the agent: a reader goroutine is
// waited for first, since libumad2sim frees a file's state on close.
func (m *madPort) close() error {
	m.gone = true
	var err error
	if m.watched {
		err = m.loop.RemoveFDHandler(m.fd)
	}
	if r := m.reader; r != nil {
		r.stop.Store(true)
		<-r.done
		r.in.Close()
	}
	m.release()
	return err
}

// Close closes every QP, MAD port, address handle and CQ made from the
// device, stops watching its async event fd and closes it.
func (d *device) Close() error {
	if err := d.check("Close"); err != nil {
		return err
	}
	var errs []error
	for _, q := range d.qps {
		if err := q.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range d.mads {
		if err := m.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for a := range d.ahs {
		a.destroyed = true
		C.ipo_destroy_ah(a.ah)
	}
	for _, c := range d.cqs {
		if err := c.close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.qps, d.mads, d.ahs, d.cqs = nil, nil, nil, nil
	d.closed = true
	for _, b := range d.retired {
		_ = unix.Munmap(b)
	}
	d.retired = nil
	if d.mcastFD >= 0 {
		unix.Close(d.mcastFD) // leaves every IP-level group
		d.mcastFD = -1
	}
	if err := d.loop.RemoveFDHandler(d.asyncFD); err != nil {
		errs = append(errs, err)
	}
	if rc := C.ipo_dealloc_pd(d.pd); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: %s: deallocate protection domain: %w", d.name, rcErr(rc)))
	}
	if rc := C.ipo_close_device(d.ctx); rc != 0 {
		errs = append(errs, fmt.Errorf("verbs: close %s: %w", d.name, rcErr(rc)))
	}
	return errors.Join(errs...)
}
