package ib

// Control plane of the driver model.
//
// Rule: every method in this file opens, closes, queries or configures, and
// runs on the device's home loop (the aio.Context it was opened on). Drivers
// assert it with loop.AssertHome; callers on other goroutines must hop onto
// the loop first (a bottom half), never call in directly. The I/O methods
// are in io.go.

import (
	"fmt"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
)

// PortAttr is a snapshot of one port's attributes (IBA 14.2.5.6, PortInfo;
// ibv_query_port).
type PortAttr struct {
	// Num is the port number, from 1.
	Num int
	// State is the logical port state; IPoIB runs only on PortActive.
	State PortState
	// LinkLayer says whether the port is InfiniBand or Ethernet (RoCE).
	LinkLayer LinkLayer
	// LID is the port's base LID (0 on RoCE).
	LID LID
	// LMC is the LID mask count: the port answers to 2^LMC LIDs.
	LMC uint8
	// SMLID is the LID of the subnet manager, where SA queries go.
	SMLID LID
	// SMSL is the service level to use towards the SM.
	SMSL SL
	// ActiveMTU is the MTU negotiated on the link.
	ActiveMTU MTU
	// MaxMTU is the largest MTU the port supports.
	MaxMTU MTU
	// Rate is the active link rate.
	Rate Rate
	// GIDs is the GID table; index 0 is the default GID.
	GIDs []GID
	// PKeys is the P_Key table; index 0 is normally the default partition.
	PKeys []PKey
}

// GUID returns the port GUID: the interface ID of the default GID.
func (p PortAttr) GUID() GUID {
	if len(p.GIDs) == 0 {
		return 0
	}
	return GUID(p.GIDs[0].InterfaceID())
}

// PKeyIndex returns the index of the table entry whose partition matches
// pkey (either membership), preferring an exact match.
func (p PortAttr) PKeyIndex(pkey PKey) (int, error) {
	idx := -1
	for i, k := range p.PKeys {
		if k == pkey {
			return i, nil
		}
		if idx < 0 && k.Valid() && k.Base() == pkey.Base() {
			idx = i
		}
	}
	if idx < 0 {
		return 0, fmt.Errorf("port %d: P_Key %s not in the P_Key table", p.Num, pkey)
	}
	return idx, nil
}

// EventType names an asynchronous port event (IBA 11.6.3, affiliated and
// unaffiliated asynchronous events; ibv_event_type).
type EventType uint8

// Port events a driver reports.
const (
	// EventPortActive: the port reached ACTIVE.
	EventPortActive EventType = iota + 1
	// EventPortDown: the port left ACTIVE (IBV_EVENT_PORT_ERR).
	EventPortDown
	// EventLIDChange: the SM assigned the port a new LID.
	EventLIDChange
	// EventSMChange: a different SM now manages the subnet.
	EventSMChange
	// EventClientReregister: the SM asks clients to re-register
	// subscriptions and multicast memberships (PortInfo
	// ClientReregister bit).
	EventClientReregister
	// EventPKeyChange: the P_Key table changed.
	EventPKeyChange
	// EventGIDChange: the GID table changed.
	EventGIDChange
	// EventDeviceFatal: the device failed as a whole (IBA 11.6.3's
	// unaffiliated "local catastrophic error", IBV_EVENT_DEVICE_FATAL;
	// hot removal reports it too). Its Port is 0. Nothing created from
	// the device works again: only closing it and opening the device
	// anew does. A driver reports EventPortDown for every port first, so
	// a consumer that knows only port events still takes its link down.
	EventDeviceFatal
)

// String returns the event's name.
func (e EventType) String() string {
	switch e {
	case EventPortActive:
		return "port-active"
	case EventPortDown:
		return "port-down"
	case EventLIDChange:
		return "lid-change"
	case EventSMChange:
		return "sm-change"
	case EventClientReregister:
		return "client-reregister"
	case EventPKeyChange:
		return "pkey-change"
	case EventGIDChange:
		return "gid-change"
	case EventDeviceFatal:
		return "device-fatal"
	}
	return fmt.Sprintf("event(%d)", uint8(e))
}

// Event is one asynchronous event on a port.
type Event struct {
	// Type says what happened.
	Type EventType
	// Port is the port number it happened on; 0 for an event of the
	// whole device (EventDeviceFatal).
	Port int
}

