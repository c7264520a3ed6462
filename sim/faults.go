package sim

// Fault injection. Every packet a port puts on the wire passes the
// injector once, on the fabric loop, in the order the fabric took them:
// loss first, then duplication, then delay, then reordering. The random
// draws are made in that order from a generator per flow (sending port and
// destination LID) seeded from Config.Seed, so the n-th packet of a flow
// meets the same fate for a seed however the hosts' goroutines interleave
// their flows: the same seed, topology and per-flow traffic give the same
// faults.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// ReorderHold is how long the reordering fault holds a packet back waiting
// for a later one to overtake it; after that it goes out anyway.
const ReorderHold = time.Millisecond

// Faults are the fabric-wide fault knobs. The zero value is a perfect
// fabric.
type Faults struct {
	// Loss is the probability, 0 to 1, that a packet is lost in flight
	// (counted as DropLoss).
	Loss float64
	// Duplicate is the probability that a packet arrives twice.
	Duplicate float64
	// Reorder is the probability that a packet is held back until the
	// next packet has gone past it (or ReorderHold has passed).
	Reorder float64
	// Delay is added to every packet's flight time, on the fabric loop's
	// clock.
	Delay time.Duration
	// Jitter adds a uniformly random extra delay in [0, Jitter); with
	// jitter, packets can also overtake each other.
	Jitter time.Duration
}

func (c Faults) validate() error {
	for _, p := range [...]struct {
		name string
		v    float64
	}{{"loss", c.Loss}, {"duplicate", c.Duplicate}, {"reorder", c.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("%s probability %v outside [0, 1]: %w", p.name, p.v, ErrBadConfig)
		}
	}
	if c.Delay < 0 || c.Jitter < 0 {
		return fmt.Errorf("delay %v, jitter %v: negative: %w", c.Delay, c.Jitter, ErrBadConfig)
	}
	return nil
}

// faultState is the injector; fabric loop only.
type faultState struct {
	f   *Fabric
	cfg Faults
	// seed and flows give each flow its own generator (see flowRand).
	seed  uint64
	flows map[flowKey]*rand.Rand

	delayed   frameHeap
	seq       uint64
	delayTmr  *aio.Timer
	held      *frame
	heldTimer *aio.Timer
}

func (fi *faultState) init(f *Fabric, seed uint64) {
	fi.f = f
	fi.seed = seed
	fi.flows = make(map[flowKey]*rand.Rand)
	fi.delayTmr = f.loop.NewTimer("sim delay "+f.name, fi.releaseDue)
	fi.heldTimer = f.loop.NewTimer("sim reorder "+f.name, fi.flushHeld)
}

// SetFaults replaces the fault knobs. Packets already delayed or held keep
// their fate. Fabric loop.
func (f *Fabric) SetFaults(c Faults) error {
	f.assertHome("SetFaults")
	if err := c.validate(); err != nil {
		return fmt.Errorf("sim: set faults: %w", err)
	}
	f.fi.cfg = c
	return nil
}

// Faults returns the current fault knobs. Fabric loop.
func (f *Fabric) Faults() Faults { return f.fi.cfg }

// flowKey names a flow for the fault draws: the sending port and the
// destination LID (a multicast group's MLID for a group send).
type flowKey struct {
	src  ib.GUID
	dlid ib.LID
}

// flowRand returns the generator of fr's flow, making it on first use
// from the fabric's seed, the port GUID and the DLID.
func (fi *faultState) flowRand(fr *frame) *rand.Rand {
	var k flowKey
	k.src = fr.src.guid
	if len(fr.buf) >= ib.LRHLen {
		k.dlid = ib.LID(binary.BigEndian.Uint16(fr.buf[2:4])) // LRH DLID, IBA 7.7
	}
	r := fi.flows[k]
	if r == nil {
		r = newRand(fi.seed ^ mix64(uint64(k.src)) ^ mix64(uint64(k.dlid)<<1|1))
		fi.flows[k] = r
	}
	return r
}

