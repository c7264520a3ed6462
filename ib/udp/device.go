//go:build linux

package udp

// The objects a udp device hands out: the device, completion queues, UD
// queue pairs and address handles. Everything runs on the device's home
// loop (the aio.Context it was opened on): the sockets' handlers, PostSend,
// Poll and the control methods alike, so nothing here takes a lock. The
// counters are atomic so that any goroutine may read them.

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// Limits on what a device creates, so a bad argument fails instead of
// exhausting memory.
const (
	// MaxQueueDepth bounds CQ depth and QP send and receive depths.
	MaxQueueDepth = 1 << 16
	// MaxRecvBufSize bounds one receive buffer.
	MaxRecvBufSize = 1 << 20
	// maxRecvBytes bounds the receive buffers of one QP together, which
	// the two bounds above would let reach 64 GiB.
	maxRecvBytes = 1 << 30
	// rxBatch is how many datagrams one recvmmsg call may return, and
	// txBatch how many one sendmmsg call may carry.
	rxBatch = 64
	txBatch = 64
)

// Counters are a device's datagram counts since it was opened.
type Counters struct {
	// RxPackets were delivered to a receive buffer.
	RxPackets uint64 `json:"rx_packets"`
	// RxBadICRC failed the ICRC check and were dropped.
	RxBadICRC uint64 `json:"rx_bad_icrc"`
	// RxMalformed had headers that disagree with the datagram.
	RxMalformed uint64 `json:"rx_malformed"`
	// RxNotUD were RoCEv2 but not a UD SEND (RC traffic of a kernel
	// RDMA stack on the same address, say).
	RxNotUD uint64 `json:"rx_not_ud"`
	// RxNoQP were addressed to a QPN this device does not have (another
	// process on the same interface may), or to a group no QP joined.
	RxNoQP uint64 `json:"rx_no_qp"`
	// RxPKey failed the receiving QP's P_Key check.
	RxPKey uint64 `json:"rx_pkey"`
	// RxQKey failed the receiving QP's Q_Key check.
	RxQKey uint64 `json:"rx_qkey"`
	// RxNoBuffer found no posted receive buffer or a full CQ.
	RxNoBuffer uint64 `json:"rx_no_buffer"`
	// RxSocketDrops were dropped by the kernel before the driver read
	// them: a raw socket's receive buffer was full (the count the kernel
	// reports with SO_RXQ_OVFL, seen with the next datagram that gets
	// through). The buffer asked for is 4 MiB; without CAP_NET_ADMIN the
	// kernel caps it at net.core.rmem_max.
	RxSocketDrops uint64 `json:"rx_socket_drops"`
	// RxTooLong did not fit the receive buffer (completed in error) or
	// were truncated by the socket.
	RxTooLong uint64 `json:"rx_too_long"`
	// TxPackets were handed to the kernel.
	TxPackets uint64 `json:"tx_packets"`
	// TxErrors were refused by the kernel (no route, message too long).
	TxErrors uint64 `json:"tx_errors"`
}

// device is an open udp device: one interface, one port.
type device struct {
	loop *aio.Context
	info *ifaceInfo
	attr ib.PortAttr
	ctr  counter.Block[Counters]

	closed    bool
	handler   func(ib.Event)
	linkTimer *aio.Timer
	qps       map[ib.QPN]*qp
	nextQPN   ib.QPN
	cqs       map[*cq]struct{}
	groups    map[ib.GID]int // IPv6 group memberships, by QPs attached

	// Sockets (-1 when absent: no IPv6 without a link-local address).
	tx4, rx4, tx6, rx6 int
	// src4 and src6 are the source addresses as 16 bytes.
	src4, src6 [16]byte

	rxq4, rxq6 *rxRing
	txq4, txq6 *txQueue
	// txFree lists free send slots; slots are added as QPs are created.
	txFree   [][]byte
	slotSize int
	// dg is decode scratch for the receive path.
	dg datagram
}

// cq is a completion queue: a ring filled on the loop and a bottom half
// that runs the consumer's handler.
type cq struct {
	dev     *device
	bh      *aio.BH
	handler func()
	ring    ib.CompletionRing
	users   int
	closed  bool
	// onDemand: the handler runs only after RequestNotify armed the CQ
	// (ib.ArmOnDemand), once per arming.
	onDemand, armed bool
}

// qp is a UD queue pair.
type qp struct {
	dev       *device
	qpn       ib.QPN
	pkey      ib.PKey
	pkeyIndex int
	qkey      ib.QKey
	sendCQ    *cq
	recvCQ    *cq
	sendDepth int
	psn       uint32
	closed    bool

	outstanding int
	groups      []ib.GID

	bufSize int
	slab    []byte
	recv    ib.RecvQueue // posted receive buffers, used in order
}

// ah is an address handle: the destination socket address and the
// pseudo header fields the ICRC needs, prepared once.
type ah struct {
	dev       *device
	av        ib.AddressVector
	destroyed bool
	v6        bool
	mcast     bool
	hdr       sendHeader
	sa4       unix.RawSockaddrInet4
	sa6       unix.RawSockaddrInet6
}

// rxRing is one raw socket's receive batch: the message headers, their
// buffers and control data (the socket's drop count; for IPv6 also what
// the IP header is rebuilt from, with the source addresses).
type rxRing struct {
	fd    int
	v6    bool
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte // each: maxIPHeader bytes of room (IPv6), then the datagram
	names []unix.RawSockaddrInet6
	ctrl  [][]byte
	// drops is the socket's drop count as last reported (SO_RXQ_OVFL).
	drops uint32
}

// txItem is one datagram waiting for sendmmsg.
type txItem struct {
	q    *qp
	id   uint64
	slot []byte         // the send slot, up to the end of the datagram
	name unsafe.Pointer // the destination socket address, in the AH
}

// txQueue is one send socket's batch of datagrams not yet taken by the
// kernel.
type txQueue struct {
	fd      int
	v6      bool
	items   []txItem
	hdrs    []unix.Mmsghdr
	iovs    []unix.Iovec
	waiting bool // a write handler is installed (the socket was full)
}
