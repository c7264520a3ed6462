//go:build linux && cgo && !noverbs

package verbs

// Finding devices: the driver-table entry, Probe, and the port queries
// that Probe and Device.QueryPort share. Control plane; Probe runs on any
// goroutine because it opens its own short-lived device contexts.

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// Errors of this driver that callers may test with errors.Is.
var (
	// ErrBusy says an object is still in use (a CQ that a QP uses).
	ErrBusy = errors.New("verbs: object in use")
	// ErrInvalidWR is ib.ErrInvalidWR under the driver's name: a work
	// request the driver cannot carry out as given (what ib.SendWR.Validate
	// refuses, a MAD to an address out of range).
	ErrInvalidWR = ib.ErrInvalidWR
	// ErrNoSA says a MAD port was asked for on an Ethernet (RoCE) port.
	// RoCE has no subnet manager and no subnet administrator: paths
	// resolve locally (GRH always, LID 0) and multicast groups are
	// attached without a join.
	ErrNoSA = errors.New("verbs: port has an Ethernet link layer (RoCE): there is no subnet manager or SA to send MADs to")
)

// Limits on what a device creates, so a bad argument fails instead of
// exhausting memory or the HCA.
const (
	// MaxQueueDepth bounds CQ depth and QP send and receive depths.
	MaxQueueDepth = 1 << 15
	// MaxRecvBufSize bounds one receive buffer: the GRH area plus the
	// largest IB MTU plus slack for RoCE headers is far below it.
	MaxRecvBufSize = 1 << 16
	// sendSlotSize is the size of one registered send slot: the largest
	// IB MTU (IBA 14.2.5.6, MTU 4096). Larger payloads could not leave
	// through any port, so PostSend never needs more.
	sendSlotSize = 4096
)

func init() {
	ib.Register(ib.Driver{Name: DriverName, Probe: Probe, Open: Open})
}

// deviceList returns libibverbs' device list; the caller frees it with
// C.ipo_free_device_list. A kernel without RDMA support makes libibverbs
// fail with ENOSYS, which becomes ib.ErrNoRDMA.
func deviceList() (**C.struct_ibv_device, []*C.struct_ibv_device, error) {
	if err := loadVerbs(); err != nil {
		return nil, nil, err
	}
	var n C.int
	list, err := C.ipo_device_list(&n)
	if list == nil {
		if errors.Is(err, syscall.ENOSYS) {
			return nil, nil, fmt.Errorf("verbs: %w (ibv_get_device_list: %w); load the HCA's kernel driver, or for soft-RoCE: modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0", ib.ErrNoRDMA, err)
		}
		if err == nil {
			err = syscall.EIO
		}
		return nil, nil, fmt.Errorf("verbs: ibv_get_device_list: %w", err)
	}
	return list, unsafe.Slice((**C.struct_ibv_device)(unsafe.Pointer(list)), int(n)), nil
}

// Probe lists every RDMA device with its ports. On a kernel without RDMA
// support it returns an error wrapping ib.ErrNoRDMA, not an empty list.
// When libibverbs cannot be loaded (or the package was built without the
// rdma-core headers) it returns an error wrapping ib.ErrUnavailable, with
// the devices sysfs shows. A device that cannot be opened (no permission
// on /dev/infiniband) is left out and named in the returned error, next
// to the devices that could be.
func Probe() ([]ib.DeviceInfo, error) {
	list, devs, err := deviceList()
	if errors.Is(err, ib.ErrUnavailable) {
		return sysfsDevices(), err
	}
	if err != nil {
		return nil, err
	}
	defer C.ipo_free_device_list(list)
	var out []ib.DeviceInfo
	var errs []error
	for _, dev := range devs {
		name := C.GoString(C.ipo_device_name(dev))
		ctx, err := C.ipo_open_device(dev)
		if ctx == nil {
			errs = append(errs, fmt.Errorf("verbs: open %s: %w", name, errnoOr(err)))
			continue
		}
		info, err := describe(ctx, name)
		C.ipo_close_device(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, info)
	}
	return out, errors.Join(errs...)
}

