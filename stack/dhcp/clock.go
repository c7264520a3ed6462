// Clocks for the client's and server's timers. Everything in this file is
// safe from any goroutine.

package dhcp

import (
	"sync"
	"time"
)

// Clock is the time source of the client's retransmissions and lease
// timers and of the server's lease book-keeping. It is an interface so that
// tests can run hour-long leases through renewal, rebinding and expiry on a
// ManualClock in milliseconds.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f on a goroutine of the clock's choosing once d has
	// passed, unless the returned Timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call; it reports whether the call was still pending.
	Stop() bool
}

// SystemClock is wall-clock time from the time package.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// ManualClock is a Clock that moves only when Advance or Set is called.
// Timer functions that fall due run on the goroutine that moved the clock,
// in deadline order, with Now reading each timer's own deadline while it
// runs, so a chain of timers unfolds as it would have in real time.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers map[*manualTimer]struct{}
}

// NewManualClock returns a ManualClock reading start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, timers: make(map[*manualTimer]struct{})}
}

// manualTimer is one AfterFunc of a ManualClock. seq orders timers with
// equal deadlines by creation, as real timers would most likely fire.
type manualTimer struct {
	c    *ManualClock
	when time.Time
	seq  uint64
	f    func()
}

// Now returns the clock's current time.
func (m *ManualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc arranges for f to run when the clock has been moved d past
// now. A d of zero or less fires at the next Advance or Set, not at once:
// f must never run on the caller's goroutine, which may hold locks f needs.
func (m *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	t := &manualTimer{c: m, when: m.now.Add(d), seq: m.seq, f: f}
	m.timers[t] = struct{}{}
	return t
}

// Stop implements Timer.
func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}

// Pending returns how many timers wait to fire, for tests that want to
// know a component has armed its next deadline.
func (m *ManualClock) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

// Advance moves the clock forward by d, firing what falls due.
func (m *ManualClock) Advance(d time.Duration) { m.Set(m.Now().Add(d)) }

// Set moves the clock to t, firing every timer due at or before t in
// deadline order, including timers those functions arm on the way. A t
// before now sets the clock back and fires nothing.
func (m *ManualClock) Set(t time.Time) {
	for {
		m.mu.Lock()
		next := m.earliestLocked()
		if next == nil || next.when.After(t) {
			m.now = t
			m.mu.Unlock()
			return
		}
		delete(m.timers, next)
		if next.when.After(m.now) {
			m.now = next.when
		}
		m.mu.Unlock()
		next.f()
	}
}

// earliestLocked returns the timer due first, or nil. A linear scan: a
// test clock carries a handful of timers per client.
func (m *ManualClock) earliestLocked() *manualTimer {
	var best *manualTimer
	for t := range m.timers {
		if best == nil || t.when.Before(best.when) || (t.when.Equal(best.when) && t.seq < best.seq) {
			best = t
		}
	}
	return best
}
