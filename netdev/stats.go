package netdev

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/counter"
)

// Counter names one per-device statistic: packets by outcome (sent, or
// dropped for a reason), bytes, link transitions. Its String is the stable
// name `ipoibd stats` prints and JSON carries; names are never reused for
// another meaning.
//
// netdev defines the counters below. A driver layer adds its own with
// RegisterTxDrop, RegisterRxDrop or RegisterCounter, usually from a
// package-level variable so they exist before any device does.
type Counter uint8

// The built-in counters. Dropped packets are counted once, under the first
// reason that applies.
const (
	// TxOK counts packets the driver completed without error.
	TxOK Counter = iota
	// TxBytes counts the frame bytes (link header included) of TxOK
	// packets.
	TxBytes
	// TxNoPath counts packets the driver dropped for lack of a path
	// (errors wrapping ErrNoPath).
	TxNoPath
	// TxNoPeer counts packets whose destination could not be resolved
	// (ErrNoPeer), whether Push or the driver found out.
	TxNoPeer
	// TxLinkDown counts packets offered while the link was down or the
	// device closed (ErrLinkDown).
	TxLinkDown
	// TxQueueFull counts packets offered while the transmit queue was full
	// (ErrQueueFull).
	TxQueueFull
	// TxInvalid counts packets netdev itself refused: larger than the MTU,
	// a malformed destination, no headroom for the link header.
	TxInvalid
	// TxAborted counts packets still queued when the device closed, which
	// were completed with ErrClosed.
	TxAborted
	// TxDriverError counts packets the driver failed for any reason not
	// listed above.
	TxDriverError
	// RxOK counts frames handed to the upper-layer receiver.
	RxOK
	// RxBytes counts the frame bytes (link header included) of RxOK
	// frames.
	RxBytes
	// RxShort counts frames shorter than the link header (ErrShort).
	RxShort
	// RxBadHeader counts frames whose link header did not parse
	// (ErrBadHeader, and Pull errors of no known kind).
	RxBadHeader
	// RxUnknownKey counts frames whose header named an unknown peer key
	// (ErrUnknownKey).
	RxUnknownKey
	// RxNoReceiver counts good frames that arrived with no receiver
	// attached.
	RxNoReceiver
	// RxDropped counts frames dropped for any other reason: the device
	// was closed, or the driver reported a receive error.
	RxDropped
	// LinkUp counts transitions of the link from down to up.
	LinkUp
	// LinkDown counts transitions of the link from up to down.
	LinkDown

	numBuiltin
)

// MaxCounters bounds the counter table: built-in plus registered counters.
// A fixed table lets every device keep its counters in one array of
// atomics that readers walk without locks.
const MaxCounters = 64

// counterKind says which drops a registered cause classifies.
type counterKind uint8

const (
	kindPlain counterKind = iota // only incremented explicitly
	kindTx                       // classifies transmit failures
	kindRx                       // classifies receive failures
)

type counterDef struct {
	name  string
	kind  counterKind
	cause error
}

// counterTable is the process-wide counter table. Entries below n are
// immutable once n covers them, so readers load n and index without a
// lock; writers serialise on mu.
type counterTable struct {
	mu   sync.Mutex
	n    atomic.Int32
	defs [MaxCounters]counterDef
}

// counters is built by a variable initializer rather than init, so that
// package-level registrations (var x = MustRegister(...)) anywhere, this
// package's tests included, find the built-in entries already in place:
// Go initializes a variable before any variable whose initializer uses it.
var counters = newCounterTable()

func newCounterTable() *counterTable {
	t := new(counterTable)
	builtin := [numBuiltin]counterDef{
		TxOK:          {"tx_ok", kindPlain, nil},
		TxBytes:       {"tx_bytes", kindPlain, nil},
		TxNoPath:      {"tx_dropped_no_path", kindTx, ErrNoPath},
		TxNoPeer:      {"tx_dropped_no_peer", kindTx, ErrNoPeer},
		TxLinkDown:    {"tx_dropped_link_down", kindTx, ErrLinkDown},
		TxQueueFull:   {"tx_dropped_queue_full", kindTx, ErrQueueFull},
		TxInvalid:     {"tx_dropped_invalid", kindTx, ErrTooBig},
		TxAborted:     {"tx_aborted", kindTx, ErrClosed},
		TxDriverError: {"tx_driver_error", kindPlain, nil},
		RxOK:          {"rx_ok", kindPlain, nil},
		RxBytes:       {"rx_bytes", kindPlain, nil},
		RxShort:       {"rx_short", kindRx, ErrShort},
		RxBadHeader:   {"rx_bad_header", kindRx, ErrBadHeader},
		RxUnknownKey:  {"rx_unknown_key", kindRx, ErrUnknownKey},
		RxNoReceiver:  {"rx_no_receiver", kindRx, ErrNoReceiver},
		RxDropped:     {"rx_dropped", kindPlain, nil},
		LinkUp:        {"link_up", kindPlain, nil},
		LinkDown:      {"link_down", kindPlain, nil},
	}
	copy(t.defs[:], builtin[:])
	t.n.Store(int32(numBuiltin))
	return t
}