// CounterSource is implemented by a Device whose driver counts what it
// passes and drops itself, beneath the queue pairs (the udp driver's
// datagrams with a bad ICRC, say). DriverCounters returns them by name, in
// snake_case; it is safe from any goroutine.
type CounterSource interface {
	DriverCounters() counter.Snapshot
}

// Device is an open HCA (or simulated host). Every method is control plane:
// it runs on the loop the device was opened on.
type Device interface {
	// Name is the device name ("mlx5_0", "rxe0", "host3").
	Name() string
	// Driver is the name of the driver that opened the device.
	Driver() string
	// Loop is the device's home loop.
	Loop() *aio.Context
	// NodeGUID identifies the HCA.
	NodeGUID() GUID
	// NumPorts is the number of ports, numbered 1..NumPorts.
	NumPorts() int
	// QueryPort returns a fresh snapshot of a port's attributes.
	QueryPort(port int) (PortAttr, error)
	// SetEventHandler installs fn to receive port events on the loop; nil
	// removes it.
	SetEventHandler(fn func(Event))
	// CreateCQ creates a completion queue with room for depth completions.
	CreateCQ(depth int) (CompletionQueue, error)
	// CreateUDQP creates an unreliable-datagram queue pair, already moved to
	// the ready-to-send state with the given P_Key index and Q_Key.
	CreateUDQP(cfg QPConfig) (QueuePair, error)
	// CreateAH creates an address handle for sending to av.
	CreateAH(av AddressVector) (AddressHandle, error)
	// OpenMADPort opens the general services interface (QP1) of a port, for
	// the SA client.
	OpenMADPort(port int) (MADPort, error)
	// Close releases the device and everything created from it.
	Close() error
}

// QPConfig says how to create a UD queue pair.
type QPConfig struct {
	// Port is the port number the QP sends and receives on.
	Port int
	// PKeyIndex selects the partition from the port's P_Key table.
	PKeyIndex int
	// QKey is the Q_Key incoming datagrams must carry (DETH check).
	QKey QKey
	// SendCQ and RecvCQ receive the QP's completions; they may be the same.
	SendCQ, RecvCQ CompletionQueue
	// SendDepth is the number of sends that may be outstanding.
	SendDepth int
	// RecvDepth is the number of receive buffers the QP keeps posted.
	RecvDepth int
	// RecvBufSize is the size of each receive buffer, including the
	// GRHSize bytes reserved at its start for the GRH.
	RecvBufSize int
}

// QPLimits are the bounds a driver can honour in a QPConfig.
type QPLimits struct {
	// Ports is the number of ports; valid port numbers are 1 to Ports.
	Ports int
	// PKeys is the number of entries of the port's P_Key table.
	PKeys int
	// MaxDepth bounds SendDepth and RecvDepth.
	MaxDepth int
	// MaxRecvBufSize bounds RecvBufSize (which is at least GRHSize).
	MaxRecvBufSize int
	// MaxRecvBytes, when not zero, bounds RecvDepth × RecvBufSize: the
	// memory one QP's receive buffers take.
	MaxRecvBytes int64
}

// Validate checks c against what a driver can honour and says what is
// wrong in terms of the request: the error wraps ErrNoPort for a port out
// of range and ErrBadConfig for anything else. The completion queues are
// the driver's to check, since only it knows its own.
func (c *QPConfig) Validate(l QPLimits) error {
	switch {
	case c.Port < 1 || c.Port > l.Ports:
		return fmt.Errorf("port %d (1..%d): %w", c.Port, l.Ports, ErrNoPort)
	case c.PKeyIndex < 0 || c.PKeyIndex >= l.PKeys:
		return fmt.Errorf("P_Key index %d, table has %d entries: %w", c.PKeyIndex, l.PKeys, ErrBadConfig)
	case c.SendCQ == nil || c.RecvCQ == nil:
		return fmt.Errorf("a send and a receive CQ are needed: %w", ErrBadConfig)
	case c.SendDepth < 1 || c.SendDepth > l.MaxDepth:
		return fmt.Errorf("send depth %d (1..%d): %w", c.SendDepth, l.MaxDepth, ErrBadConfig)
	case c.RecvDepth < 1 || c.RecvDepth > l.MaxDepth:
		return fmt.Errorf("receive depth %d (1..%d): %w", c.RecvDepth, l.MaxDepth, ErrBadConfig)
	case c.RecvBufSize < GRHSize || c.RecvBufSize > l.MaxRecvBufSize:
		return fmt.Errorf("receive buffer %d bytes (%d..%d): %w", c.RecvBufSize, GRHSize, l.MaxRecvBufSize, ErrBadConfig)
	case l.MaxRecvBytes > 0 && int64(c.RecvDepth)*int64(c.RecvBufSize) > l.MaxRecvBytes:
		return fmt.Errorf("%d receive buffers of %d bytes exceed %d bytes: %w", c.RecvDepth, c.RecvBufSize, l.MaxRecvBytes, ErrBadConfig)
	}
	return nil
}

