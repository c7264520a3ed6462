// Any-goroutine side of the event loop.
//
// Everything in this file is safe to call from any goroutine at any time,
// concurrently with the loop and with each other, and after Close (where it
// does nothing or returns a final snapshot). The BH scheduling path uses
// only atomic operations and never takes a lock.

package aio

import (
	"context"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/petermattis/goid"
	"golang.org/x/sys/unix"
)

// eventfdOne is the 8-byte little-endian counter increment written to the
// eventfd.
var eventfdOne = [8]byte{1}

// NewBH creates an idle bottom half that runs fn on the loop each time it
// is scheduled. A nil fn is allowed and does nothing.
func (c *Context) NewBH(name string, fn func()) *BH {
	if fn == nil {
		fn = func() {}
	}
	b := &BH{c: c, fn: fn, name: name}
	b.next = unsafe.Pointer(&unlinked)
	return b
}

// Schedule asks for b to run on the loop and wakes the loop if needed. It
// is wait-free and does not allocate. Calls made before b runs coalesce
// into one run; a call made while b runs makes it run again on a later
// pass. No-op for a deleted BH or a closed Context.
func (b *BH) Schedule() {
	if c := b.queue(); c != nil && !c.InHome() {
		// From the home goroutine there is nobody to wake: the pass in
		// progress, or the next Poll, sees the BH before it sleeps.
		c.Notify()
	}
}

// ScheduleNow is Schedule, except that when the loop is idle (Run parked,
// no pass in progress) the calling goroutine runs b, and whatever else is
// pending, itself instead of waking the loop; see TryRun for what that
// means for the caller. Use it where a goroutine hands the loop work it
// wants done at once, as a link endpoint does with a packet to send.
func (b *BH) ScheduleNow() {
	c := b.queue()
	if c == nil || c.InHome() || c.TryRun() {
		return
	}
	c.Notify()
}

// queue puts b on its Context's queue unless it is there already, and
// returns the Context to wake, or nil when there is nothing to do.
func (b *BH) queue() *Context {
	if b == nil || b.state.Load()&bhScheduled != 0 || b.deleted.Load() {
		return nil
	}
	c := b.c
	if c.closed.Load() {
		return nil
	}
	if b.state.Swap(bhQueued|bhScheduled)&bhQueued == 0 {
		c.push(b)
	}
	return c
}

// Cancel withdraws a pending Schedule. It does not wait for a run that has
// already started. The BH can be scheduled again.
func (b *BH) Cancel() {
	if b == nil {
		return
	}
	b.state.And(^uint32(bhScheduled))
}

// Delete cancels b for good: it never starts again and later Schedule calls
// are ignored. The memory goes when the last reference does. A run that
// started on the loop before Delete is not interrupted.
func (b *BH) Delete() {
	if b == nil {
		return
	}
	b.deleted.Store(true)
	b.state.And(^uint32(bhScheduled))
}

// Name returns the name given to NewBH or ScheduleOneshot.
func (b *BH) Name() string { return b.name }

// ScheduleOneshot runs fn once on the loop. It costs one small allocation;
// use a BH made with NewBH on paths that must not allocate.
func (c *Context) ScheduleOneshot(name string, fn func()) {
	if fn == nil || c.closed.Load() {
		return
	}
	b := &BH{c: c, fn: fn, name: name, oneshot: true}
	b.next = unsafe.Pointer(&unlinked)
	b.state.Store(bhQueued | bhScheduled)
	c.push(b)
	c.Notify()
}

// Call runs fn on the loop and waits until it has run, the way QEMU's
// aio_wait_bh_oneshot does: the one way a goroutine off the loop runs
// control-plane code, which asserts it is home. Called from the home
// goroutine it runs fn at once, since waiting there would wait forever.
// It fails with ErrClosed, without running fn, once the Context is
// closed, including when Close comes while the call waits. The loop must
// be running (Run) or be run by someone, or Call waits until it is; use
// CallContext to bound the wait.
func (c *Context) Call(name string, fn func()) error {
	return c.CallContext(context.Background(), name, func() error { fn(); return nil })
}

// CallContext is Call with a bound on the wait and fn's error passed
// back. When ctx ends first it returns ctx's error wrapped; fn may then
// still run later, on the loop, and its error is dropped, so fn must not
// touch what the caller frees on return.
func (c *Context) CallContext(ctx context.Context, name string, fn func() error) error {
	if c.InHome() {
		return fn()
	}
	if c.closed.Load() {
		return fmt.Errorf("aio: call %s on %q: %w", name, c.name, ErrClosed)
	}
	done := make(chan error, 1)
	c.ScheduleOneshot(name, func() { done <- fn() })
	select {
	case err := <-done:
		return err
	case <-c.gone:
		// Close needs the loop stopped, so a result is either in done
		// already or never coming.
		select {
		case err := <-done:
			return err
		default:
			return fmt.Errorf("aio: call %s on %q: %w", name, c.name, ErrClosed)
		}
	case <-ctx.Done():
		return fmt.Errorf("aio: call %s on %q: %w", name, c.name, ctx.Err())
	}
}

