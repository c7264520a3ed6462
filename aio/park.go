// How a blocking pass sleeps. Home goroutine only.
//
// A goroutine that makes a plain system call keeps its Go P (the right to
// run Go code) for as long as the call lasts, until the runtime's sysmon
// notices and hands the P to another thread: 20 µs while the process is
// busy, up to 10 ms once it is idle. A loop that sleeps in epoll_wait that
// way makes every goroutine it wakes (gVisor's, a caller waiting for a
// reply) wait for sysmon, and with GOMAXPROCS=1 that is every packet.
// SleepNetpoll avoids it: the loop's epoll fd is itself pollable (readable
// while any fd it watches is ready, the eventfd included), so it is handed
// to the Go runtime's netpoller and the home goroutine parks on it like any
// goroutine reading a socket. While parked it holds neither a P nor a
// thread; when an fd becomes ready or Notify writes the eventfd, the
// netpoller makes it runnable again.

package aio

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/petermattis/goid"
	"golang.org/x/sys/unix"
)

// longAgo is the deadline kick sets: any time in the past makes a parked
// read return at once.
var longAgo = time.Unix(1, 0)

// SleepMode says how a blocking pass of the loop waits for work.
type SleepMode int

const (
	// SleepNetpoll parks the home goroutine in the Go runtime's netpoller
	// on the loop's epoll fd. Sleeping costs no thread and no P, and a
	// wake-up is an ordinary goroutine wake-up. The default.
	SleepNetpoll SleepMode = iota
	// SleepSyscall sleeps in epoll_wait as a plain system call, holding
	// the P until sysmon takes it back. It is how the loop slept before
	// SleepNetpoll and is kept only so benchmarks can compare the two in
	// one process; do not use it otherwise.
	SleepSyscall
)

// String names the mode as the benchmarks print it.
func (m SleepMode) String() string {
	switch m {
	case SleepNetpoll:
		return "netpoll"
	case SleepSyscall:
		return "syscall"
	}
	return fmt.Sprintf("SleepMode(%d)", int(m))
}

// initNetpoll hands the epoll fd to the runtime's netpoller. It fails when
// the runtime refuses the fd, which a deadline probe reveals: os.File only
// supports deadlines on files the netpoller watches.
func (c *Context) initNetpoll() error {
	if err := unix.SetNonblock(c.epfd, true); err != nil {
		return fmt.Errorf("set epoll fd non-blocking: %w", err)
	}
	// From here the os.File owns the epoll fd: closing goes through it.
	f := os.NewFile(uintptr(c.epfd), "aio-epoll-"+c.name)
	c.pfile = f
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("runtime poller refused the epoll fd: %w", err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn of the epoll fd: %w", err)
	}
	c.praw = raw
	// Bound once: a closure made per pass would be an allocation per pass.
	c.parkCheck = c.collectReady
	return nil
}

// collectReady is the readiness check the netpoller runs before parking
// and after every wake-up: it asks epoll without waiting and reports
// whether the pass has something to dispatch.
func (c *Context) collectReady(fd uintptr) bool {
	if c.nfds == 0 {
		// Only the loop's own eventfd is registered, and in this mode
		// nothing writes it: there is nothing to ask the kernel.
		return false
	}
	n, err := unix.EpollWait(int(fd), c.parkBuf, 0)
	if errors.Is(err, unix.EINTR) {
		return false
	}
	c.parkN, c.parkErr = n, err
	return n > 0 || err != nil
}

// armPark sets the deadline of the next park: timeout from now, or none
// when timeout is negative. It must run before the pass announces that it
// may sleep, because from that moment a Notify may move the deadline into
// the past to wake it, and that must not be overwritten. It always sets
// the deadline, since an earlier Notify may have left it in the past.
func (c *Context) armPark(timeout time.Duration) {
	var dl time.Time
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	c.parkDL = dl
	if err := c.pfile.SetReadDeadline(dl); err != nil {
		c.log.Error("aio: setting the park deadline failed", slog.String("context", c.name), slog.Any("err", err))
	}
}

