// One pass of the loop and the adaptive polling policy. Home goroutine
// only; see the package documentation for the shape of a pass.

package aio

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// havePwait2 is cleared the first time the kernel lacks epoll_pwait2
// (before Linux 5.11); the loop then rounds timeouts up to milliseconds.
var havePwait2 atomic.Bool

func init() { havePwait2.Store(true) }

// timeout values for a pass.
const (
	noWait  time.Duration = 0
	forever time.Duration = -1
)

// poll is one pass; the caller has made sure we are home.
func (c *Context) poll(blocking bool) bool {
	// No defer: a panicking callback leaves the Context unusable anyway,
	// and the deferred closure is measurable on the BH fast path.
	c.depth++
	c.ls.iterations++

	progress := false
	timeout := noWait
	announced, slept, sysSleep := false, false, false
	var waited, polled time.Duration
	if blocking {
		timeout = c.timeout()
		if timeout != noWait {
			if c.pollMax.Load() > 0 && c.pollNs > 0 {
				var found bool
				found, progress, polled = c.busyPoll(timeout)
				if found {
					timeout = noWait
				}
			}
		}
		if timeout != noWait {
			// Announce that we may sleep, then look once more: a producer
			// that published before reading the announcement is seen here,
			// one that published after it writes the eventfd.
			switch {
			case c.pfile == nil:
			case c.borrowed:
				// Run is parked on the epoll file: leave its deadline
				// alone and sleep in epoll_wait, woken by the eventfd.
				c.sysSleepers.Add(1)
				sysSleep = true
			default:
				c.armPark(timeout)
			}
			c.notifyMe.Add(1)
			announced = true
			timeout = c.timeout()
			slept = timeout != noWait
			if slept {
				// Readers of Stats see an idle loop's counters whole.
				c.publish()
			}
		}
	}

	var events []unix.EpollEvent
	// Without user fds the kernel has nothing to tell a pass that does not
	// sleep; with only pollable fds, a successful busy poll has just asked
	// all of them.
	if slept || (c.nfds > 0 && !(progress && c.allPoll)) {
		var start time.Time
		if slept {
			start = time.Now()
		}
		if slept && c.beforePark != nil {
			c.beforePark()
		}
		if slept && c.inRun && c.depth == 1 && c.pfile != nil {
			events = c.parkOpen()
		} else {
			events = c.wait(timeout)
		}
		if slept {
			waited = time.Since(start)
			c.ls.sleepTime += waited
		}
	}
	if announced {
		c.notifyMe.Add(-1)
	}
	if sysSleep {
		c.sysSleepers.Add(-1)
	}
	if blocking {
		// Accept before dispatching: a Notify that comes in while we run
		// callbacks must make the next pass skip its sleep.
		if c.notified.Load() {
			c.notified.Store(false)
		}
		if slept || polled > 0 {
			c.adjustPolling(polled + waited)
		}
	}

	if c.readyHead != nil || c.bhHead.Load() != nil {
		progress = c.runBHs() || progress
	}
	if len(events) > 0 {
		progress = c.dispatchFDs(events) || progress
	}
	// Timers cost a clock read, which on a busy loop (a pass per packet)
	// is a tenth of its time. So a borrower (TryRun) leaves them to Run,
	// which is parked with the earliest deadline as its wake-up (on a
	// manual clock Run has no deadline to wake at, so there a borrower
	// fires them); and a
	// run of passes that find work without sleeping looks at the clock
	// every timerCheckEvery passes, firing timers at most that many
	// passes late. A pass that slept always looks, and so do a single
	// pass asked for by Poll(false) and every pass on a manual clock,
	// whose time moves only when a test says.
	if (len(c.timers) > 0 || len(c.late) > 0) && (!c.borrowed || c.manual) {
		c.passesSinceTimers++
		if slept || !blocking || c.manual || c.passesSinceTimers >= timerCheckEvery {
			c.passesSinceTimers = 0
			progress = c.runTimers() || progress
		}
	}
	c.sincePub++
	if c.sincePub >= publishEvery {
		c.publish()
	}
	c.depth--
	return progress
}

// timeout decides how long the pass may sleep: noWait when work is known to
// be pending, forever when nothing but an fd or Notify can wake it, or the
// time to the earliest timer on a real clock.
func (c *Context) timeout() time.Duration {
	if c.bhPending() || c.notified.Load() {
		return noWait
	}
	dl, ok := c.nextDeadline()
	if !ok {
		return forever
	}
	now := c.clock.Now()
	if !dl.After(now) {
		return noWait
	}
	if c.manual {
		// Only Advance or Set can make it due, and they Notify us.
		return forever
	}
	return dl.Sub(now)
}