// QPControl is the control half of a queue pair.
type QPControl interface {
	// QPN is the queue pair number peers address datagrams to.
	QPN() QPN
	// SetQKey changes the Q_Key incoming datagrams must carry (IPoIB learns
	// it from the broadcast group).
	SetQKey(QKey) error
	// AttachMcast makes the QP receive datagrams sent to the group.
	AttachMcast(mgid GID, mlid LID) error
	// DetachMcast undoes AttachMcast.
	DetachMcast(mgid GID, mlid LID) error
	// Close destroys the QP; outstanding work completes with
	// StatusFlushed.
	Close() error
}

// QueuePair is a UD queue pair: control methods from QPControl and I/O
// methods from QPIO.
type QueuePair interface {
	QPControl
	QPIO
}

// Arming says when a completion queue asks its device for the event that
// runs its handler (IBA 11.4.2.2, request completion notification;
// ibv_req_notify_cq).
type Arming uint8

const (
	// ArmAlways: the driver asks again after every event, so the handler
	// runs whenever completions may be ready. The default.
	ArmAlways Arming = iota
	// ArmOnDemand: the CQ is armed only by CQIO.RequestNotify, for one
	// event. For a send CQ its owner reaps after each post: soft-RoCE
	// completes a send inside the post, and an armed CQ would raise an
	// event (a wake-up, a read and a re-arm, each a system call) for a
	// completion already taken.
	ArmOnDemand
)

// CQControl is the control half of a completion queue.
type CQControl interface {
	// SetHandler installs fn to run on the loop whenever completions may be
	// ready; fn should Poll until it returns fewer than asked for. nil
	// removes it. With ArmAlways the driver re-arms notification itself.
	SetHandler(fn func())
	// SetArming chooses when the CQ is armed (ArmAlways until called).
	SetArming(Arming)
	// Close destroys the CQ.
	Close() error
}

// CompletionQueue collects the completions of one or more queue pairs.
type CompletionQueue interface {
	CQControl
	CQIO
}

// AddressVector says where a UD send goes (IBA 11.2.2.1, address handle
// attributes; ibv_ah_attr).
type AddressVector struct {
	// Port is the local port to send from.
	Port int
	// DLID is the destination LID (a multicast LID for groups).
	DLID LID
	// SL is the service level.
	SL SL
	// SrcPathBits selects one of the port's LMC LIDs as the source.
	SrcPathBits uint8
	// StaticRate limits the injection rate; 0 means the port's rate.
	StaticRate Rate
	// GlobalRoute says a GRH is sent; always true on RoCE.
	GlobalRoute bool
	// DGID is the destination GID (GRH DGID).
	DGID GID
	// SGIDIndex selects the source GID from the port's GID table.
	SGIDIndex int
	// FlowLabel, HopLimit and TClass fill the GRH.
	FlowLabel uint32
	HopLimit  uint8
	TClass    uint8
}

// AVLimits are what a port lets an AddressVector name.
type AVLimits struct {
	// Ports is the number of ports; valid port numbers are 1 to Ports.
	Ports int
	// GIDs is the number of entries of the port's GID table.
	GIDs int
	// RoCE says the port's link layer is Ethernet: no LIDs, and the DGID
	// is the only address.
	RoCE bool
}

