//go:build linux && cgo && !noverbs

package verbs

// The open device: its libibverbs context and protection domain, the
// async-event fd on the loop, and the tables the data path looks QPs up
// in. Control methods are in control.go, I/O in io.go. Everything here is
// touched on the device's home loop only, so nothing is locked.

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// device is an open HCA or soft-RoCE device.
type device struct {
	loop    *aio.Context
	name    string
	ctx     *C.struct_ibv_context
	pd      *C.struct_ibv_pd
	guid    ib.GUID
	nports  int
	asyncFD int

	closed  bool
	handler func(ib.Event)
	// ports caches what the data path needs per port (index = port
	// number); port events refresh it.
	ports []portCache
	cqs   []*cq
	// qps maps a QP's handle (the top bits of every work request ID it
	// posts) to the QP, so a completion finds its QP without a pointer
	// passing through C. Handles are never reused: a completion of a
	// closed QP finds nothing and is dropped.
	qps        map[uint32]*qp
	nextHandle uint32
	ahs        map[*ah]struct{}
	mads       []*madPort
	// retired holds receive slabs of closed QPs whose buffers may still
	// be in a consumer's hands; they are unmapped when the device closes.
	retired [][]byte

	// mcastFD is an AF_INET6 datagram socket holding the IP-level
	// multicast memberships RoCE ports need (-1 until the first one);
	// joins counts the QP attachments per (ifindex, group).
	mcastFD int
	joins   map[ipJoin]int
}

// portCache is the part of a port's attributes the data path reads.
type portCache struct {
	linkLayer ib.LinkLayer
	mtuBytes  int
}

// ipJoin names one IP-level multicast membership.
type ipJoin struct {
	ifindex int
	group   ib.GID
}

// openDevice opens dev, allocates its protection domain and puts its
// async-event fd on the loop.
func openDevice(loop *aio.Context, dev *C.struct_ibv_device, name string) (*device, error) {
	ctx, err := C.ipo_open_device(dev)
	if ctx == nil {
		return nil, fmt.Errorf("verbs: open %s (is /dev/infiniband/uverbs* accessible?): %w", name, errnoOr(err))
	}
	d := &device{
		loop:    loop,
		name:    name,
		ctx:     ctx,
		asyncFD: int(C.ipo_async_fd(ctx)),
		qps:     make(map[uint32]*qp),
		ahs:     make(map[*ah]struct{}),
		mcastFD: -1,
		joins:   make(map[ipJoin]int),
	}
	fail := func(err error) (*device, error) {
		if d.pd != nil {
			C.ipo_dealloc_pd(d.pd)
		}
		C.ipo_close_device(ctx)
		return nil, err
	}
	var da C.struct_ipo_device_attr
	if rc := C.ipo_query_device(ctx, &da); rc != 0 {
		return fail(fmt.Errorf("verbs: query device %s: %w", name, rcErr(rc)))
	}
	d.guid = ib.GUID(beUint64(unsafe.Pointer(&da.node_guid[0])))
	d.nports = int(da.phys_port_cnt)
	d.ports = make([]portCache, d.nports+1)
	for p := 1; p <= d.nports; p++ {
		if err := d.refreshPort(p); err != nil {
			return fail(err)
		}
	}
	pd, err := C.ipo_alloc_pd(ctx)
	if pd == nil {
		return fail(fmt.Errorf("verbs: allocate protection domain on %s: %w", name, errnoOr(err)))
	}
	d.pd = pd
	if err := unix.SetNonblock(d.asyncFD, true); err != nil {
		return fail(fmt.Errorf("verbs: %s: make async event fd non-blocking: %w", name, err))
	}
	if err := loop.SetFDHandler(d.asyncFD, aio.FDHandler{Read: d.readEvents}); err != nil {
		return fail(fmt.Errorf("verbs: %s: watch async event fd: %w", name, err))
	}
	return d, nil
}

