// Clocks. Everything in this file is safe from any goroutine.

package aio

import (
	"sync"
	"time"
)

// Clock is the time source of a Context's timers. It is an interface so
// tests can replace wall time with a ManualClock and get reproducible timer
// behaviour.
type Clock interface {
	Now() time.Time
}

// realClock reads the monotonic system clock through time.Now.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// wakingClock is implemented by clocks whose time jumps under the control of
// someone else (ManualClock). A loop cannot compute an epoll timeout for
// such a clock, so instead it sleeps without a timeout and the clock wakes
// every subscribed Context when it moves.
type wakingClock interface {
	Clock
	subscribe(c *Context)
	unsubscribe(c *Context)
}

// ManualClock is a Clock that only moves when Advance or Set is called, so
// timer tests do not depend on the scheduler or the machine's speed. Moving
// it wakes every Context using it, so a loop sleeping in Poll(true) or Run
// fires the timers that became due.
type ManualClock struct {
	mu   sync.Mutex
	now  time.Time
	subs []*Context
}

// NewManualClock returns a ManualClock that reads start until moved.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start}
}

// Now returns the clock's current time.
func (m *ManualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Advance moves the clock forward by d (a negative d moves it back, which
// fires nothing) and wakes the loops that use it.
func (m *ManualClock) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = m.now.Add(d)
	m.wakeLocked()
}

// Set moves the clock to t and wakes the loops that use it.
func (m *ManualClock) Set(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = t
	m.wakeLocked()
}

// wakeLocked notifies under the lock so that a Context cannot be closed and
// unsubscribed halfway through; Notify never blocks, so holding the lock is
// cheap.
func (m *ManualClock) wakeLocked() {
	for _, c := range m.subs {
		c.Notify()
	}
}

func (m *ManualClock) subscribe(c *Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subs = append(m.subs, c)
}

func (m *ManualClock) unsubscribe(c *Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.subs {
		if s == c {
			m.subs = append(m.subs[:i], m.subs[i+1:]...)
			return
		}
	}
}
