// The Context type, its options and errors. Fields are grouped by who may
// touch them: atomics are shared with other goroutines, everything else is
// owned by the home goroutine.

package aio

import (
	"errors"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Errors returned by Context methods. They are wrapped with the Context's
// name and the failing operation; test them with errors.Is.
var (
	// ErrClosed reports use of a Context after Close.
	ErrClosed = errors.New("aio: context closed")
	// ErrRunning reports Close, or a second Run, while the loop is running.
	ErrRunning = errors.New("aio: context is running")
	// ErrBusy reports that another goroutine is the Context's home.
	ErrBusy = errors.New("aio: context is home to another goroutine")
	// ErrNotHome reports a home-only call made from another goroutine.
	ErrNotHome = errors.New("aio: not called from the context's home goroutine")
	// ErrNotRegistered reports RemoveFDHandler on an fd without a handler.
	ErrNotRegistered = errors.New("aio: no handler registered for fd")
)

// Default adaptive-polling parameters. Polling is off unless asked for
// because a spinning loop costs a whole core.
const (
	defaultPollGrow = 2
	// pollBase is the first non-zero window: long enough to cover a
	// cross-core hand-off, short enough that a wrong guess costs little.
	pollBase = 4 * time.Microsecond
	// maxEvents bounds one epoll_wait; more ready fds wait for the next
	// pass, which is fine for level-triggered epoll.
	maxEvents = 64
	// publishEvery sets how often a run of passes that do not sleep
	// copies its counters to the shared Stats; a pass about to sleep
	// always does.
	publishEvery = 64
	// timerCheckEvery sets how often a run of passes that do not sleep
	// reads the clock for due timers (see poll).
	timerCheckEvery = 4
	// procsEvery sets how many publications pass between two looks at
	// GOMAXPROCS (Context.soloP): a program that changes it (or a Go
	// runtime that follows a container's CPU limit) is seen within a few
	// hundred sleeps.
	procsEvery = 256
)

type config struct {
	sleep      SleepMode
	clock      Clock
	name       string
	pollMax    time.Duration
	pollGrow   uint
	pollShrink uint
	logger     *slog.Logger
}

// Option configures New.
type Option func(*config)

// WithClock makes the Context's timers use c instead of the system clock.
func WithClock(c Clock) Option {
	return func(cfg *config) { cfg.clock = c }
}

// WithPolling enables adaptive busy polling with a window of at most
// maxWindow.
// grow is the factor the window is multiplied by when polling would have
// helped (0 or 1 mean 2); shrink is the divisor applied when it did not (0
// means drop straight to zero). maxWindow 0, the default, disables polling.
func WithPolling(maxWindow time.Duration, grow, shrink uint) Option {
	return func(cfg *config) {
		cfg.pollMax, cfg.pollGrow, cfg.pollShrink = maxWindow, grow, shrink
	}
}

// WithSleep chooses how a blocking pass waits for work; see SleepMode.
// The default, SleepNetpoll, is the one to use; SleepSyscall exists so the
// two can be measured against each other in one process.
func WithSleep(m SleepMode) Option {
	return func(cfg *config) { cfg.sleep = m }
}

// WithName names the Context in errors, panics, logs and Stats.
func WithName(name string) Option {
	return func(cfg *config) { cfg.name = name }
}

// WithLogger sets the logger for the rare conditions the loop cannot report
// through a return value (an unexpected epoll_wait error). Default:
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) { cfg.logger = l }
}

