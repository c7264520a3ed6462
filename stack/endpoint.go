package stack

import (
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ipoibd/ipoibd/internal/cowlist"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ipoib/arp"
	"github.com/ipoibd/ipoibd/netdev"
)

// ARPHardwareInfiniBand is what the endpoint reports to gVisor as its
// ARPHRD type: 32, Linux's ARPHRD_INFINIBAND (include/uapi/linux/if_arp.h)
// and the IANA ARP hardware type of RFC 4391 section 9.1.1. gVisor only
// names None, Ether and Loopback; it uses the value for interface
// listings, where Ether would make tools expect 6-byte addresses.
const ARPHardwareInfiniBand header.ARPHardwareType = header.ARPHardwareType(arp.HardwareIPoIB)

// DefaultTxQueueLen is the transmit queue bound when EndpointOptions
// leaves it zero. It is sized for bursts, not for the device: gVisor's
// TCP may hand over its whole send buffer while the loop is behind (1 MB
// by default, up to 4 MB: 4,300 segments at IPoIB MTU 1020, what the udp
// driver gets on a 1500-byte Ethernet), and gVisor's TCP
// takes a packet dropped here for a loss on the wire: a recovery, and
// with bad luck a retransmission timeout. At 1024 the queue overflowed
// under one TCP stream on the udp driver (17–29 drops per 200 MiB, each
// run with about a thousand segments retransmitted); at this bound none
// did. The queue holds references to gVisor's buffers, not device
// buffers, so its size does not tax the device's pool, and it grows to
// the bound only as it fills (txQueueStart).
const DefaultTxQueueLen = 8192

// txQueueStart is the transmit queue's first size; it doubles when full,
// up to the bound. Most endpoints never queue more than a few dozen
// packets, and a thousand hosts in one process each keep 12 KB rather
// than the 390 KB of a full-size ring.
const txQueueStart = 256

// maxLinkAddrLen bounds the link addresses the transmit queue stores
// inline. IPoIB's are 20 bytes; the margin admits other links in tests.
const maxLinkAddrLen = 32

// LinkGroups is implemented by a link driver that must join a multicast
// group on the fabric before the group's traffic reaches it (IPoIB sends
// an MCMemberRecord join to the SA). The endpoint calls it on the
// device's loop when the stack joins the first, or leaves the last,
// membership of an IP group. addr is the group's link address (for IPoIB
// QPN 0xFFFFFF and the MGID); it is valid during the call only. The
// methods must not block: a join that needs a round trip starts it and
// returns.
type LinkGroups interface {
	JoinLinkGroup(group netip.Addr, addr []byte) error
	LeaveLinkGroup(group netip.Addr, addr []byte) error
}

// EndpointOptions configures NewEndpoint. The zero value is usable.
type EndpointOptions struct {
	// TxQueueLen bounds the packets that wait between WritePackets and
	// the loop's transmit bottom half; packets beyond it are dropped and
	// counted (TxQueueFull). Zero means DefaultTxQueueLen. The queue's
	// memory grows to the bound as it fills.
	TxQueueLen int
	// Pcap, when set, receives a LINKTYPE_IPOIB capture of every frame
	// the endpoint hands to the device and every frame it delivers to the
	// stack. Requires an IPoIB link (20-byte addresses).
	Pcap io.Writer
	// Groups is told about multicast memberships; nil means the link
	// needs no joins (or the driver joins on first send).
	Groups LinkGroups
	// NoGSO turns off gVisor's software segmentation offload. With it on
	// (the default), gVisor's TCP builds segments of up to
	// gvstack.GVisorGSOMaxSize bytes and cuts them to the MSS once, in a
	// batch, rather than running its whole send path per MSS segment.
	NoGSO bool
	// NoGRO turns off receive coalescing. With it on (the default), TCP
	// segments of one flow that arrive in one pass of the loop reach
	// gVisor merged (gVisor's gro package), so its TCP runs once per
	// merged segment and acknowledges them together.
	NoGRO bool
}

// Endpoint is a gVisor stack.LinkEndpoint over a netdev.Device. gVisor's
// goroutines call WritePackets; the packets are copied into device
// buffers, queued, and sent by a bottom half on the device's loop. Frames
// the device receives are delivered to gVisor from the loop. io.go and
// control.go say which method runs where.
type Endpoint struct {
	dev  *netdev.Device
	link netdev.LinkProtocol
	loop *aio.Context

	mtuLimit   atomic.Uint32 // gVisor's SetMTU; 0 means the device's MTU
	dispatcher atomic.Pointer[dispatcherRef]
	closed     atomic.Bool
	onClose    atomic.Pointer[func()]

	ownAddr   atomic.Pointer[addrString] // LinkAddress cache
	bcastAddr atomic.Pointer[addrString] // broadcast LinkAddress cache

	// Transmit queue: a ring of gVisor packets. WritePackets appends at
	// the tail under txMu; the bottom half claims slots from the head
	// (txClaimed), reads them without the lock (producers never write a
	// slot that is still counted in txLen) and then advances the head
	// under it. A producer that finds the ring full moves it into one
	// twice the size (growTx), up to txMax; slots the bottom half has
	// claimed stay where they are, since it is reading them.
	txMu      sync.Mutex
	txq       []txEntry
	txHead    int
	txLen     int
	txClaimed int
	txMax     int
	txBH      *aio.BH
	txBatch   []netdev.Packet // loop-owned scratch

	tap    *pcapTap
	groups LinkGroups
	noGSO  bool // EndpointOptions.NoGSO
	// Receive coalescing (gro.go), loop-owned; groBH is nil with
	// EndpointOptions.NoGRO.
	gro     gro.GRO
	groSink groSink
	groBH   *aio.BH
	gmu     sync.Mutex
	gcount  map[netip.Addr]int

	filters cowlist.List[Filter] // see AddFilter

	stats counter.Block[EndpointStats]
}

