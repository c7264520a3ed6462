// Timer internals: a binary min-heap ordered by deadline, then by arming
// order. Everything here runs on the home goroutine only; the exported
// Timer methods are in control.go.

package aio

import "time"

// Timer positions outside the heap.
const (
	timerIdle = -1 // not armed
	timerLate = -2 // on Context.late: due, but armed during timer dispatch
)

// Timer runs a callback on the loop once its deadline, read on the
// Context's clock, has been reached. A Timer fires at most once per arming.
type Timer struct {
	c        *Context
	fn       func()
	name     string
	deadline time.Time
	seq      uint64 // arming order, breaks deadline ties
	index    int    // heap index, or timerIdle / timerLate
}

type timerHeap []*Timer

func (h timerHeap) less(i, j int) bool {
	a, b := h[i], h[j]
	if a.deadline.Equal(b.deadline) {
		return a.seq < b.seq
	}
	return a.deadline.Before(b.deadline)
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.swap(i, m)
		i = m
	}
}

func (h *timerHeap) push(t *Timer) {
	t.index = len(*h)
	*h = append(*h, t)
	h.up(t.index)
}

func (h *timerHeap) remove(i int) *Timer {
	old := *h
	n := len(old) - 1
	t := old[i]
	if i != n {
		old.swap(i, n)
	}
	old[n] = nil
	*h = old[:n]
	if i != n {
		(*h).down(i)
		(*h).up(i)
	}
	t.index = timerIdle
	return t
}

// arm inserts t, or parks it on the late list when it is being armed from
// a timer callback for a moment that has already passed: firing it in the
// same dispatch could loop forever.
func (c *Context) arm(t *Timer, deadline time.Time) {
	c.disarm(t)
	c.armSeq++
	t.seq = c.armSeq
	t.deadline = deadline
	if c.firing && !deadline.After(c.firingNow) {
		t.index = timerLate
		c.late = append(c.late, t)
		return
	}
	c.timers.push(t)
}

// disarm reports whether t was armed.
func (c *Context) disarm(t *Timer) bool {
	switch {
	case t.index >= 0:
		c.timers.remove(t.index)
		return true
	case t.index == timerLate:
		for i, l := range c.late {
			if l == t {
				c.late = append(c.late[:i], c.late[i+1:]...)
				break
			}
		}
		t.index = timerIdle
		return true
	}
	return false
}

// nextDeadline returns the earliest deadline, if any timer is armed.
func (c *Context) nextDeadline() (time.Time, bool) {
	if len(c.late) > 0 {
		return c.late[0].deadline, true // already due by construction
	}
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].deadline, true
}

// runTimers fires every timer due at one reading of the clock, earliest
// first. Reading the clock once keeps the set of timers fired by a pass
// well defined.
func (c *Context) runTimers() bool {
	if len(c.late) > 0 {
		for _, t := range c.late {
			c.timers.push(t)
		}
		clear(c.late)
		c.late = c.late[:0]
	}
	if len(c.timers) == 0 {
		return false
	}
	now := c.clock.Now()
	if c.timers[0].deadline.After(now) {
		return false
	}
	// A nested pass started from a callback fires timers of its own and
	// must restore our view when it returns.
	prevFiring, prevNow := c.firing, c.firingNow
	c.firing, c.firingNow = true, now
	fired := uint64(0)
	for len(c.timers) > 0 && !c.timers[0].deadline.After(now) {
		t := c.timers.remove(0)
		fired++
		c.ls.timersFired++
		t.fn()
	}
	c.firing, c.firingNow = prevFiring, prevNow
	return fired > 0
}
