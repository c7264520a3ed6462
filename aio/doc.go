// Package aio is ipoibd's event loop: one Context is one loop, driven by one
// goroutine at a time (the "home" goroutine). The design follows QEMU's
// AioContext; the code and wording here are our own.
//
// # What a Context offers
//
//   - File descriptor handlers (Read, Write, and an optional userspace Poll
//     function with its PollReady callback), monitored with level-triggered
//     epoll.
//   - Bottom halves (BH): callbacks that any goroutine can schedule without
//     a lock and that run once on the loop. One-shot BHs are allocated per
//     call and forgotten after they run.
//   - Timers on the Context's Clock. With a ManualClock, time only moves
//     when a test says so, which makes timer tests deterministic.
//   - Notify, which wakes a sleeping loop.
//   - Adaptive busy polling before the loop goes to sleep.
//   - TryRun and BH.ScheduleNow, with which a goroutine that has work for
//     an idle loop runs it itself instead of waking the loop (QEMU's
//     acquire, poll, release of an AioContext from another thread).
//   - Call and CallContext: run a function on the loop and wait for it
//     (QEMU's aio_wait_bh_oneshot), the one way other goroutines reach
//     control-plane code; Start: run the loop on a goroutine of its own
//     and get back the function that stops and closes it.
//   - Mailbox: values any goroutine posts, handed to the loop in batches
//     by one bottom half (a reader goroutine's messages, buffers freed
//     off the loop).
//
// # Who may call what
//
// The API is split in two rooms, as in the rest of ipoibd:
//
//   - control.go holds the home-only calls: New and Close (no home yet, or
//     from the home goroutine), Run, Poll, Acquire, SetFDHandler,
//     RemoveFDHandler, NewTimer and the Timer methods. They touch loop state
//     without locks, so calling them from another goroutine while the
//     Context has a home is a programming error. SetFDHandler and
//     RemoveFDHandler check it and return ErrNotHome; the cheaper calls
//     (Poll, Timer methods) only check it in -race builds, which hunt such
//     misuse.
//   - io.go holds the calls that are safe from any goroutine at any time:
//     NewBH, BH.Schedule, BH.ScheduleNow, BH.Cancel, BH.Delete,
//     ScheduleOneshot, Call, CallContext, Notify, TryRun, Stop,
//     NewMailbox, Mailbox.Post, Mailbox.Close,
//     SetPollParams, Stats, Now, InHome, AssertHome and Name. Start, in
//     control.go, is for the loop's owner before it has a home.
//
// Before any goroutine is home (no Run, no Acquire, no Poll in progress)
// the home-only calls may be made from any single goroutine: that is the
// set-up phase, when other packages register their handlers.
//
// The home goroutine is identified by its goroutine id (read with
// github.com/petermattis/goid, a nanosecond or two; TestGoroutineIDs checks
// it against the runtime's own numbering). It is the goroutine inside Run,
// a goroutine that called Acquire and has not released it, a goroutine
// inside Poll, or one inside TryRun. No goroutine is locked to its thread:
// the loop is an ordinary goroutine to the Go scheduler.
//
// # One pass of the loop
//
// Poll(blocking) performs one pass:
//
//  1. Prepare. If a BH is pending, a Notify arrived or a timer is due, the
//     pass will not sleep.
//  2. Busy poll (blocking passes only, when polling is enabled and the
//     current poll window is non-zero). The loop spins for up to the poll
//     window calling the handlers' userspace Poll functions (PollReady runs
//     for those that report work) and watching for BHs and Notify. While it
//     spins it has not announced that it may sleep, so producers do not
//     write the eventfd.
//  3. Wait. A blocking pass that still has nothing to do sets the deadline
//     of its sleep (the earliest timer on a real clock), announces that it
//     may sleep (the notify-me counter), checks for work once more, and
//     sleeps until an fd is ready, the deadline passes or Notify wakes it.
//     Non-blocking passes and passes that already have work call
//     epoll_wait with a zero timeout, and skip the system call entirely
//     when no fd handler is registered.
//  4. Accept. The blocking pass clears the "notified" flag before
//     dispatching, so a Notify that arrives during dispatch makes the next
//     pass skip its sleep instead of being lost.
//  5. Dispatch, in this order: BHs, then ready fd handlers (Read before
//     Write for one fd), then due timers in deadline order (ties in arming
//     order).
//
// Poll returns true if a callback ran (a BH, an fd handler, PollReady or a
// timer). A blocking Poll can return false when it was woken only by Notify
// or when the only pending BH was cancelled. Poll(false) never sleeps.
//
// A BH scheduled while BHs are being dispatched, and a timer armed during
// timer dispatch with a deadline that has already passed, run on the next
// pass, so a callback that re-arms itself cannot starve the rest of the
// loop. BHs run in the order they were scheduled within a pass. Nested
// calls to Poll from inside a callback are allowed; a nested pass also runs
// the BHs that the outer pass had collected but not run yet, so a callback
// waiting for another BH in a nested Poll loop cannot deadlock.
//
// # Sleeping without holding a P
//
// A goroutine in a plain system call keeps its P, the runtime's right to
// run Go code, until sysmon notices (20 µs when the process is busy, up
// to 10 ms when it is idle). A loop asleep that way would make every
// goroutine it wakes wait that long, and with GOMAXPROCS=1 nothing else
// could run at all. So the loop sleeps in the Go runtime's netpoller
// instead (SleepNetpoll, the default): the epoll fd, readable whenever an
// fd it watches is ready, is wrapped in a non-blocking os.File, and the
// home goroutine parks in a raw read on it, with the earliest timer as the
// read deadline. It holds no thread and no P while parked. SleepSyscall,
// the plain epoll_wait, remains for benchmarks that compare the two.
//
// # Waking the loop
//
// Notify sets a "notified" flag and wakes the loop only when it has
// announced that it may be sleeping. The loop announces it before its
// final check for work, and producers publish their work before reading the
// announcement, so with sequentially consistent atomics either the loop
// sees the work or the producer sees the announcement and wakes it. No
// wake-up is lost and a busy loop costs producers two atomic loads. A
// parked loop is woken by moving its read deadline into the past (how
// net/http aborts a read), which makes the runtime ready the goroutine
// with no system call; the waker then yields its P, so the loop runs at
// once even where there is no other P. Because the deadline doubles as
// the wake-up, the loop sets it before it announces, never after. In
// SleepSyscall mode the wake-up is an eventfd write.
//
// A BH scheduled from the home goroutine wakes nobody: the pass in
// progress, or the home's next Poll, sees it before sleeping.
//
// # Lending an idle loop
//
// Run parks with its pass lock released. A goroutine that has work for
// the loop while it is parked, a gVisor goroutine sending a packet above
// all, can take the lock (TryRun, or BH.ScheduleNow) and run a few
// non-blocking passes itself, as the home goroutine, then give the loop
// back; Run wakes only if work is left or a timer became due sooner than
// it planned to wake. The packet then reaches the device, and often its
// answer comes back, without a single goroutine switch. Run, on waking,
// takes the lock again before it dispatches; events it collected while a
// borrower ran are collected afresh, since the borrower may have served
// them. Callbacks can therefore run on goroutines other than Run's, but
// never two at once, and InHome and AssertHome hold for whichever
// goroutine runs them.
//
// # Adaptive polling
//
// Polling is disabled by default (maximum window 0) because spinning burns
// a core, which only pays off on data-plane loops. WithPolling or
// SetPollParams enables it. After each blocking pass that waited, the loop
// looks at how long it waited in total (spinning plus sleeping): if the
// work showed up within the current window nothing changes; if it showed up
// later but within the maximum, spinning a little longer would have avoided
// the sleep, so the window grows (to a small base from zero, then ×grow,
// capped at the maximum); if it took longer than the maximum, spinning was
// wasted and the window shrinks (÷shrink, or straight to zero when shrink
// is 0, and to zero once it falls below the base).
//
// # Closing
//
// Close releases the epoll fd and the eventfd. It refuses with ErrRunning
// while Run or a Poll is in progress and with ErrBusy while another
// goroutine is home. After Close, Poll returns false, Run and SetFDHandler
// return ErrClosed, Schedule, Notify and timer arming are no-ops, and no
// callback runs again.
package aio
