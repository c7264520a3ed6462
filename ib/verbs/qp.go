//go:build linux && cgo && !noverbs

package verbs

// UD queue pairs and address handles: the types, their registered memory
// and the IP-level multicast membership RoCE needs. Control methods are in
// control.go, PostSend and RepostRecv in io.go.

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/ib"
)

// qp is a UD queue pair. Loop only.
type qp struct {
	dev    *device
	handle uint32
	qp     *C.struct_ibv_qp
	qpn    ib.QPN
	port   int
	scq    *cq
	rcq    *cq
	// mtuBytes is the port's active MTU: the largest payload a send may
	// carry. Port events refresh it.
	mtuBytes int
	gone     bool

	// Receive side: recvDepth buffers of recvSize bytes in one mmap'd,
	// registered slab. lent marks the buffers a completion handed out;
	// posted counts those the QP holds.
	recvSlab  []byte
	recvMR    *C.struct_ibv_mr
	recvLKey  uint32 // recvMR's lkey, read once so posting needs no C call
	recvSize  int
	recvDepth int
	lent      []bool
	posted    int
	repost    []C.uint32_t // scratch for RepostRecv's batch

	// Send side: one sendSlotSize slot per outstanding send in another
	// registered slab. free is a stack of idle slots; sendIDs remembers
	// the caller's ID of each busy one.
	sendSlab []byte
	sendMR   *C.struct_ibv_mr
	sendLKey uint32 // sendMR's lkey
	free     []uint32
	slotBusy []bool
	sendIDs  []uint64
	batch    []C.struct_ipo_send // scratch for PostSend's batch
	batchWR  []int               // index in the caller's slice of each batch entry

	groups []mcGroup
}

// mcGroup is one multicast attachment of a QP.
type mcGroup struct {
	mgid ib.GID
	mlid ib.LID
	// ifindex is the netdev joined at IP level (RoCE ports), or 0.
	ifindex int
}

// recvBuf returns receive buffer i.
func (q *qp) recvBuf(i uint32) []byte {
	off := int(i) * q.recvSize
	return q.recvSlab[off : off+q.recvSize : off+q.recvSize]
}

// releaseSlot returns a send slot to the free stack.
func (q *qp) releaseSlot(i uint32) {
	q.slotBusy[i] = false
	q.free = append(q.free, i)
}

// slab is a region of anonymous memory outside the Go heap, registered
// with the device. Memory the device writes into must not move, and the
// Go heap makes no such promise; mmap does, and ibv_reg_mr pins it.
func (d *device) slab(size int) ([]byte, *C.struct_ibv_mr, error) {
	page := unix.Getpagesize()
	size = (size + page - 1) / page * page
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	mr, err := C.ipo_reg_mr(d.pd, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	if mr == nil {
		_ = unix.Munmap(b)
		return nil, nil, fmt.Errorf("register %d bytes with ibv_reg_mr (is the memlock limit high enough? ulimit -l): %w", size, errnoOr(err))
	}
	return b, mr, nil
}

// freeSlab undoes slab.
func freeSlab(b []byte, mr *C.struct_ibv_mr) {
	if mr != nil {
		C.ipo_dereg_mr(mr)
	}
	if b != nil {
		_ = unix.Munmap(b)
	}
}

// slabAddr is the address the device knows a slab by.
func slabAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// ah is an address handle.
type ah struct {
	dev *device
	ah  *C.struct_ibv_ah
	av  ib.AddressVector
	// port is av.Port, kept apart so PostSend needs no copy of av.
	port      int
	destroyed bool
}

// joinIP joins group on the network interface ifindex at IP level, once
// per (interface, group) however many QPs attach. A RoCE NIC drops
// multicast frames for groups the host has not joined (its MAC filter and
// the IPv6 input path both check), so without this a RoCE v2 multicast
// datagram never reaches the RDMA device; the 6.1 kernel's rdma_rxe does
// not join for us.
func (d *device) joinIP(ifindex int, group ib.GID) error {
	k := ipJoin{ifindex, group}
	if d.joins[k] > 0 {
		d.joins[k]++
		return nil
	}
	if d.mcastFD < 0 {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open IPv6 socket for multicast membership: %w", err)
		}
		d.mcastFD = fd
	}
	mreq := unix.IPv6Mreq{Multiaddr: group, Interface: uint32(ifindex)}
	if err := unix.SetsockoptIPv6Mreq(d.mcastFD, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &mreq); err != nil {
		return fmt.Errorf("IPV6_JOIN_GROUP %v on ifindex %d: %w", group, ifindex, err)
	}
	d.joins[k] = 1
	return nil
}

// leaveIP drops one reference to an IP-level membership and leaves the
// group with the last one.
func (d *device) leaveIP(ifindex int, group ib.GID) error {
	k := ipJoin{ifindex, group}
	n := d.joins[k]
	if n == 0 {
		return nil
	}
	if n > 1 {
		d.joins[k] = n - 1
		return nil
	}
	delete(d.joins, k)
	mreq := unix.IPv6Mreq{Multiaddr: group, Interface: uint32(ifindex)}
	if err := unix.SetsockoptIPv6Mreq(d.mcastFD, unix.IPPROTO_IPV6, unix.IPV6_LEAVE_GROUP, &mreq); err != nil {
		return fmt.Errorf("IPV6_LEAVE_GROUP %v on ifindex %d: %w", group, ifindex, err)
	}
	return nil
}