// describe fills a DeviceInfo from an open context.
func describe(ctx *C.struct_ibv_context, name string) (ib.DeviceInfo, error) {
	info := ib.DeviceInfo{Driver: DriverName, Name: name}
	var da C.struct_ipo_device_attr
	if rc := C.ipo_query_device(ctx, &da); rc != 0 {
		return info, fmt.Errorf("verbs: query device %s: %w", name, rcErr(rc))
	}
	info.NodeGUID = ib.GUID(beUint64(unsafe.Pointer(&da.node_guid[0])))
	gids, err := gidTable(ctx)
	if err != nil {
		return info, fmt.Errorf("verbs: device %s: %w", name, err)
	}
	for p := 1; p <= int(da.phys_port_cnt); p++ {
		pa, err := queryPort(ctx, p, gids)
		if err != nil {
			return info, fmt.Errorf("verbs: device %s: %w", name, err)
		}
		info.Ports = append(info.Ports, pa)
		if info.NetDev == "" {
			info.NetDev = netdevName(name, p, gids)
		}
	}
	return info, nil
}

// beUint64 reads a __be64 field of a C struct.
func beUint64(p unsafe.Pointer) uint64 {
	return binary.BigEndian.Uint64((*[8]byte)(p)[:])
}

// gidEntry is one valid GID table entry (ibv_gid_entry).
type gidEntry struct {
	port    int
	index   int
	gid     ib.GID
	ifindex int
}

// gidTable reads every valid GID of every port in one call
// (ibv_query_gid_table); soft-RoCE ports have 1024-entry tables that are
// nearly empty, so asking entry by entry would cost a thousand sysfs reads
// per port.
func gidTable(ctx *C.struct_ibv_context) ([]gidEntry, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]C.struct_ipo_gid_entry, size)
		n, err := C.ipo_gid_table(ctx, &buf[0], C.size_t(size))
		if n < 0 {
			if errors.Is(err, syscall.EINVAL) && size < 1<<16 {
				continue // more valid entries than room: retry larger
			}
			return nil, fmt.Errorf("query GID table: %w", errnoOr(err))
		}
		out := make([]gidEntry, 0, int(n))
		for _, e := range buf[:n] {
			out = append(out, gidEntry{
				port:    int(e.port_num),
				index:   int(e.gid_index),
				gid:     ib.GID(*(*[16]byte)(unsafe.Pointer(&e.gid[0]))),
				ifindex: int(e.ndev_ifindex),
			})
		}
		return out, nil
	}
	return nil, fmt.Errorf("query GID table: more than %d entries: %w", 1<<16, ib.ErrBadConfig)
}

// queryPort snapshots one port: ibv_query_port for the scalar attributes,
// the GID table read by gidTable, and ibv_query_pkey for the P_Keys.
func queryPort(ctx *C.struct_ibv_context, port int, gids []gidEntry) (ib.PortAttr, error) {
	var pa C.struct_ipo_port_attr
	if rc := C.ipo_query_port(ctx, C.uint8_t(port), &pa); rc != 0 {
		return ib.PortAttr{}, fmt.Errorf("query port %d: %w", port, rcErr(rc))
	}
	a := ib.PortAttr{
		Num:       port,
		State:     ib.PortState(pa.state),
		LinkLayer: linkLayer(uint8(pa.link_layer)),
		LID:       ib.LID(pa.lid),
		LMC:       uint8(pa.lmc),
		SMLID:     ib.LID(pa.sm_lid),
		SMSL:      ib.SL(pa.sm_sl),
		ActiveMTU: ib.MTU(pa.active_mtu),
		MaxMTU:    ib.MTU(pa.max_mtu),
		Rate:      portRate(uint8(pa.active_width), uint32(pa.active_speed)),
	}
	last := -1
	for _, e := range gids {
		if e.port == port && e.index > last {
			last = e.index
		}
	}
	if last >= 0 {
		a.GIDs = make([]ib.GID, last+1)
		for _, e := range gids {
			if e.port == port {
				a.GIDs[e.index] = e.gid
			}
		}
	}
	for i := 0; i < int(pa.pkey_tbl_len); i++ {
		var be C.uint16_t
		if rc := C.ipo_query_pkey(ctx, C.uint8_t(port), C.int(i), &be); rc != 0 {
			return a, fmt.Errorf("query port %d P_Key %d: %w", port, i, rcErr(rc))
		}
		a.PKeys = append(a.PKeys, ib.PKey(binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&be))[:])))
	}
	// Unused trailing entries are zero; index 0 stays even if it is.
	for len(a.PKeys) > 1 && a.PKeys[len(a.PKeys)-1] == 0 {
		a.PKeys = a.PKeys[:len(a.PKeys)-1]
	}
	return a, nil
}

