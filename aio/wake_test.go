package aio

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petermattis/goid"
)

// withProcs runs fn as subtests at GOMAXPROCS=1 and 8: one P is where a
// loop that kept its P or spun would starve the goroutines it waits for;
// eight is where wake-ups race on several threads at once.
func withProcs(t *testing.T, fn func(t *testing.T)) {
	for _, procs := range []int{1, 8} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			fn(t)
		})
	}
}

// TestNoLostWakeupBeforePark publishes work from another goroutine exactly
// in the window between the loop's last check for work and its sleep, for
// each way of publishing (Schedule, ScheduleNow, ScheduleOneshot, a bare
// Notify followed by Stop). A lost wake-up leaves the loop asleep for good
// and the test times out on that round.
func TestNoLostWakeupBeforePark(t *testing.T) {
	withProcs(t, func(t *testing.T) {
		for _, mode := range []SleepMode{SleepNetpoll, SleepSyscall} {
			t.Run(mode.String(), func(t *testing.T) { lostWakeupRounds(t, mode) })
		}
	})
}

func lostWakeupRounds(t *testing.T, mode SleepMode) {
	const rounds = 300
	c := newCtx(t, WithSleep(mode))
	var ran atomic.Int64
	bh := c.NewBH("work", func() { ran.Add(1) })
	publish := make(chan int)
	published := make(chan struct{})
	var armed atomic.Bool
	// The hook runs on the loop right before it sleeps: it asks a
	// producer to publish and waits until the producer has, so the work
	// lands after the last check and before the sleep, every time.
	c.beforePark = func() {
		if !armed.Swap(false) {
			return
		}
		publish <- int(ran.Load())
		<-published
	}
	go func() {
		for i := range publish {
			switch i % 3 {
			case 0:
				bh.Schedule()
			case 1:
				bh.ScheduleNow()
			default:
				c.ScheduleOneshot("oneshot", func() { ran.Add(1) })
			}
			published <- struct{}{}
		}
	}()
	runLoop(t, c)
	t.Cleanup(func() { close(publish) })
	for r := range rounds {
		// Arm the hook and make the loop take one more pass, so that it
		// goes back to sleep with the hook armed.
		armed.Store(true)
		c.Notify()
		want := int64(r + 1)
		deadline := time.Now().Add(10 * time.Second)
		for ran.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the work published right before the park never ran: a wake-up was lost (%+v)", r, c.Stats())
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// TestWakeLatencyMax bounds the worst wake-up, not the typical one: a lost
// wake-up would show as an outlier the size of the loop's next timeout
// (here: none, so forever), and a loop that held its P while asleep as
// outliers up to sysmon's 10 ms. Each sample lets the loop fall asleep
// first. The bound is generous because CI machines share their cores; the
// figures are in the log.
func TestWakeLatencyMax(t *testing.T) {
	const samples = 500
	const bound = 250 * time.Millisecond
	withProcs(t, func(t *testing.T) {
		c := newCtx(t)
		woke := make(chan time.Time, 1)
		bh := c.NewBH("wake", func() { woke <- time.Now() })
		runLoop(t, c)
		lat := make([]time.Duration, 0, samples)
		for range samples {
			waitFor(t, "loop asleep", 5*time.Second, func() bool { return c.notifyMe.Load() != 0 })
			t0 := time.Now()
			bh.Schedule()
			select {
			case t1 := <-woke:
				lat = append(lat, t1.Sub(t0))
			case <-time.After(bound):
				t.Fatalf("no wake-up within %v after %d samples: a wake-up was lost or starved", bound, len(lat))
			}
		}
		slices.Sort(lat)
		t.Logf("wake latency over %d samples: p50 %v, p99 %v, max %v", samples, lat[samples/2], lat[samples*99/100], lat[samples-1])
		if max := lat[samples-1]; max > bound {
			t.Fatalf("worst wake-up %v exceeds %v", max, bound)
		}
	})
}

// TestNotifyStressProcs is TestNotifyStress at one and at eight Ps.
func TestNotifyStressProcs(t *testing.T) {
	withProcs(t, TestNotifyStress)
}

// TestTryRun checks when a goroutine may run the loop's work itself.
func TestTryRun(t *testing.T) {
	t.Run("not running", func(t *testing.T) {
		c := newCtx(t)
		if c.TryRun() {
			t.Fatal("TryRun ran a loop that has no Run")
		}
	})
	t.Run("acquired", func(t *testing.T) {
		c := newCtx(t)
		release := c.Acquire()
		defer release()
		got := make(chan bool)
		go func() { got <- c.TryRun() }()
		if <-got {
			t.Fatal("TryRun borrowed a loop held through Acquire")
		}
	})
	t.Run("idle loop runs on the caller", func(t *testing.T) {
		c := newCtx(t)
		self := goid.Get()
		var on int64
		var inHome bool
		bh := c.NewBH("tx", func() { on = goid.Get(); inHome = c.InHome() })
		runLoop(t, c)
		waitParked(t, c)
		bh.ScheduleNow()
		if on != self || !inHome {
			t.Fatalf("BH ran on goroutine %d (in home %v), want the caller %d", on, inHome, self)
		}
		// The loop still works afterwards, on its own goroutine.
		done := make(chan int64)
		c.ScheduleOneshot("after", func() { done <- goid.Get() })
		if g := <-done; g == self {
			t.Fatal("a plain Schedule ran on the caller")
		}
		// Run publishes its counters at the end of its pass.
		waitFor(t, "both runs counted", 5*time.Second, func() bool { return c.Stats().BHsRun == 2 })
	})
	t.Run("nested call from the loop", func(t *testing.T) {
		c := newCtx(t)
		runLoop(t, c)
		var nested bool
		onLoop(t, c, func() { nested = c.TryRun() })
		if nested {
			t.Fatal("TryRun from the home goroutine borrowed the loop")
		}
	})
	t.Run("busy loop", func(t *testing.T) {
		c := newCtx(t)
		runLoop(t, c)
		inside, leave := make(chan struct{}), make(chan struct{})
		c.ScheduleOneshot("busy", func() { close(inside); <-leave })
		<-inside
		ran := make(chan int64, 1)
		bh := c.NewBH("later", func() { ran <- goid.Get() })
		if c.TryRun() {
			t.Fatal("TryRun borrowed a loop in the middle of a pass")
		}
		bh.ScheduleNow() // falls back to Schedule
		close(leave)
		if g := <-ran; g == goid.Get() {
			t.Fatal("the BH ran on the caller although the loop was busy")
		}
	})
	// borrowArms has a borrower arm a timer for d on an idle loop and
	// waits for it to fire.
	borrowArms := func(t *testing.T, c *Context, d time.Duration, why string) {
		fired := make(chan struct{})
		tm := c.NewTimer("armed", func() { close(fired) })
		bh := c.NewBH("arm", func() { tm.Reset(d) })
		runLoop(t, c)
		waitFor(t, "loop asleep", 5*time.Second, func() bool { return c.notifyMe.Load() != 0 })
		bh.ScheduleNow()
		select {
		case <-fired:
		case <-time.After(5 * time.Second):
			t.Fatal(why)
		}
	}
	t.Run("timer armed by a borrower wakes the loop", func(t *testing.T) {
		borrowArms(t, newCtx(t), 5*time.Millisecond, "a timer armed during a borrowed pass never fired: Run kept sleeping")
	})
	t.Run("due timer on a manual clock fires in a borrowed pass", func(t *testing.T) {
		// On a manual clock Run sleeps with no deadline, so a timer that
		// is due when a borrower arms it must fire then, not wait for
		// the next Advance.
		c := newCtx(t, WithClock(NewManualClock(time.Unix(1000, 0))))
		borrowArms(t, c, 0, "a due timer armed during a borrowed pass on a manual clock never fired")
	})
	t.Run("blocking poll nested in a borrowed pass", func(t *testing.T) {
		c := newCtx(t)
		woke := c.NewBH("wake", nil)
		var slept bool
		bh := c.NewBH("nested", func() {
			go func() {
				time.Sleep(10 * time.Millisecond)
				woke.Schedule()
			}()
			t0 := time.Now()
			c.Poll(true) // sleeps until the other goroutine schedules
			slept = time.Since(t0) >= 5*time.Millisecond
		})
		runLoop(t, c)
		waitParked(t, c)
		bh.ScheduleNow()
		if !slept {
			t.Fatal("the nested blocking Poll did not wait for its wake-up")
		}
	})
	t.Run("work left over goes to the loop", func(t *testing.T) {
		c := newCtx(t)
		var n atomic.Int64
		var self *BH
		self = c.NewBH("again", func() {
			if n.Add(1) < 3*maxBorrowPasses {
				self.Schedule()
			}
		})
		runLoop(t, c)
		waitFor(t, "loop asleep", 5*time.Second, func() bool { return c.notifyMe.Load() != 0 })
		self.ScheduleNow()
		waitFor(t, "all runs", 5*time.Second, func() bool { return n.Load() == 3*maxBorrowPasses })
	})
}

// waitParked waits until c's Run is parked with its pass lock free, so
// that a TryRun from now on borrows the loop. The loop announces that it
// may sleep (notifyMe) before it lets go of the lock to park: a test that
// saw only the announcement could find the lock still held, its
// ScheduleNow handed to the loop instead of run on the caller.
func waitParked(t *testing.T, c *Context) {
	t.Helper()
	waitFor(t, "loop parked", 5*time.Second, func() bool {
		if c.notifyMe.Load() == 0 || !c.passMu.TryLock() {
			return false
		}
		c.passMu.Unlock()
		return true
	})
}

// TestGoroutineIDs guards the goroutine ids home identity rests on: they
// must match the runtime's own numbering (a Go release that moved the
// field the library reads would break this first) and differ between
// goroutines.
func TestGoroutineIDs(t *testing.T) {
	fromStack := func() int64 {
		buf := make([]byte, 64)
		buf = buf[:runtime.Stack(buf, false)]
		f := bytes.Fields(buf)
		if len(f) < 2 {
			t.Fatalf("unexpected stack header %q", buf)
		}
		id, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			t.Fatalf("stack header %q: %v", buf, err)
		}
		return id
	}
	if got, want := goid.Get(), fromStack(); got != want {
		t.Fatalf("goid.Get() = %d, runtime says %d", got, want)
	}
	var wg sync.WaitGroup
	ids := make([]int64, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g, s := goid.Get(), fromStack(); g != s {
				t.Errorf("goroutine %d: goid.Get() = %d", s, g)
			}
			ids[i] = goid.Get()
		}()
	}
	wg.Wait()
	slices.Sort(ids)
	if len(slices.Compact(ids)) != len(ids) {
		t.Fatalf("goroutines share ids: %v", ids)
	}
}

// TestParkNeverHoldsP shows the point of parking in the netpoller: with
// one P, a goroutine made runnable by the loop runs while the loop sleeps
// on, instead of waiting for sysmon to take the P back.
func TestParkNeverHoldsP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := newCtx(t)
	runLoop(t, c)
	for range 50 {
		waitFor(t, "loop asleep", 5*time.Second, func() bool { return c.notifyMe.Load() != 0 })
		ch := make(chan struct{})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		go func() { close(ch) }()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("a goroutine could not run while the loop slept: the loop holds the only P")
		}
		cancel()
	}
}
