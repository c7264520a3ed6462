package ib

// I/O plane of the driver model.
//
// Rule: the methods in this file move datagrams and completions. They run on
// the device's home loop, never block and, in steady state, never allocate.
// Nothing here opens, closes or reconfigures anything; that is control.go.

import "fmt"

// GRHSize is the number of bytes at the start of every receive buffer
// reserved for the GRH (IBA 8.3; ibv_post_recv on a UD QP scatters the GRH
// there whether or not one arrived).
const GRHSize = 40

// SendWR is one UD send work request.
type SendWR struct {
	// ID comes back in the send's completion.
	ID uint64
	// AH says where the datagram goes.
	AH AddressHandle
	// RemoteQPN is the destination QP (QPNMulticast for groups).
	RemoteQPN QPN
	// RemoteQKey is the Q_Key the datagram carries in its DETH.
	RemoteQKey QKey
	// Data holds the payload as a list of segments that are sent back to
	// back (a link header and a packet body, say). The driver copies them
	// before PostSend returns, so the caller may reuse the memory at once.
	Data [][]byte
}

// Len returns the payload length of the work request.
func (w *SendWR) Len() int {
	n := 0
	for _, d := range w.Data {
		n += len(d)
	}
	return n
}

// AHState is what a driver alone knows of the address handle a SendWR
// names, for SendWR.Validate: whether it is one of the device's own
// handles and whether it was destroyed.
type AHState uint8

// States of an address handle as its driver sees it.
const (
	// AHForeign: nil, or a handle of another driver or another device.
	AHForeign AHState = iota
	// AHDestroyed: one of the device's handles, destroyed.
	AHDestroyed
	// AHLive: one of the device's handles, usable.
	AHLive
)

// Validate checks what every driver checks of a send work request before
// taking it: an address handle of the QP's own device, not destroyed
// (ah, which only the driver can tell), for the QP's port (ahPort, the
// handle's AddressVector.Port, against qpPort), and a remote QPN that
// fits the 24 bits of BTH DestQP (IBA 9.2). The error wraps ErrInvalidWR.
// Whether the address is a group, which must go to QPNMulticast, turns on
// the link layer (a multicast DLID on InfiniBand, a multicast DGID on
// RoCE), so that check stays the driver's.
//
// It runs for every work request: the accepting path is small enough to
// be inlined into PostSend and allocates nothing.
func (w *SendWR) Validate(ah AHState, ahPort, qpPort int) error {
	if ah == AHLive && ahPort == qpPort && w.RemoteQPN <= QPNMask {
		return nil
	}
	return w.refuse(ah, ahPort, qpPort)
}

// refuse says why Validate did not accept w.
func (w *SendWR) refuse(ah AHState, ahPort, qpPort int) error {
	switch {
	case ah == AHDestroyed:
		return fmt.Errorf("address handle destroyed: %w", ErrInvalidWR)
	case ah != AHLive:
		return fmt.Errorf("address handle not from this device: %w", ErrInvalidWR)
	case ahPort != qpPort:
		return fmt.Errorf("address handle for port %d, QP on port %d: %w", ahPort, qpPort, ErrInvalidWR)
	case !w.RemoteQPN.Valid():
		return fmt.Errorf("remote QPN %#x exceeds 24 bits: %w", uint32(w.RemoteQPN), ErrInvalidWR)
	}
	return nil
}

// QPIO is the I/O half of a queue pair.
type QPIO interface {
	// PostSend queues sends and returns how many it took; it stops at the
	// first that cannot be queued and returns the reason (ErrQueueFull when
	// the send queue is full, an error naming the work request when it is
	// malformed). As on real HCAs, a payload larger than the port's MTU is
	// accepted and then completes with StatusLocalLength.
	PostSend(wrs []SendWR) (int, error)
	// RepostRecv hands receive buffers back to the QP after their
	// completions have been consumed. ids are Completion.ID values of
	// receive completions. The call goes through an interface, so a
	// variadic list built at the call site escapes: on the data path pass a
	// reused slice (RepostRecv(ids...)) to stay allocation-free.
	RepostRecv(ids ...uint64) error
}

// CQIO is the I/O half of a completion queue.
type CQIO interface {
	// Poll fills wcs with up to len(wcs) completions and returns how many.
	Poll(wcs []Completion) (int, error)
	// RequestNotify arms a CQ set to ArmOnDemand for one run of the
	// handler after the next completion it gets. Completions already
	// queued raise nothing, so a caller that asks because work is still
	// outstanding polls once more afterwards. Asking again before the
	// event costs nothing; on an ArmAlways CQ it does nothing.
	RequestNotify() error
}

// WorkKind says which kind of work a completion finishes.
type WorkKind uint8

// Kinds of work a completion can finish.
const (
	// WorkSend completes a SendWR.
	WorkSend WorkKind = iota + 1
	// WorkRecv completes a receive buffer.
	WorkRecv
)

// Status is the outcome of a work request (IBA 11.6.2, completion status;
// ibv_wc_status).
type Status uint8

// Completion statuses.
const (
	// StatusSuccess: the work completed.
	StatusSuccess Status = iota
	// StatusLocalLength: the datagram did not fit the receive buffer or
	// exceeded the path MTU.
	StatusLocalLength
	// StatusLocalProtection: the buffer was not usable by the device.
	StatusLocalProtection
	// StatusFlushed: the QP was closed or went to the error state before
	// the work ran.
	StatusFlushed
	// StatusGeneral: any other failure.
	StatusGeneral
)

// String returns the status's name.
func (s Status) String() string {
	switch s {
	case StatusSuccess:
		return "success"
	case StatusLocalLength:
		return "local-length-error"
	case StatusLocalProtection:
		return "local-protection-error"
	case StatusFlushed:
		return "flushed"
	case StatusGeneral:
		return "general-error"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Completion is one work completion (ibv_wc).
type Completion struct {
	// ID is the SendWR.ID or the receive buffer's ID.
	ID uint64
	// Kind says whether a send or a receive completed.
	Kind WorkKind
	// Status is the outcome; the fields below are valid on success only.
	Status Status
	// QPN is the local QP the work belonged to.
	QPN QPN
	// Buf is the receive buffer: GRHSize bytes for the GRH, then the
	// payload, Len bytes in all. It stays valid until RepostRecv(ID).
	Buf []byte
	// Len is the number of bytes received, including the GRH area.
	Len int
	// HasGRH says the first GRHSize bytes of Buf hold a real GRH.
	HasGRH bool
	// SrcQPN is the sender's QP (DETH SrcQP).
	SrcQPN QPN
	// SLID is the sender's LID.
	SLID LID
	// SL is the service level the datagram arrived on.
	SL SL
	// PKeyIndex is the P_Key table index that matched.
	PKeyIndex int
	// DLIDPathBits are the low bits of the destination LID.
	DLIDPathBits uint8
}

// Payload returns the bytes after the GRH area.
func (c *Completion) Payload() []byte {
	if c.Len < GRHSize || c.Len > len(c.Buf) {
		return nil
	}
	return c.Buf[GRHSize:c.Len]
}