// Context is one event loop. See the package documentation for which
// goroutine may call which method.
type Context struct {
	name   string
	clock  Clock
	manual bool // clock wakes us itself; never compute timeouts from it
	log    *slog.Logger
	epfd   int
	evfd   int
	sleep  SleepMode

	// Parking in the Go netpoller (SleepNetpoll): the epoll fd wrapped as
	// a non-blocking os.File, its raw conn, and the state the pre-bound
	// readiness check shares with park, kept here so a pass allocates
	// nothing.
	pfile      *os.File
	inRun      bool              // home-only: the passes are Run's own
	runBuf     []unix.EpollEvent // Run's park buffer, apart from the pass buffers a borrower uses
	parkDL     time.Time         // deadline of Run's current park; zero when none
	borrows    uint64            // borrowed pass runs so far; Run compares it across a park
	beforePark func()            // tests: runs after the last check for work, right before sleeping
	borrowed   bool              // inside TryRun's passes, while Run is parked on the epoll file
	praw       syscall.RawConn
	parkCheck  func(fd uintptr) bool
	parkBuf    []unix.EpollEvent
	parkN      int
	parkErr    error

	// Shared with any goroutine.
	closed   atomic.Bool
	gone     chan struct{} // closed by Close: no callback will run again
	running  atomic.Bool   // inside Run
	stopReq  atomic.Bool   // Stop was called; consumed by Run
	homeG    atomic.Int64  // goroutine id of the home goroutine, 0 if none
	homeMu   sync.Mutex    // held by whoever is home (Run, Acquire, temporary Poll)
	passMu   sync.Mutex    // held by whoever runs passes: Run except while parked, Acquire, Poll, a borrower
	notifyMe atomic.Int32  // >0 while a pass may sleep in epoll_wait
	// soloP says GOMAXPROCS was 1 when last looked at (see kick). The
	// loop refreshes it now and then: reading GOMAXPROCS takes the
	// scheduler's lock, too dear for every wake-up.
	soloP    atomic.Bool
	notified atomic.Bool // a Notify is not yet accepted
	// sysSleepers counts passes asleep in epoll_wait although the loop
	// parks in the netpoller: blocking Polls nested in a borrowed pass.
	// Notify writes the eventfd for them.
	sysSleepers atomic.Int32
	writers     atomic.Int32 // Notify calls writing the eventfd; Close waits for them
	bhHead      atomic.Pointer[BH]
	pollMax     atomic.Int64
	pollGrow    atomic.Uint32
	pollShr     atomic.Uint32
	pub         pubStats

	// Home-only.
	depth     int    // nesting of Poll on the home goroutine
	readyHead *BH    // BHs collected from bhHead, oldest first
	readyTail *BH    //
	bhGen     uint64 // collection counter, orders nested passes
	fds       []*fdHandler
	nfds      int
	fdGen     uint32
	pollers   []*fdHandler // handlers with a userspace Poll, copy-on-write
	allPoll   bool         // every registered handler has a Poll function
	evbufs    [][]unix.EpollEvent
	timers    timerHeap
	late      []*Timer // armed during timer dispatch and already due
	firing    bool     // inside timer dispatch
	firingNow time.Time
	armSeq    uint64
	pollNs    time.Duration
	ls        loopStats
	sincePub  int
	publishes uint64
	// passesSinceTimers counts passes since the last look at the timers.
	passesSinceTimers int
}

// Stats is a snapshot of a Context's counters. Counters kept by the loop
// are published at the end of every blocking pass and every 64th
// non-blocking one, so a snapshot taken from another goroutine can trail a
// loop that only runs Poll(false); a snapshot taken on the home goroutine
// is exact.
type Stats struct {
	Name         string
	Iterations   uint64        // passes of the loop (Poll calls, nested ones included)
	BHsRun       uint64        // BH callbacks run
	FDDispatches uint64        // Read, Write and PollReady callbacks run
	TimersFired  uint64        // timer callbacks run
	Notifies     uint64        // Notify calls that raised the notified flag (repeats before the loop accepts are coalesced)
	NotifyWrites uint64        // eventfd writes, i.e. wake-ups of a loop that might be sleeping
	PollTime     time.Duration // total time spent busy polling
	SleepTime    time.Duration // total time spent in epoll_wait with a non-zero timeout
	PollNs       time.Duration // current adaptive poll window
	PollMax      time.Duration // configured maximum window (0: polling disabled)
}

// loopStats is the home goroutine's private copy of the counters, so the hot
// path pays for plain increments and publishes them in batches.
type loopStats struct {
	iterations, bhsRun, fdDispatches, timersFired uint64
	pollTime, sleepTime                           time.Duration
}

type pubStats struct {
	iterations, bhsRun, fdDispatches, timersFired atomic.Uint64
	notifies, notifyWrites                        atomic.Uint64
	pollTime, sleepTime, pollNs                   atomic.Int64
}

// publish copies the home goroutine's counters where other goroutines can
// read them.
func (c *Context) publish() {
	c.sincePub = 0
	if c.publishes++; c.publishes%procsEvery == 0 {
		c.soloP.Store(runtime.GOMAXPROCS(0) == 1)
	}
	c.pub.iterations.Store(c.ls.iterations)
	c.pub.bhsRun.Store(c.ls.bhsRun)
	c.pub.fdDispatches.Store(c.ls.fdDispatches)
	c.pub.timersFired.Store(c.ls.timersFired)
	c.pub.pollTime.Store(int64(c.ls.pollTime))
	c.pub.sleepTime.Store(int64(c.ls.sleepTime))
	c.pub.pollNs.Store(int64(c.pollNs))
}