var _ gvstack.LinkEndpoint = (*Endpoint)(nil)

// dispatcherRef boxes the dispatcher so it can sit in an atomic pointer.
type dispatcherRef struct {
	d gvstack.NetworkDispatcher
}

// addrString caches a link address as the string gVisor wants, keyed by
// the slice it was made from, so the conversion allocates once per
// address change rather than once per call.
type addrString struct {
	src *byte
	s   tcpip.LinkAddress
}

// txEntry is one packet waiting in the transmit queue, holding a
// reference to it, with its mapped link destination.
type txEntry struct {
	pkt   *gvstack.PacketBuffer
	proto uint16
	dlen  uint8
	dst   [maxLinkAddrLen]byte
}

// EndpointStats counts what the endpoint did with packets. The device's
// own counters (netdev.Stats) count what happened below it.
type EndpointStats struct {
	// TxQueued counts packets WritePackets accepted into the queue.
	TxQueued uint64 `json:"tx_queued"`
	// TxSent counts packets the device accepted from the bottom half.
	TxSent uint64 `json:"tx_sent"`
	// TxQueueFull counts packets dropped because the queue was full.
	TxQueueFull uint64 `json:"tx_queue_full"`
	// TxNoBuffer counts packets dropped because the device's pool was
	// dry when the bottom half came to copy them.
	TxNoBuffer uint64 `json:"tx_no_buffer"`
	// TxBadAddr counts packets whose link destination could not be
	// mapped to a device address.
	TxBadAddr uint64 `json:"tx_bad_addr"`
	// TxTooBig counts packets larger than a device buffer.
	TxTooBig uint64 `json:"tx_too_big"`
	// TxClosed counts packets offered after Close.
	TxClosed uint64 `json:"tx_closed"`
	// TxDevice counts packets the device refused (its counters say why).
	TxDevice uint64 `json:"tx_device"`
	// RxDelivered counts frames handed to gVisor.
	RxDelivered uint64 `json:"rx_delivered"`
	// RxDropped counts frames dropped because the endpoint was closed or
	// not attached to a stack.
	RxDropped uint64 `json:"rx_dropped"`
	// RxFiltered counts frames a Filter kept from gVisor.
	RxFiltered uint64 `json:"rx_filtered"`
	// GroupErrors counts LinkGroups calls that failed.
	GroupErrors uint64 `json:"group_errors"`
	// TapErrors counts frames the pcap tap failed to write.
	TapErrors uint64 `json:"tap_errors"`
}

// NewEndpoint makes a LinkEndpoint over dev. It registers itself as the
// device's receiver: directly when called on the device's loop, otherwise
// through a bottom half, so frames that arrive before that runs are
// counted by the device as rx_no_receiver. One endpoint per device. Safe
// from any goroutine.
func NewEndpoint(dev *netdev.Device, opts EndpointOptions) (*Endpoint, error) {
	if dev == nil {
		return nil, fmt.Errorf("stack: new endpoint: no device: %w", netdev.ErrInvalidConfig)
	}
	link := dev.LinkProtocol()
	if al := link.AddrLen(); al <= 0 || al > maxLinkAddrLen {
		return nil, fmt.Errorf("stack: new endpoint on %s: %d-byte %s addresses, at most %d supported: %w",
			dev.Name(), al, link.Name(), maxLinkAddrLen, netdev.ErrInvalidConfig)
	}
	qlen := opts.TxQueueLen
	if qlen == 0 {
		qlen = DefaultTxQueueLen
	}
	if qlen < 0 || qlen > 1<<16 {
		return nil, fmt.Errorf("stack: new endpoint on %s: transmit queue length %d: %w", dev.Name(), qlen, netdev.ErrInvalidConfig)
	}
	e := &Endpoint{
		dev:     dev,
		link:    link,
		loop:    dev.Loop(),
		txq:     make([]txEntry, min(qlen, txQueueStart)),
		txMax:   qlen,
		txBatch: make([]netdev.Packet, 0, dev.TxQueueLen()),
		groups:  opts.Groups,
		gcount:  make(map[netip.Addr]int),
		noGSO:   opts.NoGSO,
	}
	if opts.Pcap != nil {
		tap, err := newPcapTap(opts.Pcap, link)
		if err != nil {
			return nil, fmt.Errorf("stack: new endpoint on %s: %w", dev.Name(), err)
		}
		e.tap = tap
	}
	e.txBH = e.loop.NewBH("stack-tx-"+dev.Name(), e.drainTx)
	if !opts.NoGRO {
		e.gro.Init(true)
		e.gro.Dispatcher = &e.groSink
		e.groSink.e = e
		e.groBH = e.loop.NewBH("stack-gro-"+dev.Name(), e.flushGRO)
	}
	e.onLoop("stack.bindReceiver", func() { dev.SetReceiver(netdev.ReceiverFunc(e.receive)) })
	return e, nil
}