// park waits, without holding a P, until an fd the loop watches is ready,
// a Notify kicks it, or the deadline set by armPark passes, and returns
// what epoll reported then.
func (c *Context) park(buf []unix.EpollEvent) (int, error) {
	c.parkBuf, c.parkN, c.parkErr = buf, 0, nil
	err := c.praw.Read(c.parkCheck)
	c.parkBuf = nil
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A Notify or the next timer; collect whatever fds became
			// ready meanwhile. The loop's eventfd is the only fd when
			// nothing is registered, and in this mode nobody writes it.
			if c.nfds == 0 {
				return 0, nil
			}
			return unix.EpollWait(c.epfd, buf, 0)
		}
		return 0, err
	}
	return c.parkN, c.parkErr
}

// parkOpen is Run's park: it leaves the pass and lets go of the pass lock
// while it sleeps, so that a goroutine with work for an idle loop can run
// it at once (TryRun) rather than wake the loop and wait for it. Only the
// outermost pass of Run parks this way; nested passes and Acquire holders
// keep the lock, and nobody borrows from them.
func (c *Context) parkOpen() []unix.EpollEvent {
	if c.runBuf == nil {
		c.runBuf = make([]unix.EpollEvent, maxEvents)
	}
	self := c.homeG.Load()
	before := c.borrows
	c.depth-- // a borrower's passes are outermost
	c.passMu.Unlock()
	n, err := c.park(c.runBuf)
	c.passMu.Lock()
	c.homeG.Store(self)
	c.depth++
	if c.borrows != before && n > 0 {
		// A borrower ran passes meanwhile and may have served these
		// level-triggered events already; ask again rather than call a
		// handler for readiness that is gone.
		n, err = 0, nil
		if c.nfds > 0 {
			n, err = unix.EpollWait(c.epfd, c.runBuf, 0)
		}
	}
	if err != nil {
		if !errors.Is(err, unix.EINTR) {
			c.log.Error("aio: parking failed", slog.String("context", c.name), slog.Any("err", err))
		}
		return nil
	}
	return c.runBuf[:n]
}

// maxBorrowPasses bounds how long TryRun keeps a caller: after this many
// passes that all found work, the rest is left to the loop.
const maxBorrowPasses = 64

// TryRun runs the loop's pending work on the calling goroutine if the loop
// is idle, and reports whether it did. Safe from any goroutine.
//
// The loop is idle when Run is parked waiting for work, with no pass in
// progress. TryRun then makes the caller the home goroutine for a few
// non-blocking passes (until a pass finds nothing more, at most
// maxBorrowPasses) and hands the loop back, waking Run only if work is
// left or a timer was armed earlier than Run's sleep allows for. This is
// QEMU's acquire-poll-release of an AioContext from another thread, and it
// is what lets a packet a goroutine sends reach the device, and often its
// reply come back, without a goroutine switch. It returns false at once
// when the loop is running a pass, when another goroutine holds it through
// Acquire, when the caller is already home (a nested call), and when the
// loop parks without Run (Poll(true) from a goroutine that is home).
//
// Everything the passes run, runs on the caller's goroutine, so a caller
// must not hold a lock that a loop callback may take.
func (c *Context) TryRun() bool {
	if !c.running.Load() || c.closed.Load() {
		return false
	}
	self := goid.Get()
	if c.homeG.Load() == self || !c.passMu.TryLock() {
		return false
	}
	if !c.running.Load() || c.closed.Load() || c.depth != 0 {
		// Run left, or a home goroutine polls without parking open.
		c.passMu.Unlock()
		return false
	}
	prev := c.homeG.Swap(self)
	c.borrows++
	c.borrowed = true
	for i := 0; i < maxBorrowPasses; i++ {
		if !c.poll(false) && !c.bhPending() {
			break
		}
	}
	wake := c.bhPending()
	if dl, ok := c.nextDeadline(); ok && !c.manual && (c.parkDL.IsZero() || dl.Before(c.parkDL)) {
		// Run sleeps until parkDL (or for good); this timer is sooner.
		wake = true
	}
	if c.sincePub >= publishEvery {
		c.publish()
	}
	c.borrowed = false
	c.homeG.Store(prev)
	c.passMu.Unlock()
	if wake {
		c.Notify()
	}
	return true
}
