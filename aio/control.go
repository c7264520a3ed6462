// Control plane of the event loop.
//
// Everything in this file is home-only: call it from the Context's home
// goroutine (inside Run or a callback, after Acquire, or inside Poll), or,
// before the Context has any home, from the single goroutine that is
// setting it up. New is the exception: it creates a Context and can run
// anywhere. SetFDHandler and RemoveFDHandler verify the caller and return
// ErrNotHome; Poll and the Timer methods, which sit on hot paths, verify it
// only in -race builds.

package aio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petermattis/goid"
	"golang.org/x/sys/unix"
)

var contextSeq atomic.Uint64

// New creates a Context with its epoll instance and wake-up eventfd. Nobody
// is home until Run, Acquire or Poll is called.
func New(opts ...Option) (*Context, error) {
	cfg := config{clock: realClock{}, logger: slog.Default(), pollGrow: defaultPollGrow}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.clock == nil {
		cfg.clock = realClock{}
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.name == "" {
		cfg.name = fmt.Sprintf("aio-%d", contextSeq.Add(1))
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("aio %q: epoll_create1: %w", cfg.name, err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("aio %q: eventfd: %w", cfg.name, err)
	}
	// Gen 0 in the event tags the eventfd; user registrations never use it.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("aio %q: epoll_ctl add eventfd %d: %w", cfg.name, evfd, err)
	}
	c := &Context{
		name:  cfg.name,
		clock: cfg.clock,
		log:   cfg.logger,
		epfd:  epfd,
		evfd:  evfd,
		sleep: cfg.sleep,
		gone:  make(chan struct{}),
	}
	if c.sleep == SleepNetpoll {
		if err := c.initNetpoll(); err != nil {
			unix.Close(evfd)
			if c.pfile != nil {
				c.pfile.Close()
			} else {
				unix.Close(epfd)
			}
			return nil, fmt.Errorf("aio %q: %w", cfg.name, err)
		}
	}
	c.SetPollParams(cfg.pollMax, cfg.pollGrow, cfg.pollShrink)
	c.soloP.Store(runtime.GOMAXPROCS(0) == 1)
	if wc, ok := cfg.clock.(wakingClock); ok {
		c.manual = true
		wc.subscribe(c)
	}
	c.log.Debug("aio: context created", slog.String("context", c.name),
		slog.Int("epfd", epfd), slog.Int("eventfd", evfd),
		slog.Duration("poll_max", cfg.pollMax))
	return c, nil
}

// Close releases the epoll fd and the eventfd. It does not close the fds
// that have handlers; their owners do. It fails with ErrRunning while Run
// or Poll is in progress (including from a callback), with ErrBusy while
// another goroutine is home, and with ErrClosed the second time. A
// goroutine that holds Acquire may Close and then release.
func (c *Context) Close() error {
	if c.running.Load() {
		return fmt.Errorf("aio %q: close: %w", c.name, ErrRunning)
	}
	if c.homeMu.TryLock() {
		defer c.homeMu.Unlock()
	} else {
		t := c.homeG.Load()
		if t == 0 || t != goid.Get() {
			if c.running.Load() {
				return fmt.Errorf("aio %q: close: %w", c.name, ErrRunning)
			}
			return fmt.Errorf("aio %q: close: %w", c.name, ErrBusy)
		}
		// We are home: depth is ours to read.
		if c.depth > 0 || c.running.Load() {
			return fmt.Errorf("aio %q: close: %w", c.name, ErrRunning)
		}
	}
	if c.closed.Swap(true) {
		return fmt.Errorf("aio %q: close: %w", c.name, ErrClosed)
	}
	// Calls still waiting for a bottom half the loop will never run now
	// return ErrClosed instead of waiting for ever.
	close(c.gone)
	if wc, ok := c.clock.(wakingClock); ok {
		wc.unsubscribe(c)
	}
	// A Notify that saw the Context open may still be about to write the
	// eventfd; closing under it could hit a recycled fd number.
	for c.writers.Load() != 0 {
		runtime.Gosched()
	}
	err1 := unix.Close(c.evfd)
	var err2 error
	if c.pfile != nil {
		err2 = c.pfile.Close()
	} else {
		err2 = unix.Close(c.epfd)
	}
	c.log.Debug("aio: context closed", slog.String("context", c.name))
	if err1 != nil {
		return fmt.Errorf("aio %q: close eventfd %d: %w", c.name, c.evfd, err1)
	}
	if err2 != nil {
		return fmt.Errorf("aio %q: close epoll fd %d: %w", c.name, c.epfd, err2)
	}
	return nil
}

// Run makes the calling goroutine the Context's home, locks it to its OS
// thread and runs blocking passes until Stop is called or ctx is done. It
// returns nil after Stop and ctx.Err() after cancellation. It fails with
// ErrRunning if the loop already runs, ErrBusy if another goroutine holds
// Acquire, and ErrClosed after Close. A goroutine that holds Acquire may
// call Run itself.
func (c *Context) Run(ctx context.Context) error {
	if c.closed.Load() {
		return fmt.Errorf("aio %q: run: %w", c.name, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	self := goid.Get()
	owned := false
	if c.homeG.Load() == self {
		if c.running.Load() || c.depth > 0 {
			return fmt.Errorf("aio %q: run from inside the loop: %w", c.name, ErrRunning)
		}
	} else {
		if !c.homeMu.TryLock() {
			if c.running.Load() {
				return fmt.Errorf("aio %q: run: %w", c.name, ErrRunning)
			}
			return fmt.Errorf("aio %q: run: %w", c.name, ErrBusy)
		}
		if c.closed.Load() {
			c.homeMu.Unlock()
			return fmt.Errorf("aio %q: run: %w", c.name, ErrClosed)
		}
		c.homeG.Store(self)
		c.passMu.Lock()
		owned = true
	}
	c.running.Store(true)
	c.inRun = true
	var cancelled atomic.Bool
	stopWatch := context.AfterFunc(ctx, func() {
		cancelled.Store(true)
		c.Notify()
	})
	defer func() {
		stopWatch()
		c.stopReq.Store(false)
		c.publish()
		c.inRun = false
		c.running.Store(false)
		if owned {
			c.homeG.Store(0)
			c.passMu.Unlock()
			c.homeMu.Unlock()
		}
	}()
	for !c.stopReq.Load() && !cancelled.Load() {
		c.poll(true)
	}
	if cancelled.Load() {
		return ctx.Err()
	}
	return nil
}

// Poll runs one pass of the loop and reports whether a callback ran.
// Poll(false) never sleeps; Poll(true) sleeps until there is something to
// do, but may return false after a bare Notify.
//
// Called while nobody is home, Poll makes the caller home for the duration
// of the pass. Called from a goroutine
// that is not home while another one is, it is a programming error; -race
// builds panic, other builds do not check. Tests that drive Poll in a loop
// should hold Acquire, which also makes InHome true between passes.
func (c *Context) Poll(blocking bool) bool {
	if c.closed.Load() {
		return false
	}
	if c.homeG.Load() == 0 {
		return c.pollAway(blocking)
	}
	if raceEnabled {
		c.checkHomeOrPanic("Poll")
	}
	return c.poll(blocking)
}

// pollAway runs one pass on a goroutine that is home only for that pass.
func (c *Context) pollAway(blocking bool) bool {
	if !c.homeMu.TryLock() {
		// Someone else became home between our check and now.
		return false
	}
	defer c.homeMu.Unlock()
	if c.closed.Load() {
		return false
	}
	// Free unless a borrower is finishing its last pass after Run left.
	c.passMu.Lock()
	defer c.passMu.Unlock()
	c.homeG.Store(goid.Get())
	defer c.homeG.Store(0)
	defer c.publish()
	return c.poll(blocking)
}

// Acquire makes the calling goroutine the Context's home until release is
// called, so that a test or a set-up routine can call Poll and home-only
// functions directly and InHome reports true. It blocks while another
// goroutine is home (Run, another Acquire). Call release exactly once from the same goroutine; extra calls
// do nothing. Acquire by the goroutine that is already home nests and
// returns a release that only undoes the thread lock.
func (c *Context) Acquire() (release func()) {
	self := goid.Get()
	if c.homeG.Load() == self {
		return func() {}
	}
	c.homeMu.Lock()
	c.passMu.Lock()
	c.homeG.Store(self)
	return sync.OnceFunc(func() {
		c.publish()
		c.homeG.Store(0)
		c.passMu.Unlock()
		c.homeMu.Unlock()
	})
}

// checkHome returns ErrNotHome when the Context has a home and the caller
// is not it.
func (c *Context) checkHome(op string) error {
	t := c.homeG.Load()
	if t != 0 && t != goid.Get() {
		return fmt.Errorf("aio %q: %s: %w", c.name, op, ErrNotHome)
	}
	return nil
}

// checkHomeOrPanic is the -race-build guard of the hot home-only calls.
func (c *Context) checkHomeOrPanic(op string) {
	if c.homeG.Load() != 0 {
		c.AssertHome(op)
	}
}

// SetFDHandler installs, replaces or (with an all-nil h) removes the
// handler of fd. It is safe while the loop is dispatching, including from
// a handler: a replaced handler's new callbacks serve events already
// collected, and a removed handler is never called again, even for an event
// already in the current batch. It returns an error for a bad or closed fd,
// for fds epoll cannot watch (regular files), from a goroutine that is not
// home, and after Close.
func (c *Context) SetFDHandler(fd int, h FDHandler) error {
	if c.closed.Load() {
		return fmt.Errorf("aio %q: set handler for fd %d: %w", c.name, fd, ErrClosed)
	}
	if err := c.checkHome("SetFDHandler"); err != nil {
		return err
	}
	if h.empty() {
		if fd >= 0 && fd < len(c.fds) && c.fds[fd] != nil {
			return c.removeFD(fd)
		}
		return nil
	}
	return c.setFD(fd, h)
}

// RemoveFDHandler removes the handler of fd; it is never called again. It
// returns ErrNotRegistered if fd has none. Removing the handler of an fd
// that was already closed succeeds.
func (c *Context) RemoveFDHandler(fd int) error {
	if c.closed.Load() {
		return fmt.Errorf("aio %q: remove handler for fd %d: %w", c.name, fd, ErrClosed)
	}
	if err := c.checkHome("RemoveFDHandler"); err != nil {
		return err
	}
	return c.removeFD(fd)
}

// NewTimer creates a stopped timer that runs fn on the loop when due. The
// name appears in panics and debugging output. A nil fn is allowed and does
// nothing when the timer fires.
func (c *Context) NewTimer(name string, fn func()) *Timer {
	if fn == nil {
		fn = func() {}
	}
	return &Timer{c: c, fn: fn, name: name, index: timerIdle}
}

// ResetAt arms t for deadline on the Context's clock, replacing any earlier
// arming. A deadline that has passed fires on the next pass. No-op after
// Close.
func (t *Timer) ResetAt(deadline time.Time) {
	c := t.c
	if c.closed.Load() {
		return
	}
	if raceEnabled {
		c.checkHomeOrPanic("Timer.ResetAt")
	}
	c.arm(t, deadline)
}

// Reset arms t to fire d from now on the Context's clock.
func (t *Timer) Reset(d time.Duration) {
	t.ResetAt(t.c.clock.Now().Add(d))
}

// Stop disarms t and reports whether it was armed. A stopped timer does not
// fire, even if it was due in the pass that is dispatching.
func (t *Timer) Stop() bool {
	if raceEnabled {
		t.c.checkHomeOrPanic("Timer.Stop")
	}
	return t.c.disarm(t)
}

// Pending reports whether t is armed.
func (t *Timer) Pending() bool {
	return t.index != timerIdle
}

// Deadline returns when t will fire, or the zero Time if it is not armed.
func (t *Timer) Deadline() time.Time {
	if t.index == timerIdle {
		return time.Time{}
	}
	return t.deadline
}

// Name returns the name given to NewTimer.
func (t *Timer) Name() string { return t.name }

// Start runs the loop on a goroutine of its own and returns the function
// that ends it: stop the loop, wait for Run to return, close the Context.
// stop reports the first failure of the three (a Run that refused to
// start, say) and may be called more than once; later calls return the
// same answer. It is what a program or test that owns a loop wants from
// Run, written once.
func (c *Context) Start() (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	return func() error {
		once.Do(func() {
			cancel()
			if rerr := <-ran; rerr != nil && !errors.Is(rerr, context.Canceled) {
				err = rerr
			}
			if cerr := c.Close(); cerr != nil && err == nil {
				err = cerr
			}
		})
		return err
	}
}