// Validate checks that av can address a UD datagram from a port with
// limits l: the error wraps ErrNoPort for a port out of range and
// ErrBadConfig for anything else. On InfiniBand a datagram needs a LID
// that names a port or a group (not the reserved or permissive LID), a
// multicast LID travels with a multicast DGID (every multicast packet
// carries a GRH naming its group), and a GRH needs a DGID; on RoCE the
// DGID is the address and a LID means nothing. Limits the driver alone knows (a port's table
// sizes read at run time, the GID type) stay its to check.
func (av *AddressVector) Validate(l AVLimits) error {
	switch {
	case av.Port < 1 || av.Port > l.Ports:
		return fmt.Errorf("port %d (1..%d): %w", av.Port, l.Ports, ErrNoPort)
	case !av.SL.Valid() || av.FlowLabel > grhMaxFlowLabel:
		return fmt.Errorf("SL %d or flow label %#x out of range: %w", av.SL, av.FlowLabel, ErrBadConfig)
	case av.SGIDIndex < 0 || av.SGIDIndex >= l.GIDs:
		return fmt.Errorf("SGID index %d, table has %d entries: %w", av.SGIDIndex, l.GIDs, ErrBadConfig)
	case l.RoCE && av.DGID.IsZero():
		return fmt.Errorf("RoCE port %d needs a DGID: %w", av.Port, ErrBadConfig)
	case l.RoCE:
		return nil
	case av.DLID == LIDReserved || av.DLID == LIDPermissive:
		return fmt.Errorf("DLID %v cannot address a UD datagram: %w", av.DLID, ErrBadConfig)
	case av.DLID.IsMulticast() && !av.DGID.IsMulticast():
		return fmt.Errorf("multicast DLID %v needs a multicast DGID, got %v: %w", av.DLID, av.DGID, ErrBadConfig)
	case av.GlobalRoute && av.DGID.IsZero():
		return fmt.Errorf("global route without a DGID: %w", ErrBadConfig)
	}
	return nil
}

// AddressHandle is a driver's prepared form of an AddressVector.
type AddressHandle interface {
	// AddressVector returns what the handle was created from.
	AddressVector() AddressVector
	// Destroy releases the handle; it must no longer be used in sends.
	Destroy() error
}

// MADAddress is the source or destination of a MAD on the GSI.
type MADAddress struct {
	// LID is the peer's LID (the SM LID for SA queries).
	LID LID
	// SL is the service level.
	SL SL
	// QPN is the peer's QP (QPNGSI for the SA).
	QPN QPN
	// QKey is the Q_Key to send with (QKeyGSI).
	QKey QKey
	// PKeyIndex selects the partition (the default partition for SA).
	PKeyIndex int
}

// maxPKeyIndex is the last index a P_Key table can have: the table's size,
// NodeInfo's PartitionCap, is a 16-bit field (IBA 14.2.5.3).
const maxPKeyIndex = 0xFFFF

// Validate checks that a MAD can be sent to a: a QPN of 24 bits, an SL of
// 4 and a P_Key index a table can have; the error wraps ErrBadConfig. The
// drivers' MAD ports (verbs, sim) check it in Send before they build
// anything, so they refuse the same addresses with the same cause. Whether
// the index names an entry of the port's own table only the driver knows.
func (a *MADAddress) Validate() error {
	if !a.QPN.Valid() || !a.SL.Valid() || a.PKeyIndex < 0 || a.PKeyIndex > maxPKeyIndex {
		return fmt.Errorf("to LID %v QP %v (SL %d, P_Key index %d): QPN, SL or P_Key index out of range: %w",
			a.LID, a.QPN, a.SL, a.PKeyIndex, ErrBadConfig)
	}
	return nil
}

// MADPort is a port's general services interface, through which the SA
// client exchanges MADs. In the verbs driver it is a libibumad agent; in the
// simulator it is QP1 of the simulated port.
type MADPort interface {
	// SetHandler installs fn to receive every incoming MAD on the loop; the
	// slice is valid only during the call.
	SetHandler(fn func(src MADAddress, mad []byte))
	// Send transmits one MADSize-byte MAD. It is I/O and may be called from
	// the loop only.
	Send(dst MADAddress, mad []byte) error
	// Close releases the interface.
	Close() error
}

// DefaultPathTimeout is how long a path or group answer is trusted before
// it is refreshed, absent a port event.
const DefaultPathTimeout = 10 * time.Minute