// Device returns the device the endpoint sends through.
func (e *Endpoint) Device() *netdev.Device { return e.dev }

// Stats returns a snapshot of the endpoint's counters. Safe from any
// goroutine.
func (e *Endpoint) Stats() EndpointStats {
	return e.stats.Load()
}

// Snapshot returns the counters by name, for output. Safe from any
// goroutine.
func (e *Endpoint) Snapshot() counter.Snapshot { return e.stats.Snapshot() }

// MTU implements stack.LinkEndpoint: the device's network-layer MTU (for
// IPoIB the broadcast group's IB MTU less the 4-byte header), lowered by
// SetMTU if gVisor asked for less. It follows the device when the driver
// changes the MTU after a join.
func (e *Endpoint) MTU() uint32 {
	m := uint32(max(e.dev.MTU(), 0))
	if l := e.mtuLimit.Load(); l != 0 && l < m {
		return l
	}
	return m
}

// SetMTU implements stack.LinkEndpoint. The device's MTU is the driver's
// to set, so this only caps what MTU reports; zero removes the cap.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtuLimit.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: the link header the
// device will push. gVisor reserves it in front of its packets, although
// the header is built in the device's own buffer after the copy.
func (e *Endpoint) MaxHeaderLength() uint16 { return uint16(e.link.HeaderLen()) }

// LinkAddress implements stack.LinkEndpoint: the device's own link
// address as raw bytes in a string (20 bytes for IPoIB). It follows the
// device when the driver sets the address at open, and allocates only
// after such a change.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	return cachedAddr(&e.ownAddr, e.dev.HWAddr())
}

// broadcastAddr returns the link's broadcast address as a LinkAddress,
// cached like LinkAddress.
func (e *Endpoint) broadcastAddr() tcpip.LinkAddress {
	return cachedAddr(&e.bcastAddr, e.link.Broadcast())
}

// cachedAddr returns raw as a LinkAddress, reusing the string in c while
// raw is the same slice as last time. Both netdev.Device.HWAddr and
// ipoib.Link.Broadcast replace the slice rather than rewrite it.
func cachedAddr(c *atomic.Pointer[addrString], raw []byte) tcpip.LinkAddress {
	var p *byte
	if len(raw) > 0 {
		p = unsafe.SliceData(raw)
	}
	if a := c.Load(); a != nil && a.src == p && len(a.s) == len(raw) {
		return a.s
	}
	a := &addrString{src: p, s: tcpip.LinkAddress(raw)}
	c.Store(a)
	return a.s
}

// SetLinkAddress implements stack.LinkEndpoint and does nothing: the
// address belongs to the device (IPoIB's holds the QPN the driver
// created), and the stack reads it back through LinkAddress.
func (e *Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. Resolution is required, so
// gVisor resolves IPv4 neighbours through ARPProtocol. No checksum
// offload: an IPoIB UD queue pair does not compute IP checksums.
func (e *Endpoint) Capabilities() gvstack.LinkEndpointCapabilities {
	return gvstack.CapabilityResolutionRequired
}

// SupportedGSO implements stack.GSOEndpoint: gVisor segments TCP in
// software (gvstack.GVisorGSOSupported) unless EndpointOptions.NoGSO. The
// packets still reach WritePackets at the link MTU; nothing below gVisor
// segments.
func (e *Endpoint) SupportedGSO() gvstack.SupportedGSO {
	if e.noGSO {
		return gvstack.GSONotSupported
	}
	return gvstack.GVisorGSOSupported
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *Endpoint) GSOMaxSize() uint32 {
	if e.noGSO {
		return 0
	}
	return gvstack.GVisorGSOMaxSize
}

// ARPHardwareType implements stack.LinkEndpoint with
// ARPHardwareInfiniBand.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType { return ARPHardwareInfiniBand }

// AddHeader implements stack.LinkEndpoint and does nothing: the device's
// link protocol pushes the header into the device buffer on the loop.
func (e *Endpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint. The device has pulled the
// link header before the packet reaches gVisor, so there is nothing left
// to parse.
func (e *Endpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// Wait implements stack.LinkEndpoint. The endpoint owns no goroutines:
// its work runs on the device's loop.
func (e *Endpoint) Wait() {}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// SetOnCloseAction implements stack.LinkEndpoint: fn runs once, first
// thing in Close.
func (e *Endpoint) SetOnCloseAction(fn func()) {
	if fn == nil {
		e.onClose.Store(nil)
		return
	}
	e.onClose.Store(&fn)
}
