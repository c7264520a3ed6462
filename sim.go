package ipoibd

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/sim"
)

// SimConfig shapes a simulated fabric (NewSimFabric).
type SimConfig struct {
	// Name names the fabric; Config.Device reaches its hosts as
	// "sim:NAME/hostI". Empty picks a name unique in the process.
	Name string
	// Hosts is the number of hosts, "host0"...; 0 means 2. Up to 63
	// share one switch; more hang off leaf switches under a spine.
	Hosts int
	// PKeys lists partitions every host's port is a full member of,
	// besides the default one.
	PKeys []uint16
	// Seed seeds the fault injector (Fabric's SetFaults).
	Seed uint64
	// BroadcastMTU is the MTU the simulated SA gives groups whose
	// creator does not ask for one (2048 bytes when zero).
	BroadcastMTU ib.MTU
	// Capture, if set, receives an ERF pcap of every packet on the
	// fabric, as a real-HCA capture looks.
	Capture io.Writer
}

// SimFabric is a simulated InfiniBand fabric in the process: switches, a
// subnet manager and SA, and hosts whose ports carry real wire formats.
// Interfaces open its hosts through Config.Device (Device(i)).
type SimFabric struct {
	name   string
	loop   *aio.Context
	stop   func()
	f      *sim.Fabric
	n      int
	closed atomic.Bool
}

var simSeq atomic.Uint64

// NewSimFabric builds a simulated fabric and starts it on an event loop of
// its own.
func NewSimFabric(cfg SimConfig) (*SimFabric, error) {
	if cfg.Hosts == 0 {
		cfg.Hosts = 2
	}
	if cfg.Hosts < 1 {
		return nil, fmt.Errorf("ipoibd: simulated fabric of %d hosts: %w", cfg.Hosts, ErrConfig)
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("sim%d-%d", os.Getpid(), simSeq.Add(1))
	}
	loop, stop, err := startLoop("sim-" + cfg.Name)
	if err != nil {
		return nil, err
	}
	sc := sim.Config{Name: cfg.Name, Seed: cfg.Seed, MTU: ib.MTU4096, Group: sim.GroupDefaults{MTU: cfg.BroadcastMTU}, Capture: cfg.Capture}
	hc := sim.HostConfig{PKeys: []ib.PKey{ib.PKeyDefault}}
	for _, p := range cfg.PKeys {
		if ib.PKey(p)|ib.PKeyFullMember != ib.PKeyDefault {
			hc.PKeys = append(hc.PKeys, ib.PKey(p)|ib.PKeyFullMember)
		}
	}
	var f *sim.Fabric
	cerr := loop.Call("sim build", func() { f, _, err = sim.Cluster(loop, sc, cfg.Hosts, hc) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("ipoibd: simulated fabric %s: %w", cfg.Name, err)
	}
	return &SimFabric{name: cfg.Name, loop: loop, stop: stop, f: f, n: cfg.Hosts}, nil
}

// Name returns the fabric's name.
func (s *SimFabric) Name() string { return s.name }

// Hosts returns the number of hosts.
func (s *SimFabric) Hosts() int { return s.n }

// Device returns the Config.Device of host i.
func (s *SimFabric) Device(i int) string {
	return fmt.Sprintf("%s:%s/host%d", sim.DriverName, s.name, i)
}

// Loop returns the fabric's event loop. Interfaces given it as
// Tuning.Loop share it, which is how one process runs hundreds of
// simulated hosts on few threads.
func (s *SimFabric) Loop() *aio.Context { return s.loop }

// Do runs fn on the fabric's loop with the simulator's own model, for
// what the public API does not cover (faults, link failures, SM restarts:
// see package sim), and waits for it.
func (s *SimFabric) Do(fn func(f *sim.Fabric) error) error {
	var err error
	if cerr := s.loop.Call("sim do", func() { err = fn(s.f) }); cerr != nil {
		return cerr
	}
	return err
}

// Close stops the fabric. Close the Interfaces on it first.
func (s *SimFabric) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	err := s.loop.Call("sim close", func() { s.f.Close() })
	s.stop()
	return err
}