// Notify wakes the loop if it is sleeping, or makes its next pass skip the
// sleep. The eventfd is written only when a pass has announced it may
// sleep, so notifying a busy loop costs two atomic loads.
func (c *Context) Notify() {
	if !c.notified.Load() {
		c.notified.Store(true)
		c.pub.notifies.Add(1)
	}
	if c.notifyMe.Load() != 0 {
		c.kick()
	}
}

// kick wakes a loop that may be sleeping. A loop parked in the netpoller
// is woken by moving its epoll file's read deadline into the past, which
// the runtime turns into an ordinary goroutine wake-up, with no system
// call (net/http aborts reads the same way); a loop sleeping in
// epoll_wait is woken by writing the eventfd. The writers count lets
// Close wait until no write can land on a closed (and perhaps reused) fd
// number.
func (c *Context) kick() {
	c.writers.Add(1)
	if !c.closed.Load() {
		// Counted first so that a loop woken by this write already sees
		// it in Stats.
		c.pub.notifyWrites.Add(1)
		if c.pfile != nil {
			// Fails only after Close, when there is nobody to wake.
			_ = c.pfile.SetReadDeadline(longAgo)
			if c.sysSleepers.Load() != 0 {
				_, _ = unix.Write(c.evfd, eventfdOne[:])
			}
			c.writers.Add(-1)
			// The loop is now queued to run next on this goroutine's P.
			// With GOMAXPROCS=1 there is no other P to run it, and a
			// caller that goes on computing would keep it waiting until
			// preemption (10 ms): yield the P. With more Ps an idle one
			// takes the loop over while the caller goes on; yielding
			// there sends the caller to the back of the global run
			// queue instead, which cost a TCP stream between two loops
			// a third of its throughput (docs/performance.md).
			if c.soloP.Load() {
				runtime.Gosched()
			}
			return
		}
		// EAGAIN means the counter is saturated, i.e. the loop is already
		// going to wake.
		_, _ = unix.Write(c.evfd, eventfdOne[:])
	}
	c.writers.Add(-1)
}

// Stop makes Run return soon. If Run is not running, the next Run returns
// at once; that way a Stop racing with the start of Run is not lost.
func (c *Context) Stop() {
	c.stopReq.Store(true)
	c.Notify()
}

// SetPollParams changes the adaptive polling parameters while the loop
// runs; see WithPolling for their meaning. The loop picks them up on its
// next blocking pass.
func (c *Context) SetPollParams(maxWindow time.Duration, grow, shrink uint) {
	c.pollMax.Store(int64(max(maxWindow, 0)))
	c.pollGrow.Store(uint32(min(grow, 1<<16)))
	c.pollShr.Store(uint32(min(shrink, 1<<16)))
}

// Stats returns the Context's counters. See Stats for how fresh they are.
func (c *Context) Stats() Stats {
	if c.InHome() {
		c.publish()
	}
	p := &c.pub
	return Stats{
		Name:         c.name,
		Iterations:   p.iterations.Load(),
		BHsRun:       p.bhsRun.Load(),
		FDDispatches: p.fdDispatches.Load(),
		TimersFired:  p.timersFired.Load(),
		Notifies:     p.notifies.Load(),
		NotifyWrites: p.notifyWrites.Load(),
		PollTime:     time.Duration(p.pollTime.Load()),
		SleepTime:    time.Duration(p.sleepTime.Load()),
		PollNs:       time.Duration(p.pollNs.Load()),
		PollMax:      time.Duration(c.pollMax.Load()),
	}
}

// Now returns the current time on the Context's clock.
func (c *Context) Now() time.Time { return c.clock.Now() }

// Name returns the Context's name.
func (c *Context) Name() string { return c.name }

// InHome reports whether the caller is the Context's home goroutine. It
// costs an atomic load and a goroutine-id read, a few nanoseconds.
func (c *Context) InHome() bool {
	t := c.homeG.Load()
	return t != 0 && t == goid.Get()
}

// AssertHome panics unless the caller is the Context's home goroutine.
// Control-plane functions of other packages call it first thing, because
// running them elsewhere would race with the loop; that is a bug in the
// caller, not a condition to handle. It also panics when the Context has no
// home at all, so set-up code that runs before Run should hold Acquire.
func (c *Context) AssertHome(op string) {
	t := c.homeG.Load()
	if t != 0 {
		self := goid.Get()
		if self == t {
			return
		}
		panic(fmt.Sprintf("aio: %s called off the home goroutine of context %q (home goroutine %d, caller goroutine %d)", op, c.name, t, self))
	}
	panic(fmt.Sprintf("aio: %s called off the home goroutine of context %q (the context has no home: not running, not acquired)", op, c.name))
}
