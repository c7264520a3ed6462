// Bottom-half queue internals. push runs on any goroutine; collectBHs and
// runBHs run only on the home goroutine. The exported BH methods are in
// io.go.

package aio

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// BH state bits. Both live in one word so that the dispatcher can take a BH
// off the queue and learn whether it should run with a single Swap.
const (
	bhQueued    = 1 << 0 // on the producer stack or the ready list
	bhScheduled = 1 << 1 // should run when dispatched; Cancel clears it
)

// BH is a bottom half: a callback that any goroutine can schedule and that
// runs once on the loop per batch of Schedule calls.
type BH struct {
	c       *Context
	fn      func()
	name    string
	state   atomic.Uint32
	deleted atomic.Bool
	oneshot bool

	// next (a *BH) links the producer stack. It holds &unlinked from the
	// moment the loop takes the BH off the stack until a producer pushes it
	// again, so the loop can tell a link that is not written yet from the
	// end of the stack. Producers and the loop race on it only while the BH
	// is on the stack, and use atomics then; the loop resets it with a
	// plain store, which the state word's Swap orders before the next push.
	// That saves a locked instruction per dispatch.
	next unsafe.Pointer

	// Home-only: the ready list and the collection it belongs to.
	runNext *BH
	gen     uint64
}

// unlinked marks a next pointer that its producer has not written yet.
var unlinked BH

// push puts b on the Context's producer stack. It is two unconditional
// atomic exchanges, so it is wait-free: a producer never retries because of
// another. The price is a short window in which b is visible at the top of
// the stack but its link to older entries is not written; collectBHs waits
// out that window.
func (c *Context) push(b *BH) {
	old := c.bhHead.Swap(b)
	atomic.StorePointer(&b.next, unsafe.Pointer(old))
}

// collectBHs moves everything on the producer stack to the end of the
// ready list, oldest first, and tags it with a new collection number.
func (c *Context) collectBHs() {
	top := c.bhHead.Swap(nil)
	if top == nil {
		return
	}
	c.bhGen++
	var first, last *BH // the collected chain, oldest first
	for n := top; n != nil; {
		next := (*BH)(atomic.LoadPointer(&n.next))
		for spins := 0; next == &unlinked; spins++ {
			// The producer is between its two exchanges; it will finish
			// within a few instructions unless it was preempted.
			if spins > 100 {
				runtime.Gosched()
			}
			next = (*BH)(atomic.LoadPointer(&n.next))
		}
		n.next = unsafe.Pointer(&unlinked)
		n.gen = c.bhGen
		n.runNext = first
		first = n
		if last == nil {
			last = n
		}
		n = next
	}
	if c.readyTail == nil {
		c.readyHead = first
	} else {
		c.readyTail.runNext = first
	}
	c.readyTail = last
}

// bhPending reports whether a BH may be waiting, without consuming it.
// Cancelled BHs count: they cost one extra pass, never a lost wake-up.
func (c *Context) bhPending() bool {
	return c.readyHead != nil || c.bhHead.Load() != nil
}

// runBHs runs the BHs scheduled before this call. Ones scheduled while it
// runs are collected by the next pass, so a BH that reschedules itself
// cannot keep the loop here. A nested pass started from a callback runs
// what this pass collected but did not reach yet.
func (c *Context) runBHs() bool {
	if c.bhHead.Load() != nil {
		c.collectBHs()
	}
	my := c.bhGen
	ran := uint64(0)
	for n := c.readyHead; n != nil && n.gen <= my; n = c.readyHead {
		c.readyHead = n.runNext
		if c.readyHead == nil {
			c.readyTail = nil
		}
		n.runNext = nil
		// From here a producer may queue n again; that schedule belongs
		// to a later pass.
		st := n.state.Swap(0)
		if st&bhScheduled != 0 && !n.deleted.Load() {
			fn := n.fn
			if n.oneshot {
				n.fn = nil
			}
			ran++
			fn()
		}
	}
	c.ls.bhsRun += ran
	return ran > 0
}