// refreshPort re-reads the cached attributes of one port.
func (d *device) refreshPort(p int) error {
	var pa C.struct_ipo_port_attr
	if rc := C.ipo_query_port(d.ctx, C.uint8_t(p), &pa); rc != 0 {
		return fmt.Errorf("verbs: %s: query port %d: %w", d.name, p, rcErr(rc))
	}
	d.ports[p] = portCache{
		linkLayer: linkLayer(uint8(pa.link_layer)),
		mtuBytes:  ib.MTU(pa.active_mtu).Bytes(),
	}
	for _, q := range d.qps {
		if q.port == p {
			q.mtuBytes = d.ports[p].mtuBytes
		}
	}
	return nil
}

// ibv_event_type values (libibverbs' enum ibv_event_type, which follows
// the affiliated and unaffiliated asynchronous events of IBA 11.6.3).
const (
	ibvEventDeviceFatal      = 8
	ibvEventPortActive       = 9
	ibvEventPortErr          = 10
	ibvEventLIDChange        = 11
	ibvEventPKeyChange       = 12
	ibvEventSMChange         = 13
	ibvEventClientReregister = 17
	ibvEventGIDChange        = 18
)

// eventType maps an ibv_event_type to the port event the layers above
// react to; ok is false for events that are not about a port.
func eventType(t int) (ib.EventType, bool) {
	switch t {
	case ibvEventPortActive:
		return ib.EventPortActive, true
	case ibvEventPortErr:
		return ib.EventPortDown, true
	case ibvEventLIDChange:
		return ib.EventLIDChange, true
	case ibvEventPKeyChange:
		return ib.EventPKeyChange, true
	case ibvEventSMChange:
		return ib.EventSMChange, true
	case ibvEventClientReregister:
		return ib.EventClientReregister, true
	case ibvEventGIDChange:
		return ib.EventGIDChange, true
	}
	return 0, false
}

// readEvents is the async fd's read handler: it takes every pending event
// (each acknowledged by the C helper right away), refreshes the cached
// port attributes and hands port events to the handler. A fatal device
// error is reported as every port going down, since nothing on the device
// works any more, then as EventDeviceFatal, which tells the consumer to
// open the device again.
func (d *device) readEvents() {
	for !d.closed {
		var typ, port C.int
		rc, err := C.ipo_async_event(d.ctx, &typ, &port)
		if rc != 0 {
			if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK) {
				slog.Warn("verbs: reading async event failed", "device", d.name, "err", err)
			}
			return
		}
		t := int(typ)
		if t == ibvEventDeviceFatal {
			slog.Error("verbs: device reported a fatal error", "device", d.name)
			for p := 1; p <= d.nports; p++ {
				d.deliver(ib.Event{Type: ib.EventPortDown, Port: p})
			}
			d.deliver(ib.Event{Type: ib.EventDeviceFatal})
			continue
		}
		et, ok := eventType(t)
		if !ok {
			slog.Warn("verbs: async event", "device", d.name, "type", t)
			continue
		}
		p := int(port)
		if p >= 1 && p <= d.nports {
			if err := d.refreshPort(p); err != nil {
				slog.Warn("verbs: refreshing port after event", "device", d.name, "err", err)
			}
		}
		d.deliver(ib.Event{Type: et, Port: p})
	}
}

func (d *device) deliver(ev ib.Event) {
	if d.handler != nil && !d.closed {
		d.handler(ev)
	}
}

// newHandle returns the next QP handle. Handles fill the 31 bits above
// the kind bit of a work request ID (see wrID).
func (d *device) newHandle() (uint32, error) {
	if d.nextHandle >= maxHandle {
		return 0, fmt.Errorf("verbs: %s: %d QPs created, handles exhausted: %w", d.name, maxHandle, ib.ErrBadConfig)
	}
	d.nextHandle++
	return d.nextHandle, nil
}
