package netdev

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/internal/cowlist"

	"github.com/ipoibd/ipoibd/aio"
)

// Ops is what a driver implements to put a Device on its hardware. The
// Device calls every method on its loop.
type Ops interface {
	// Open brings the hardware up (queue pairs, receive buffers, joins). The
	// link stays down until the driver calls SetLinkUp, from Open or later.
	Open(d *Device) error
	// Close stops the hardware. It may complete in-flight transmits with
	// TxComplete; whatever it leaves in the queue the Device completes with
	// ErrClosed right after. An error is reported but the device is
	// closed regardless.
	Close(d *Device) error
	// Transmit sends b, whose link header is already pushed. Returning nil
	// means the driver has taken b and will call TxComplete(b, err) exactly
	// once, now or later on the loop; returning an error means it has not
	// taken b, and the Device completes b with that error.
	Transmit(d *Device, b *Buffer) error
}

// Poller is implemented by drivers whose hardware must be polled for
// completions (no interrupt, or busy polling); Device.Poll calls it.
type Poller interface {
	// Poll reaps what the hardware has finished and reports whether it
	// found anything.
	Poll(d *Device) bool
}

// BatchTransmitter is implemented by drivers that send several packets for
// the price of one (one doorbell, one system call). Device.TransmitBatch
// uses it; without it the packets go one by one through Ops.Transmit.
type BatchTransmitter interface {
	// TransmitBatch takes the buffers bufs[:n] in order, with Transmit's
	// contract for each, and returns n with the reason bufs[n] was refused
	// (nil error only when n == len(bufs)).
	TransmitBatch(d *Device, bufs []*Buffer) (n int, err error)
}

// Receiver is the upper layer a Device delivers frames to.
type Receiver interface {
	// Receive takes ownership of b, whose link header has been pulled: it
	// holds the network-layer packet of protocol proto (an ethertype). dst
	// and src are valid only during the call. Receive runs on the
	// device's loop and must free b, or hand it on, eventually.
	Receive(d *Device, b *Buffer, proto uint16, dst, src []byte)
}

// ReceiverFunc adapts a function to the Receiver interface.
type ReceiverFunc func(d *Device, b *Buffer, proto uint16, dst, src []byte)

// Receive calls f.
func (f ReceiverFunc) Receive(d *Device, b *Buffer, proto uint16, dst, src []byte) {
	f(d, b, proto, dst, src)
}

// LinkListener is told about link transitions, on the device's loop, in
// the call that made them. reason is nil when the link came up and says
// why otherwise. A listener must not block; it may call the device.
type LinkListener func(d *Device, up bool, reason error)

// Defaults for Config fields left zero.
const (
	// DefaultTxQueueLen bounds the packets handed to a driver and not yet
	// completed. It matches the send-queue depth ipoib's UD QP is created
	// with, so the queue rarely refuses what the hardware could take.
	DefaultTxQueueLen = 128
)

// Config describes a Device to New.
type Config struct {
	// Name identifies the device ("ib0", "sim0"): 1 to 32 bytes of
	// letters, digits, '.', '-' and '_'; unique among registered devices.
	Name string
	// Loop is the event loop the device lives on.
	Loop *aio.Context
	// Link is the link-layer protocol.
	Link LinkProtocol
	// HWAddr is the device's own link address, Link.AddrLen() bytes.
	// Copied.
	HWAddr []byte
	// MTU is the largest network-layer packet, in bytes.
	MTU int
	// MaxMTU is the largest MTU SetMTU will accept and sizes the pool's
	// buffers; zero means MTU.
	MaxMTU int
	// Ops is the driver.
	Ops Ops
	// TxQueueLen bounds the transmit queue; zero means DefaultTxQueueLen.
	TxQueueLen int
	// Buffers is the size of the device's buffer pool; zero means twice
	// the transmit queue, enough for a full queue plus as many packets
	// being built or received.
	Buffers int
	// Headroom is what the driver needs in front of the link header (on
	// receive, for instance, IB UD places a 40-byte GRH there). Pool
	// buffers reserve Headroom + Link.HeaderLen() on Get.
	Headroom int
}