// Link layer codes of struct ibv_port_attr.link_layer (libibverbs'
// enum: unspecified, InfiniBand, Ethernet). Unspecified comes from old
// kernels that only knew InfiniBand.
const (
	ibvLinkLayerUnspecified = 0
	ibvLinkLayerInfiniBand  = 1
	ibvLinkLayerEthernet    = 2
)

func linkLayer(v uint8) ib.LinkLayer {
	switch v {
	case ibvLinkLayerUnspecified, ibvLinkLayerInfiniBand:
		return ib.LinkLayerInfiniBand
	case ibvLinkLayerEthernet:
		return ib.LinkLayerEthernet
	}
	return ib.LinkLayer(v)
}

// portRate turns PortInfo's LinkWidthActive and LinkSpeedActive (IBA
// 14.2.5.6; extended speeds as libibverbs reports them) into the static
// rate encoding, or 0 when the product has none.
func portRate(width uint8, speed uint32) ib.Rate {
	var lanes int
	switch width {
	case 1:
		lanes = 1
	case 2:
		lanes = 4
	case 4:
		lanes = 8
	case 8:
		lanes = 12
	case 16:
		lanes = 2
	default:
		return 0
	}
	var laneMbps int
	switch speed {
	case 1:
		laneMbps = 2500 // SDR
	case 2:
		laneMbps = 5000 // DDR
	case 4, 8:
		laneMbps = 10000 // QDR, FDR10
	case 16:
		laneMbps = 14000 // FDR
	case 32:
		laneMbps = 25000 // EDR
	case 64:
		laneMbps = 50000 // HDR
	case 128:
		laneMbps = 100000 // NDR
	default:
		return 0
	}
	want := lanes * laneMbps
	for r := ib.Rate(0); r < 64; r++ {
		if r.Mbps() == want {
			return r
		}
	}
	return 0
}

// netdevName finds the network interface behind a RoCE port: the GID
// table names it by ifindex; failing that, sysfs as rdmamap reads it.
func netdevName(dev string, port int, gids []gidEntry) string {
	for _, e := range gids {
		if e.port != port || e.ifindex == 0 {
			continue
		}
		if ifc, err := net.InterfaceByIndex(e.ifindex); err == nil {
			return ifc.Name
		}
	}
	return sysfsNetdevs()[dev]
}

// netdevIndex returns the ifindex of the network interface behind a RoCE
// port, for IP-level multicast joins.
func netdevIndex(port int, gids []gidEntry) (int, error) {
	for _, e := range gids {
		if e.port == port && e.ifindex != 0 {
			return e.ifindex, nil
		}
	}
	return 0, fmt.Errorf("port %d: no GID entry names a network interface: %w", port, ib.ErrBadConfig)
}

// rcErr turns a libibverbs return code into an error: most calls return a
// positive errno, a few return -1 (or a negative errno).
func rcErr(rc C.int) error {
	switch {
	case rc > 0:
		return syscall.Errno(rc)
	case rc < -1:
		return syscall.Errno(-rc)
	}
	return syscall.EIO
}

// errnoOr returns err, or EIO when a C call failed without setting errno.
func errnoOr(err error) error {
	if err == nil {
		return syscall.EIO
	}
	return err
}

// Open opens the device Probe listed as name and ties it to loop: its
// async-event fd is watched by the loop from now on. It must be called on
// loop. A kernel without RDMA support gives an error wrapping
// ib.ErrNoRDMA, an unknown name one wrapping ib.ErrNoDevice.
func Open(loop *aio.Context, name string) (ib.Device, error) {
	if loop == nil {
		return nil, fmt.Errorf("verbs: open %s: nil loop: %w", name, ib.ErrBadConfig)
	}
	loop.AssertHome("verbs.Open")
	list, devs, err := deviceList()
	if err != nil {
		return nil, err
	}
	defer C.ipo_free_device_list(list)
	for _, dev := range devs {
		if C.GoString(C.ipo_device_name(dev)) == name {
			return openDevice(loop, dev, name)
		}
	}
	return nil, fmt.Errorf("verbs: open %s: %w", name, ib.ErrNoDevice)
}
