package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/pcap"
)

// Errors callers may test for with errors.Is.
var (
	// ErrExists says a node of that name already exists in the fabric.
	ErrExists = errors.New("sim: name already in use")
	// ErrNotFound says no node, port or link of that name or number exists.
	ErrNotFound = errors.New("sim: not found")
	// ErrPortInUse says a port is already connected, or a MAD port is
	// already open on it.
	ErrPortInUse = errors.New("sim: port in use")
	// ErrNotStarted says the operation needs Start to have been called.
	ErrNotStarted = errors.New("sim: fabric not started")
	// ErrBusy says an object is still referenced (a CQ used by a live QP).
	ErrBusy = errors.New("sim: resource in use")
	// ErrLIDInUse says a requested LID already belongs to another port.
	ErrLIDInUse = errors.New("sim: LID in use")
	// ErrBadConfig says a fabric's configuration (Config, a topology, a
	// fault) is out of range. A device's requests (queue pairs,
	// completion queues, address vectors) fail with ib.ErrBadConfig, as
	// on every driver.
	ErrBadConfig = errors.New("sim: bad configuration")
)

// Fabric is a simulated InfiniBand subnet: nodes, links, a subnet manager
// with its SA, and the data path that carries packets between ports. It
// lives on one event loop; see the package documentation for which calls
// belong where.
type Fabric struct {
	name string
	loop *aio.Context
	cfg  Config

	// mu guards hosts and nodes for Probe, which may run anywhere; the
	// fabric loop writes them under mu and reads them without.
	mu       sync.Mutex
	hosts    []*Host
	switches []*Switch
	nodes    map[string]Node
	links    []*Cable
	nodeSeq  int

	started bool
	closed  atomic.Bool

	sm smState
	sa saState
	dp dataPath
	fi faultState

	counters counter.Block[Counters]
	capture  *pcap.ERFWriter
}

// live is the process-wide table of open fabrics, which the "sim" driver
// probes.
var live struct {
	sync.Mutex
	fabrics map[string]*Fabric
}

// New creates an empty fabric on loop. It must be called on loop (or
// before the loop has a home). The fabric is listed by the "sim" driver
// until Close.
func New(loop *aio.Context, cfg Config) (*Fabric, error) {
	if loop == nil {
		return nil, fmt.Errorf("sim: new fabric %q: nil loop: %w", cfg.Name, ErrBadConfig)
	}
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, err)
	}
	f := &Fabric{
		name:  cfg.Name,
		loop:  loop,
		cfg:   cfg,
		nodes: make(map[string]Node),
	}
	f.sm.init()
	f.dp.init(f)
	f.fi.init(f, cfg.Seed)
	if cfg.Capture != nil {
		w, err := pcap.NewERFWriter(cfg.Capture)
		if err != nil {
			return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, err)
		}
		f.capture = w
	}
	live.Lock()
	defer live.Unlock()
	if live.fabrics == nil {
		live.fabrics = make(map[string]*Fabric)
	}
	if _, dup := live.fabrics[cfg.Name]; dup {
		return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, ErrExists)
	}
	live.fabrics[cfg.Name] = f
	return f, nil
}

// Name returns the fabric's name.
func (f *Fabric) Name() string { return f.name }

// Loop returns the loop the fabric runs on.
func (f *Fabric) Loop() *aio.Context { return f.loop }

// Close stops the fabric: the driver no longer lists it, queued and
// delayed packets are discarded, and later sends from its devices fail
// with ib.ErrClosed. Devices stay valid objects until their own Close.
func (f *Fabric) Close() error {
	f.assertHome("Close")
	if f.closed.Swap(true) {
		return fmt.Errorf("sim: close fabric %q: %w", f.name, ib.ErrClosed)
	}
	live.Lock()
	if live.fabrics[f.name] == f {
		delete(live.fabrics, f.name)
	}
	live.Unlock()
	f.dp.close()
	f.fi.close()
	return nil
}

// assertHome panics when called off the fabric's loop while it has a
// home; before that (set-up) any single goroutine may build the fabric.
func (f *Fabric) assertHome(op string) {
	if f.loop.InHome() {
		return
	}
	f.loop.AssertHome("sim.Fabric." + op)
}

// Host returns the host called name, or nil. Fabric loop.
func (f *Fabric) Host(name string) *Host {
	if n, ok := f.nodes[name].(*Host); ok {
		return n
	}
	return nil
}

// Switch returns the switch called name, or nil. Fabric loop.
func (f *Fabric) Switch(name string) *Switch {
	if n, ok := f.nodes[name].(*Switch); ok {
		return n
	}
	return nil
}

// Hosts returns the hosts in the order they were added. Safe from any
// goroutine.
func (f *Fabric) Hosts() []*Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Host(nil), f.hosts...)
}

// Links returns every link in the order they were made. Fabric loop.
func (f *Fabric) Cables() []*Cable { return append([]*Cable(nil), f.links...) }

// Counters returns the fabric-wide packet counters. Safe from any
// goroutine.
func (f *Fabric) Counters() Counters { return f.counters.Load() }

// newRand returns the fault injector's generator for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