// Device is a network device: a link protocol, a driver, a transmit queue,
// link state and counters. control.go and io.go say which goroutine may
// call which method; the accessors in this file are safe from any
// goroutine.
type Device struct {
	name  string
	loop  *aio.Context
	link  LinkProtocol
	ops   Ops
	poll  Poller
	batch BatchTransmitter
	pool  *Pool
	stats Stats

	// Shared with other goroutines.
	hwaddr     atomic.Pointer[[]byte]
	mtu        atomic.Int64
	maxMTU     int
	open       atomic.Bool
	registered atomic.Bool
	state      atomic.Pointer[linkState]

	listeners cowlist.List[LinkListener]

	// Loop-owned.
	txReady        bool // open and link up
	closing        bool
	txHead, txTail *Buffer
	txCount        int
	txLimit        int
	rx             Receiver
	pending        []*Buffer // TransmitBatch scratch, cap txLimit

	// Prebuilt errors, so that drops on the data path allocate nothing.
	errNotOpen, errLinkDown, errQueueFull, errClosed error
	errRxClosed, errNoReceiver                       error
}

type linkState struct {
	up     bool
	reason error
}

// registry holds the registered devices by name.
var registry struct {
	mu   sync.Mutex
	devs map[string]*Device
}

// New creates a device from cfg and registers it under cfg.Name. The
// device starts closed with its link down. New may be called from any
// goroutine.
func New(cfg Config) (*Device, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	frame := FrameLen(cfg.Link, cfg.MaxMTU)
	pool, err := NewPool(cfg.Buffers, cfg.Headroom+frame, cfg.Headroom+cfg.Link.HeaderLen())
	if err != nil {
		return nil, fmt.Errorf("netdev %s: %w", cfg.Name, err)
	}
	d := &Device{
		name:    cfg.Name,
		loop:    cfg.Loop,
		link:    cfg.Link,
		ops:     cfg.Ops,
		pool:    pool,
		maxMTU:  cfg.MaxMTU,
		txLimit: cfg.TxQueueLen,
		pending: make([]*Buffer, 0, cfg.TxQueueLen),
	}
	d.poll, _ = cfg.Ops.(Poller)
	d.batch, _ = cfg.Ops.(BatchTransmitter)
	hw := append([]byte(nil), cfg.HWAddr...)
	d.hwaddr.Store(&hw)
	d.mtu.Store(int64(cfg.MTU))
	d.errNotOpen = fmt.Errorf("netdev %s: transmit: device not open: %w (%w)", d.name, ErrLinkDown, ErrClosed)
	d.errLinkDown = fmt.Errorf("netdev %s: transmit: %w", d.name, ErrLinkDown)
	d.errQueueFull = fmt.Errorf("netdev %s: transmit: %d packets queued: %w", d.name, d.txLimit, ErrQueueFull)
	d.errRxClosed = fmt.Errorf("netdev %s: receive: device not open: %w", d.name, ErrClosed)
	d.errNoReceiver = fmt.Errorf("netdev %s: receive: %w", d.name, ErrNoReceiver)
	d.errClosed = fmt.Errorf("netdev %s: flushed on close: %w", d.name, ErrClosed)
	d.state.Store(&linkState{up: false, reason: fmt.Errorf("netdev %s: not opened yet: %w", d.name, ErrLinkDown)})

	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, ok := registry.devs[d.name]; ok {
		return nil, fmt.Errorf("netdev %s: register: %w", d.name, ErrExists)
	}
	if registry.devs == nil {
		registry.devs = make(map[string]*Device)
	}
	registry.devs[d.name] = d
	d.registered.Store(true)
	return d, nil
}

// checkConfig validates cfg and fills in defaults.
func checkConfig(cfg *Config) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("netdev %s: %s: %w", cfg.Name, fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	if !validDevName(cfg.Name) {
		return bad("name must be 1-32 bytes of [A-Za-z0-9._-]")
	}
	if cfg.Loop == nil {
		return bad("no event loop")
	}
	if cfg.Link == nil {
		return bad("no link protocol")
	}
	if cfg.Ops == nil {
		return bad("no driver ops")
	}
	if al := cfg.Link.AddrLen(); al <= 0 || len(cfg.HWAddr) != al {
		return bad("hardware address is %d bytes, %s addresses are %d", len(cfg.HWAddr), cfg.Link.Name(), al)
	}
	if cfg.Link.HeaderLen() < 0 {
		return bad("link header length %d", cfg.Link.HeaderLen())
	}
	if cfg.MaxMTU == 0 {
		cfg.MaxMTU = cfg.MTU
	}
	const hugeMTU = 1 << 20 // far beyond any link; guards the pool size
	if cfg.MTU <= 0 || cfg.MTU > cfg.MaxMTU || cfg.MaxMTU > hugeMTU {
		return bad("MTU %d, maximum %d", cfg.MTU, cfg.MaxMTU)
	}
	if cfg.TxQueueLen == 0 {
		cfg.TxQueueLen = DefaultTxQueueLen
	}
	if cfg.TxQueueLen < 0 || cfg.TxQueueLen > 1<<16 {
		return bad("transmit queue length %d", cfg.TxQueueLen)
	}
	if cfg.Buffers == 0 {
		cfg.Buffers = 2 * cfg.TxQueueLen
	}
	if cfg.Buffers < 0 || cfg.Buffers > 1<<20 || cfg.Headroom < 0 || cfg.Headroom > 1<<16 {
		return bad("%d buffers with %d bytes of driver headroom", cfg.Buffers, cfg.Headroom)
	}
	return nil
}