// busyPoll spins for up to the current window (and not past the next timer)
// looking for work without a system call. found reports that the pass
// should not sleep; progress that a PollReady callback ran.
func (c *Context) busyPoll(timeout time.Duration) (found, progress bool, spent time.Duration) {
	limit := c.pollNs
	if timeout > 0 && timeout < limit {
		limit = timeout
	}
	start := time.Now()
	for {
		if len(c.pollers) > 0 && c.runPollers() {
			found, progress = true, true
		}
		if c.bhPending() || c.notified.Load() {
			found = true
		}
		spent = time.Since(start)
		if found || spent >= limit {
			break
		}
	}
	c.ls.pollTime += spent
	return found, progress, spent
}

// adjustPolling applies the adaptive policy described in the package
// documentation. block is how long the pass waited for work, spinning and
// sleeping together.
func (c *Context) adjustPolling(block time.Duration) {
	limit := time.Duration(c.pollMax.Load())
	switch {
	case limit <= 0:
		c.pollNs = 0
	case block <= c.pollNs:
		// The window caught the work: leave it alone.
	case block > limit:
		// Even the longest window would have missed; spinning is waste.
		if s := time.Duration(c.pollShr.Load()); s > 1 {
			c.pollNs /= s
			if c.pollNs < pollBase {
				c.pollNs = 0
			}
		} else {
			c.pollNs = 0
		}
	case c.pollNs < limit:
		// A longer window would have caught it.
		if c.pollNs == 0 {
			c.pollNs = min(pollBase, limit)
		} else {
			g := time.Duration(c.pollGrow.Load())
			if g < 2 {
				g = defaultPollGrow
			}
			c.pollNs *= g
		}
	}
	if c.pollNs > limit {
		c.pollNs = max(limit, 0)
	}
}

// wait asks epoll for ready fds. Nested passes each get their own buffer
// because the outer pass is still walking its own.
func (c *Context) wait(timeout time.Duration) []unix.EpollEvent {
	for len(c.evbufs) < c.depth {
		c.evbufs = append(c.evbufs, make([]unix.EpollEvent, maxEvents))
	}
	buf := c.evbufs[c.depth-1]
	var n int
	var err error
	if timeout != noWait && c.pfile != nil && !c.borrowed {
		n, err = c.park(buf)
	} else {
		n, err = epollWait(c.epfd, buf, timeout)
	}
	switch {
	case err == nil:
		return buf[:n]
	case errors.Is(err, unix.EINTR):
		// A signal hit a call that was not to sleep (epollWait retries
		// the ones that were): the pass finds nothing, the next looks
		// again.
	default:
		c.log.Error("aio: epoll_wait failed", slog.String("context", c.name), slog.Any("err", err))
	}
	return nil
}

// epollWait sleeps with nanosecond precision where the kernel allows it, so
// real-clock timers are not rounded to whole milliseconds. A signal cuts
// epoll_wait short with EINTR, and in a Go program signals are routine:
// the runtime preempts a thread with SIGURG, which can land just as its
// goroutine enters the call. epollWait then sleeps again for what is left
// of the timeout, so that a blocking Poll does not come back having done
// nothing (a Notify meanwhile still wakes it: the eventfd stays readable).
func epollWait(epfd int, events []unix.EpollEvent, timeout time.Duration) (int, error) {
	var end time.Time
	if timeout > 0 {
		end = time.Now().Add(timeout)
	}
	for {
		n, err := epollWaitOnce(epfd, events, timeout)
		if !errors.Is(err, unix.EINTR) || timeout == noWait {
			return n, err
		}
		if timeout > 0 {
			if timeout = time.Until(end); timeout <= 0 {
				return 0, nil
			}
		}
	}
}

// epollWaitOnce is one epoll_pwait2 (or epoll_wait) call.
func epollWaitOnce(epfd int, events []unix.EpollEvent, timeout time.Duration) (int, error) {
	if timeout > 0 && havePwait2.Load() {
		ts := unix.NsecToTimespec(int64(timeout))
		r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)),
			uintptr(unsafe.Pointer(&ts)), 0, 0)
		if e == 0 {
			return int(r), nil
		}
		if e != unix.ENOSYS {
			return 0, e
		}
		havePwait2.Store(false)
	}
	ms := -1
	if timeout >= 0 {
		// Round up: waking before a timer's deadline would be a wasted pass.
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	return unix.EpollWait(epfd, events, ms)
}