// mix64 spreads the bits of x (the splitmix64 finalizer), so nearby
// GUIDs and LIDs seed unrelated generators.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// admit decides what happens to a packet that has just left its port.
func (fi *faultState) admit(fr *frame) {
	f := fi.f
	c := &fi.cfg
	if c.Loss <= 0 && c.Duplicate <= 0 {
		fi.delay(fr)
		return
	}
	r := fi.flowRand(fr)
	if c.Loss > 0 && r.Float64() < c.Loss {
		f.drop(DropLoss, fr.src, nil)
		f.dp.put(fr)
		return
	}
	if c.Duplicate > 0 && r.Float64() < c.Duplicate {
		dup := f.dp.get()
		dup.buf = append(dup.buf[:0], fr.buf...)
		dup.sealed, dup.crcsDue = fr.sealed, fr.crcsDue
		dup.src = fr.src
		counter.Inc(&f.counters.V.Duplicated)
		if h := fr.src.node.host; h != nil {
			counter.Inc(&h.counters.V.Duplicated)
		}
		fi.delay(fr)
		fi.delay(dup)
		return
	}
	fi.delay(fr)
}

// delay queues a packet on the delay timer, or passes it on.
func (fi *faultState) delay(fr *frame) {
	c := &fi.cfg
	if c.Delay <= 0 && c.Jitter <= 0 {
		fi.reorder(fr)
		return
	}
	d := c.Delay
	if c.Jitter > 0 {
		d += time.Duration(fi.flowRand(fr).Int64N(int64(c.Jitter)))
	}
	fi.seq++
	fr.due = fi.f.loop.Now().Add(d)
	fr.seq = fi.seq
	fi.delayed.push(fr)
	counter.Inc(&fi.f.counters.V.Delayed)
	if h := fr.src.node.host; h != nil {
		counter.Inc(&h.counters.V.Delayed)
	}
	fi.delayTmr.ResetAt(fi.delayed[0].due)
}

// releaseDue sends every delayed packet whose time has come.
func (fi *faultState) releaseDue() {
	now := fi.f.loop.Now()
	for len(fi.delayed) > 0 && !fi.delayed[0].due.After(now) {
		fi.reorder(fi.delayed.pop())
	}
	if len(fi.delayed) > 0 {
		fi.delayTmr.ResetAt(fi.delayed[0].due)
	}
}

// reorder lets a packet overtake a held one, or holds this one.
func (fi *faultState) reorder(fr *frame) {
	f := fi.f
	if held := fi.held; held != nil {
		fi.held = nil
		fi.heldTimer.Stop()
		f.transmit(fr)
		f.transmit(held)
		return
	}
	if c := fi.cfg.Reorder; c > 0 && fi.flowRand(fr).Float64() < c {
		fi.held = fr
		counter.Inc(&f.counters.V.Reordered)
		if h := fr.src.node.host; h != nil {
			counter.Inc(&h.counters.V.Reordered)
		}
		fi.heldTimer.Reset(ReorderHold)
		return
	}
	f.transmit(fr)
}

// flushHeld sends a held packet nothing overtook in time.
func (fi *faultState) flushHeld() {
	if held := fi.held; held != nil {
		fi.held = nil
		fi.f.transmit(held)
	}
}

// close discards packets still in the injector.
func (fi *faultState) close() {
	fi.delayTmr.Stop()
	fi.heldTimer.Stop()
	for len(fi.delayed) > 0 {
		fr := fi.delayed.pop()
		fi.f.drop(DropFabricClosed, fr.src, nil)
		fi.f.dp.put(fr)
	}
	if fi.held != nil {
		fi.f.drop(DropFabricClosed, fi.held.src, nil)
		fi.f.dp.put(fi.held)
		fi.held = nil
	}
}

// frameHeap is a min-heap of frames by due time, then by arrival.
type frameHeap []*frame

func (h frameHeap) less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].seq < h[j].seq
	}
	return h[i].due.Before(h[j].due)
}

func (h *frameHeap) push(fr *frame) {
	*h = append(*h, fr)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *frameHeap) pop() *frame {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = nil
	s = s[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r := l + 1; r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// FailDevices makes every device open on the host fail as a whole, as an
// HCA reporting a fatal error does (IBV_EVENT_DEVICE_FATAL): each raises
// ib.EventPortDown for every port, then ib.EventDeviceFatal, and from
// then on is dead. Its sends fail with ib.ErrDeviceFatal, nothing reaches
// its queue pairs or MAD ports, and its control calls other than Close
// fail. The host itself stays on the fabric, as a reset HCA does: a
// device opened on it afterwards works. It reports how many devices
// failed. Fabric loop.
func (h *Host) FailDevices() int {
	h.f.assertHome("FailDevices")
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, d := range h.devices {
		d.dead.Store(true)
		for num := 1; num < len(h.ports); num++ {
			d.events.Post(ib.Event{Type: ib.EventPortDown, Port: num})
		}
		d.events.Post(ib.Event{Type: ib.EventDeviceFatal})
	}
	return len(h.devices)
}