func validDevName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// Lookup returns the registered device called name.
func Lookup(name string) (*Device, bool) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	d, ok := registry.devs[name]
	return d, ok
}

// Devices returns the registered devices sorted by name.
func Devices() []*Device {
	registry.mu.Lock()
	out := make([]*Device, 0, len(registry.devs))
	for _, d := range registry.devs {
		out = append(out, d)
	}
	registry.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Unregister removes a closed device from the registry, freeing its name.
// It fails with ErrBusy while the device is open. Safe from any goroutine.
func (d *Device) Unregister() error {
	if d.open.Load() {
		return fmt.Errorf("netdev %s: unregister: %w", d.name, ErrBusy)
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if !d.registered.Load() || registry.devs[d.name] != d {
		return fmt.Errorf("netdev %s: unregister: not registered: %w", d.name, ErrClosed)
	}
	delete(registry.devs, d.name)
	d.registered.Store(false)
	return nil
}

// Name returns the device name.
func (d *Device) Name() string { return d.name }

// String returns the device name.
func (d *Device) String() string { return d.name }

// Loop returns the event loop the device lives on.
func (d *Device) Loop() *aio.Context { return d.loop }

// LinkProtocol returns the device's link protocol.
func (d *Device) LinkProtocol() LinkProtocol { return d.link }

// HWAddr returns the device's own link address. The slice is shared:
// do not modify it. SetHWAddr replaces it rather than writing into it, so
// a slice once returned stays intact.
func (d *Device) HWAddr() []byte { return *d.hwaddr.Load() }

// MTU returns the largest network-layer packet the device sends.
func (d *Device) MTU() int { return int(d.mtu.Load()) }

// MaxMTU returns the largest MTU the device's buffers can carry.
func (d *Device) MaxMTU() int { return d.maxMTU }

// IsOpen reports whether the device is open.
func (d *Device) IsOpen() bool { return d.open.Load() }

// LinkState reports whether the link is up and, when it is not, why.
func (d *Device) LinkState() (up bool, reason error) {
	s := d.state.Load()
	return s.up, s.reason
}

// Stats returns the device's counters. Drivers add their own with
// Stats().Add; anyone may read them.
func (d *Device) Stats() *Stats { return &d.stats }

// Pool returns the device's buffer pool.
func (d *Device) Pool() *Pool { return d.pool }

// TxQueueLen returns the transmit queue's bound.
func (d *Device) TxQueueLen() int { return d.txLimit }

// AddLinkListener registers fn for link transitions and returns a function
// that unregisters it. Both are safe from any goroutine; a listener
// removed while a notification is in progress may still get that one.
func (d *Device) AddLinkListener(fn LinkListener) (remove func()) {
	if fn == nil {
		return func() {}
	}
	return d.listeners.Add(fn)
}

// Status is a device's state for `ipoibd stats` and its JSON output.
type Status struct {
	Name       string    `json:"name"`
	Link       string    `json:"link"`
	HWAddr     string    `json:"hwaddr"`
	MTU        int       `json:"mtu"`
	Open       bool      `json:"open"`
	LinkUp     bool      `json:"link_up"`
	LinkReason string    `json:"link_reason,omitempty"`
	Pool       PoolStats `json:"pool"`
	Counters   Snapshot  `json:"counters"`
}

// Status returns a snapshot of the device. Safe from any goroutine.
func (d *Device) Status() Status {
	up, reason := d.LinkState()
	s := Status{
		Name:     d.name,
		Link:     d.link.Name(),
		HWAddr:   d.link.AddrString(d.HWAddr()),
		MTU:      d.MTU(),
		Open:     d.IsOpen(),
		LinkUp:   up,
		Pool:     d.pool.Stats(),
		Counters: d.stats.Snapshot(),
	}
	if !up && reason != nil {
		s.LinkReason = reason.Error()
	}
	return s
}