// String returns the counter's stable name, or "counter_N" for a number
// that was never registered.
func (c Counter) String() string {
	if int32(c) < counters.n.Load() {
		return counters.defs[c].name
	}
	return "counter_" + strconv.Itoa(int(c))
}

// RegisterCounter adds a counter that the driver increments itself with
// Stats.Add (a path-record query sent, a packet parked while a path
// resolves). Names are lower-case snake case ([a-z0-9_], starting with a
// letter) and unique; the table holds MaxCounters in all.
func RegisterCounter(name string) (Counter, error) {
	return register(name, kindPlain, nil)
}

// RegisterTxDrop adds a transmit drop reason: a packet whose transmit
// fails with an error for which errors.Is(err, cause) holds is counted
// under it instead of tx_driver_error. Built-in reasons are checked first,
// then registered ones in registration order.
func RegisterTxDrop(name string, cause error) (Counter, error) {
	if cause == nil {
		return 0, fmt.Errorf("register tx drop reason %q: nil cause: %w", name, ErrInvalidConfig)
	}
	return register(name, kindTx, cause)
}

// RegisterRxDrop adds a receive drop reason, matched against the errors of
// LinkProtocol.Pull and Device.ReceiveError the way RegisterTxDrop's are
// against transmit errors.
func RegisterRxDrop(name string, cause error) (Counter, error) {
	if cause == nil {
		return 0, fmt.Errorf("register rx drop reason %q: nil cause: %w", name, ErrInvalidConfig)
	}
	return register(name, kindRx, cause)
}

// MustRegister panics if err is not nil and returns c otherwise. It is for
// package-level registrations, where a bad or duplicate name is a bug:
// var ctrParked = netdev.MustRegister(netdev.RegisterCounter("tx_parked")).
func MustRegister(c Counter, err error) Counter {
	if err != nil {
		panic(err)
	}
	return c
}

func register(name string, kind counterKind, cause error) (Counter, error) {
	if !validCounterName(name) {
		return 0, fmt.Errorf("register counter %q: want [a-z][a-z0-9_]*, at most 64 bytes: %w", name, ErrInvalidConfig)
	}
	counters.mu.Lock()
	defer counters.mu.Unlock()
	n := counters.n.Load()
	for i := range n {
		if counters.defs[i].name == name {
			return 0, fmt.Errorf("register counter %q: %w", name, ErrExists)
		}
	}
	if n >= MaxCounters {
		return 0, fmt.Errorf("register counter %q: %d counters already: %w", name, n, ErrTooManyCounters)
	}
	counters.defs[n] = counterDef{name: name, kind: kind, cause: cause}
	counters.n.Store(n + 1)
	return Counter(n), nil
}

func validCounterName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Counters returns every registered counter in table order, built-in
// first.
func Counters() []Counter {
	n := counters.n.Load()
	out := make([]Counter, n)
	for i := range out {
		out[i] = Counter(i)
	}
	return out
}

// classify picks the counter for a failed packet: the first counter of
// the right kind whose cause err wraps, else fallback. It walks a table of
// at most MaxCounters with errors.Is and allocates nothing.
func classify(err error, kind counterKind, fallback Counter) Counter {
	n := counters.n.Load()
	for i := range n {
		d := &counters.defs[i]
		if d.kind == kind && errors.Is(err, d.cause) {
			return Counter(i)
		}
	}
	return fallback
}

// Stats is a device's counter table, one atomic per Counter. The device's
// loop and its driver add to it; any goroutine may read it at any time.
type Stats struct {
	v [MaxCounters]atomic.Uint64
}

// Add adds n to counter c. Safe from any goroutine; an unregistered c is
// ignored.
func (s *Stats) Add(c Counter, n uint64) {
	if int(c) < len(s.v) {
		s.v[c].Add(n)
	}
}

// Inc adds one to counter c.
func (s *Stats) Inc(c Counter) { s.Add(c, 1) }

// Load returns the current value of c.
func (s *Stats) Load(c Counter) uint64 {
	if int(c) < len(s.v) {
		return s.v[c].Load()
	}
	return 0
}

// Snapshot copies every registered counter, in table order. Each value is
// read atomically; the set is not one instant (a packet in flight may show
// in tx_ok but not yet in tx_bytes).
func (s *Stats) Snapshot() Snapshot {
	n := counters.n.Load()
	out := make(Snapshot, n)
	for i := range out {
		out[i] = CounterValue{Name: counters.defs[i].name, Value: s.v[i].Load()}
	}
	return out
}

// CounterValue is one named counter in a Snapshot.
type CounterValue = counter.Value

// Snapshot is a device's counters in table order: counter.Snapshot, the
// form every layer reports counters in.
type Snapshot = counter.Snapshot
