package aio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newCtx creates a Context that is closed when the test ends.
func newCtx(t testing.TB, opts ...Option) *Context {
	t.Helper()
	c, err := New(append([]Option{WithName(t.Name())}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// home makes the test goroutine the Context's home until the test ends.
func home(t *testing.T, c *Context) {
	t.Helper()
	release := c.Acquire()
	t.Cleanup(release)
}

// runLoop runs c on its own goroutine until the test ends.
func runLoop(t *testing.T, c *Context) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		c.Stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after Stop")
		}
	})
}

// onLoop runs fn on the loop and waits for it.
func onLoop(t *testing.T, c *Context, fn func()) {
	t.Helper()
	done := make(chan struct{})
	c.ScheduleOneshot("onLoop", func() { fn(); close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("callback did not run on the loop")
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatalf("pipe2: %v", err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func mustWrite(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		t.Fatalf("write fd %d: %v", fd, err)
	}
}

func drain(fd int) {
	var buf [64]byte
	for {
		if n, err := unix.Read(fd, buf[:]); n <= 0 || err != nil {
			return
		}
	}
}

// --- bottom halves ---

func TestBHOrderWithinPass(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	var got []string
	mk := func(name string) *BH { return c.NewBH(name, func() { got = append(got, name) }) }
	a, b, d := mk("a"), mk("b"), mk("d")
	a.Schedule()
	b.Schedule()
	c.ScheduleOneshot("c", func() { got = append(got, "c") })
	d.Schedule()
	a.Schedule() // coalesces with the pending run, keeps its place
	if !c.Poll(false) {
		t.Fatal("Poll(false) reported no progress with BHs pending")
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if c.Poll(false) {
		t.Fatal("second Poll reported progress with nothing pending")
	}
}

func TestBHScheduledDuringDispatchRunsNextPass(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	var got []string
	var self, other *BH
	other = c.NewBH("other", func() { got = append(got, "other") })
	runs := 0
	self = c.NewBH("self", func() {
		got = append(got, "self")
		runs++
		if runs < 3 {
			self.Schedule() // must not starve the pass
			other.Schedule()
		}
	})
	self.Schedule()
	for pass, want := range [][]string{
		{"self"},
		{"self", "self", "other"},
		// other was still pending when self rescheduled it, so the two
		// requests coalesced into one run.
		{"self", "self", "other", "self"},
	} {
		if !c.Poll(false) {
			t.Fatalf("pass %d: no progress", pass)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pass %d: ran %v, want %v", pass, got, want)
		}
	}
	if c.Poll(false) {
		t.Fatal("progress after the BH stopped rescheduling itself")
	}
}

func TestBHCancelDelete(t *testing.T) {
	tests := []struct {
		name string
		act  func(c *Context, b *BH, other *BH)
		want int
	}{
		{"cancel before run", func(c *Context, b, _ *BH) { b.Schedule(); b.Cancel() }, 0},
		{"cancel then schedule", func(c *Context, b, _ *BH) { b.Schedule(); b.Cancel(); b.Schedule() }, 1},
		{"cancel idle", func(c *Context, b, _ *BH) { b.Cancel() }, 0},
		{"delete pending", func(c *Context, b, _ *BH) { b.Schedule(); b.Delete() }, 0},
		{"schedule after delete", func(c *Context, b, _ *BH) { b.Delete(); b.Schedule() }, 0},
		{"deleted by earlier BH in same pass", func(c *Context, b, other *BH) {
			other.Schedule()
			b.Schedule()
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCtx(t)
			home(t, c)
			runs := 0
			b := c.NewBH("b", func() { runs++ })
			other := c.NewBH("deleter", func() { b.Delete() })
			tc.act(c, b, other)
			c.Poll(false)
			c.Poll(false)
			b.Schedule()
			c.Poll(false)
			want := tc.want
			if !b.deleted.Load() {
				want++ // the final Schedule runs a BH that is still alive
			}
			if runs != want {
				t.Fatalf("ran %d times, want %d", runs, want)
			}
		})
	}
}

func TestOneshot(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	n := 0
	for range 3 {
		c.ScheduleOneshot("inc", func() { n++ })
	}
	c.ScheduleOneshot("nil", nil) // ignored, must not panic
	c.Poll(false)
	c.Poll(false)
	if n != 3 {
		t.Fatalf("oneshots ran %d times, want 3", n)
	}
}

func TestNestedPollRunsOuterSlice(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	bRan := false
	a := c.NewBH("a", func() {
		for i := 0; !bRan && i < 10; i++ {
			c.Poll(false)
		}
	})
	b := c.NewBH("b", func() { bRan = true })
	a.Schedule()
	b.Schedule()
	c.Poll(false)
	if !bRan {
		t.Fatal("nested Poll did not run the BH collected by the outer pass")
	}
}

// --- fd handlers ---

func TestFDHandlers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (fd int, h func(hit func()) FDHandler, trigger func())
	}{
		{"pipe read", func(t *testing.T) (int, func(func()) FDHandler, func()) {
			r, w := pipe(t)
			return r, func(hit func()) FDHandler {
				return FDHandler{Read: func() { drain(r); hit() }}
			}, func() { mustWrite(t, w) }
		}},
		{"pipe write", func(t *testing.T) (int, func(func()) FDHandler, func()) {
			_, w := pipe(t)
			return w, func(hit func()) FDHandler {
				return FDHandler{Write: hit}
			}, func() {}
		}},
		{"eventfd read", func(t *testing.T) (int, func(func()) FDHandler, func()) {
			fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			return fd, func(hit func()) FDHandler {
				return FDHandler{Read: func() { drain(fd); hit() }}
			}, func() { unix.Write(fd, eventfdOne[:]) }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCtx(t)
			home(t, c)
			fd, mk, trigger := tc.setup(t)
			hits := 0
			if err := c.SetFDHandler(fd, mk(func() { hits++ })); err != nil {
				t.Fatal(err)
			}
			trigger()
			if !c.Poll(true) {
				t.Fatal("Poll(true) returned no progress")
			}
			if hits != 1 {
				t.Fatalf("handler ran %d times, want 1", hits)
			}
			if err := c.RemoveFDHandler(fd); err != nil {
				t.Fatal(err)
			}
			trigger()
			c.Poll(false)
			if hits != 1 {
				t.Fatalf("removed handler ran")
			}
			if got := c.Stats().FDDispatches; got != 1 {
				t.Fatalf("FDDispatches = %d, want 1", got)
			}
		})
	}
}

func TestFDRemoveDuringDispatch(t *testing.T) {
	tests := []struct {
		name string
		// act is called by whichever handler runs first, with the other fd.
		act func(t *testing.T, c *Context, self, other int)
		// reuse: the other fd's number is re-registered for a new,
		// readable pipe; the stale event must not reach its handler.
		reuse bool
	}{
		{"remove other", func(t *testing.T, c *Context, _, other int) {
			if err := c.RemoveFDHandler(other); err != nil {
				t.Error(err)
			}
		}, false},
		{"set other to nil", func(t *testing.T, c *Context, _, other int) {
			if err := c.SetFDHandler(other, FDHandler{}); err != nil {
				t.Error(err)
			}
		}, false},
		{"remove self and other", func(t *testing.T, c *Context, self, other int) {
			if err := c.RemoveFDHandler(self); err != nil {
				t.Error(err)
			}
			if err := c.RemoveFDHandler(other); err != nil {
				t.Error(err)
			}
		}, false},
		{"remove other and reuse its number", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCtx(t)
			home(t, c)
			r1, w1 := pipe(t)
			r2, w2 := pipe(t)
			var ran []int
			newcomer := 0
			handler := func(self, other int) FDHandler {
				return FDHandler{Read: func() {
					ran = append(ran, self)
					drain(self)
					if len(ran) > 1 {
						return
					}
					if !tc.reuse {
						tc.act(t, c, self, other)
						return
					}
					c.RemoveFDHandler(other)
					var p [2]int
					if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
						t.Error(err)
						return
					}
					defer unix.Close(p[1])
					if err := unix.Dup2(p[0], other); err != nil {
						t.Error(err)
					}
					unix.Close(p[0])
					unix.Write(p[1], []byte{1})
					if err := c.SetFDHandler(other, FDHandler{Read: func() { newcomer++; drain(other) }}); err != nil {
						t.Error(err)
					}
				}}
			}
			if err := c.SetFDHandler(r1, handler(r1, r2)); err != nil {
				t.Fatal(err)
			}
			if err := c.SetFDHandler(r2, handler(r2, r1)); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, w1)
			mustWrite(t, w2)
			// Both fds are ready before the pass, so both events are in
			// one epoll batch.
			c.Poll(false)
			if len(ran) != 1 {
				t.Fatalf("handlers ran for fds %v; the removed one must not run", ran)
			}
			if tc.reuse && newcomer != 0 {
				t.Fatalf("stale event from the removed registration reached the new handler")
			}
			if tc.reuse {
				c.Poll(false)
				if newcomer != 1 {
					t.Fatalf("new handler on the reused fd ran %d times, want 1", newcomer)
				}
			}
		})
	}
}

func TestFDChangeDuringDispatch(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	r1, w1 := pipe(t)
	r2, w2 := pipe(t)
	var got []string
	h := func(name string, self, other int) FDHandler {
		return FDHandler{Read: func() {
			got = append(got, name)
			drain(self)
			if len(got) == 1 {
				c.SetFDHandler(other, FDHandler{Read: func() { got = append(got, "replaced"); drain(other) }})
			}
		}}
	}
	c.SetFDHandler(r1, h("one", r1, r2))
	c.SetFDHandler(r2, h("two", r2, r1))
	mustWrite(t, w1)
	mustWrite(t, w2)
	c.Poll(false)
	if len(got) != 2 || got[1] != "replaced" {
		t.Fatalf("ran %v, want the replaced handler second", got)
	}
	// Change a registered fd from read to write interest.
	writes := 0
	if err := c.SetFDHandler(r1, FDHandler{Write: func() { writes++ }}); err == nil {
		// A pipe's read end never becomes writable; the change itself must
		// succeed and the old Read must not run.
		mustWrite(t, w1)
		c.Poll(false)
		if slices.Contains(got[2:], "one") {
			t.Fatal("old Read ran after the handler was changed")
		}
	} else {
		t.Fatal(err)
	}
}

func TestFDErrors(t *testing.T) {
	c := newCtx(t)
	r, _ := pipe(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Nothing may open files between this close and the call below, or
	// the number could be reused.
	closedR, closedW := pipe(t)
	unix.Close(closedR)
	unix.Close(closedW)
	h := FDHandler{Read: func() {}}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"negative fd", func() error { return c.SetFDHandler(-1, h) }, unix.EBADF},
		{"closed fd", func() error { return c.SetFDHandler(closedR, h) }, unix.EBADF},
		{"regular file", func() error { return c.SetFDHandler(int(f.Fd()), h) }, unix.EPERM},
		{"loop's own eventfd", func() error { return c.SetFDHandler(c.evfd, h) }, unix.EINVAL},
		{"remove unregistered", func() error { return c.RemoveFDHandler(r) }, ErrNotRegistered},
		{"set nil on unregistered", func() error { return c.SetFDHandler(r, FDHandler{}) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("off home", func(t *testing.T) {
		runLoop(t, c)
		waitFor(t, "loop home", 5*time.Second, func() bool { return c.homeG.Load() != 0 })
		if err := c.SetFDHandler(r, h); !errors.Is(err, ErrNotHome) {
			t.Fatalf("SetFDHandler off home: %v, want ErrNotHome", err)
		}
		onLoop(t, c, func() {
			if err := c.SetFDHandler(r, h); err != nil {
				t.Errorf("SetFDHandler on home: %v", err)
			}
		})
	})
}

// --- timers ---

func TestTimersManualClock(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	tests := []struct {
		name  string
		arm   map[string]time.Duration // timer name -> delay
		steps []time.Duration          // Advance before each Poll(false)
		want  [][]string               // fired per step
	}{
		{"deadline order", map[string]time.Duration{"c": 3, "a": 1, "b": 2}, []time.Duration{3}, [][]string{{"a", "b", "c"}}},
		{"not before deadline", map[string]time.Duration{"x": 10}, []time.Duration{9, 1, 5}, [][]string{nil, {"x"}, nil}},
		{"only due ones", map[string]time.Duration{"a": 1, "b": 5, "c": 9}, []time.Duration{5, 5}, [][]string{{"a", "b"}, {"c"}}},
		{"same deadline in arming order", map[string]time.Duration{"p": 4, "q": 4}, []time.Duration{4}, [][]string{{"p", "q"}}},
		{"zero delay fires on next pass", map[string]time.Duration{"now": 0}, []time.Duration{0}, [][]string{{"now"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := NewManualClock(start)
			c := newCtx(t, WithClock(clk))
			home(t, c)
			var fired []string
			names := make([]string, 0, len(tc.arm))
			for n := range tc.arm {
				names = append(names, n)
			}
			slices.Sort(names) // arm in a fixed order for the tie-break case
			for _, n := range names {
				c.NewTimer(n, func() { fired = append(fired, n) }).Reset(tc.arm[n])
			}
			for i, step := range tc.steps {
				fired = nil
				clk.Advance(step)
				progress := c.Poll(false)
				if !slices.Equal(fired, tc.want[i]) {
					t.Fatalf("step %d (+%v): fired %v, want %v", i, step, fired, tc.want[i])
				}
				if progress != (len(tc.want[i]) > 0) {
					t.Fatalf("step %d: Poll progress %v with %d timers fired", i, progress, len(fired))
				}
			}
		})
	}
}

func TestTimerResetStop(t *testing.T) {
	clk := NewManualClock(time.Unix(5000, 0))
	c := newCtx(t, WithClock(clk))
	home(t, c)
	var fired []string
	a := c.NewTimer("a", func() { fired = append(fired, "a") })
	b := c.NewTimer("b", func() { fired = append(fired, "b") })
	if a.Pending() || !a.Deadline().IsZero() || a.Stop() {
		t.Fatal("new timer looks armed")
	}
	a.Reset(10)
	if !a.Pending() || !a.Deadline().Equal(clk.Now().Add(10)) {
		t.Fatalf("armed timer: pending %v deadline %v", a.Pending(), a.Deadline())
	}
	a.Reset(30) // replaces the first arming
	b.Reset(20)
	clk.Advance(25)
	c.Poll(false)
	if !slices.Equal(fired, []string{"b"}) {
		t.Fatalf("fired %v, want [b]", fired)
	}
	if !a.Stop() || a.Pending() {
		t.Fatal("Stop of an armed timer")
	}
	clk.Advance(100)
	c.Poll(false)
	if len(fired) != 1 {
		t.Fatalf("stopped timer fired: %v", fired)
	}
	if c.Stats().TimersFired != 1 {
		t.Fatalf("TimersFired = %d", c.Stats().TimersFired)
	}

	// A callback stops another timer due in the same pass, and re-arms
	// itself for "now", which must wait for the next pass.
	fired = nil
	var self *Timer
	reArms := 0
	self = c.NewTimer("self", func() {
		fired = append(fired, "self")
		b.Stop()
		if reArms < 1 {
			reArms++
			self.Reset(0)
		}
	})
	self.Reset(1)
	b.Reset(2)
	clk.Advance(2)
	c.Poll(false)
	if !slices.Equal(fired, []string{"self"}) {
		t.Fatalf("first pass fired %v, want [self]", fired)
	}
	c.Poll(false)
	if !slices.Equal(fired, []string{"self", "self"}) {
		t.Fatalf("second pass fired %v, want [self self]", fired)
	}
}

func TestTimerRealClockBlockingPoll(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	const d = 20 * time.Millisecond
	var at time.Time
	start := time.Now()
	c.NewTimer("wake", func() { at = time.Now() }).Reset(d)
	for at.IsZero() && time.Since(start) < 2*time.Second {
		c.Poll(true)
	}
	late := at.Sub(start) - d
	if at.IsZero() || late < 0 || late > time.Second { // generous: CI machines are loaded
		t.Fatalf("timer due after %v fired after %v", d, at.Sub(start))
	}
	t.Logf("fired %v after its deadline", late)
}

func TestManualClockWakesRunningLoop(t *testing.T) {
	clk := NewManualClock(time.Unix(0, 0))
	c := newCtx(t, WithClock(clk))
	fired := make(chan time.Time, 1)
	tm := c.NewTimer("t", func() { fired <- c.Now() })
	tm.Reset(time.Hour) // armed during set-up, before anyone is home
	runLoop(t, c)
	// Give the loop a chance to fall asleep first.
	waitFor(t, "loop asleep", 5*time.Second, func() bool { return c.notifyMe.Load() != 0 })
	clk.Advance(time.Hour - 1)
	select {
	case <-fired:
		t.Fatal("fired before its deadline")
	case <-time.After(20 * time.Millisecond):
	}
	clk.Advance(1)
	select {
	case now := <-fired:
		if !now.Equal(time.Unix(0, 0).Add(time.Hour)) {
			t.Fatalf("fired at %v", now)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Advance did not wake the loop")
	}
}

// --- notify ---

func TestPollNonBlockingDoesNotBlock(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	r, _ := pipe(t)
	c.SetFDHandler(r, FDHandler{Read: func() {}})
	c.NewTimer("far", func() {}).Reset(time.Hour)
	start := time.Now()
	for range 100 {
		if c.Poll(false) {
			t.Fatal("progress with nothing to do")
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("100 Poll(false) took %v", el)
	}
}

func TestPollBlockingWokenByNotify(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	go func() {
		time.Sleep(10 * time.Millisecond)
		c.Notify()
	}()
	start := time.Now()
	if c.Poll(true) {
		t.Fatal("a bare Notify is not progress")
	}
	if el := time.Since(start); el < 5*time.Millisecond || el > 5*time.Second {
		t.Fatalf("Poll(true) returned after %v", el)
	}
	if c.Stats().NotifyWrites == 0 {
		t.Fatal("waking a sleeping loop did not write the eventfd")
	}
}

func TestNotifySkipsEventfdWhenAwake(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	b := c.NewBH("b", func() {})
	for range 100 {
		b.Schedule()
		c.Poll(false)
	}
	if w := c.Stats().NotifyWrites; w != 0 {
		t.Fatalf("%d eventfd writes while the loop never slept", w)
	}
}

// TestNotifyStress has producers schedule BHs while the loop keeps falling
// asleep and being woken; every scheduled run must happen.
func TestNotifyStress(t *testing.T) {
	const producers = 4
	const perProducer = 3000
	c := newCtx(t)
	var ran [producers]atomic.Int64
	var oneshots atomic.Int64
	bhs := make([]*BH, producers)
	var want [producers]atomic.Int64 // runs each producer is owed
	for i := range bhs {
		bhs[i] = c.NewBH(fmt.Sprint("p", i), func() { ran[i].Add(1) })
	}
	runLoop(t, c)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				// Wait for the previous run so each Schedule counts; this
				// also makes the loop go back to sleep between runs.
				for ran[p].Load() != want[p].Load() {
					// A waiter that spun without yielding would starve
					// the loop of Ps; every other run sleeps instead.
					if i%2 == 0 {
						time.Sleep(time.Microsecond)
					} else {
						runtime.Gosched()
					}
				}
				want[p].Add(1)
				bhs[p].Schedule()
				c.ScheduleOneshot("o", func() { oneshots.Add(1) })
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("producers stuck: a wake-up was lost")
	}
	waitFor(t, "all BHs", 10*time.Second, func() bool {
		for p := range producers {
			if ran[p].Load() != perProducer {
				return false
			}
		}
		return oneshots.Load() == producers*perProducer
	})
	st := c.Stats()
	t.Logf("stats: %+v", st)
	if st.NotifyWrites == 0 || st.SleepTime == 0 {
		t.Fatal("the loop never slept, so the test did not exercise wake-ups")
	}
}

// --- adaptive polling ---

func TestAdaptivePolling(t *testing.T) {
	c := newCtx(t, WithPolling(2*time.Millisecond, 2, 2))
	b := c.NewBH("tick", func() {})
	runLoop(t, c)
	// Work arriving every ~50 µs, well within the maximum window: the
	// window grows.
	for range 2000 {
		b.Schedule()
		spinFor(50 * time.Microsecond)
		if c.Stats().PollNs > 0 {
			break
		}
	}
	st := c.Stats()
	if st.PollNs == 0 {
		t.Fatalf("poll window did not grow: %+v", st)
	}
	grown := st.PollNs
	// Work arriving every 10 ms, longer than the maximum: it shrinks.
	waitFor(t, "window to shrink", 5*time.Second, func() bool {
		b.Schedule()
		time.Sleep(10 * time.Millisecond)
		return c.Stats().PollNs < grown
	})
	waitFor(t, "window to reach zero", 5*time.Second, func() bool {
		b.Schedule()
		time.Sleep(5 * time.Millisecond)
		return c.Stats().PollNs == 0
	})
	if c.Stats().PollTime == 0 {
		t.Fatal("PollTime stayed zero while polling was on")
	}
}

func TestSetPollParamsAtRunTime(t *testing.T) {
	c := newCtx(t) // polling disabled by default
	b := c.NewBH("tick", func() {})
	runLoop(t, c)
	busy := func(cond func(Stats) bool) bool {
		for range 2000 {
			b.Schedule()
			spinFor(50 * time.Microsecond)
			if cond(c.Stats()) {
				return true
			}
		}
		return false
	}
	if busy(func(s Stats) bool { return s.PollNs > 0 }) {
		t.Fatal("window grew with polling disabled")
	}
	c.SetPollParams(time.Millisecond, 4, 0)
	if !busy(func(s Stats) bool { return s.PollNs > 0 && s.PollMax == time.Millisecond }) {
		t.Fatalf("window did not grow after enabling polling: %+v", c.Stats())
	}
	if busy(func(s Stats) bool { return s.PollNs > time.Millisecond }) {
		t.Fatal("window exceeded its maximum")
	}
	c.SetPollParams(0, 0, 0)
	if !busy(func(s Stats) bool { return s.PollNs == 0 }) {
		t.Fatal("window did not drop to zero after disabling polling")
	}
}

func TestUserspacePollHandler(t *testing.T) {
	c := newCtx(t, WithPolling(10*time.Millisecond, 2, 2))
	home(t, c)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	var ready atomic.Bool
	readies, reads := 0, 0
	err = c.SetFDHandler(efd, FDHandler{
		// The fd is the fallback a real device also has: if busy polling
		// ever missed the work, the eventfd below would wake the loop
		// instead of leaving it asleep for good.
		Read: func() {
			var b [8]byte
			unix.Read(efd, b[:])
			reads++
		},
		Poll:      func() bool { return ready.Load() },
		PollReady: func() { readies++; ready.Store(false) },
	})
	if err != nil {
		t.Fatal(err)
	}
	c.pollNs = 5 * time.Millisecond // as if earlier passes had grown it
	// The work is there before the pass starts, so the result does not
	// depend on how fast another goroutine gets scheduled: the busy-poll
	// phase must find it without sleeping.
	ready.Store(true)
	safety := time.AfterFunc(5*time.Second, func() { unix.Write(efd, eventfdOne[:]) })
	defer safety.Stop()
	if !c.Poll(true) {
		t.Fatal("Poll(true) made no progress")
	}
	if readies != 1 || reads != 0 {
		t.Fatalf("PollReady ran %d times and the fd handler %d times; want the poll function to find the work", readies, reads)
	}
	st := c.Stats()
	if st.NotifyWrites != 0 || st.SleepTime != 0 {
		t.Fatalf("busy polling should have found the work without sleeping: %+v", st)
	}
}

// --- home goroutine ---

func TestInHome(t *testing.T) {
	c := newCtx(t)
	if c.InHome() {
		t.Fatal("InHome with no home")
	}
	release := c.Acquire()
	if !c.InHome() {
		t.Fatal("InHome false after Acquire")
	}
	inner := c.Acquire() // nested acquire by the home goroutine
	inner()
	if !c.InHome() {
		t.Fatal("nested release dropped the home")
	}
	off := make(chan bool)
	go func() { off <- c.InHome() }()
	if <-off {
		t.Fatal("InHome true on another goroutine")
	}
	release()
	release() // extra calls do nothing
	if c.InHome() {
		t.Fatal("InHome true after release")
	}

	var inBH, inPoll atomic.Bool
	c.ScheduleOneshot("check", func() { inPoll.Store(c.InHome()) })
	c.Poll(false) // temporary home for the pass
	if !inPoll.Load() || c.InHome() {
		t.Fatal("InHome wrong around a Poll without Acquire")
	}

	runLoop(t, c)
	onLoop(t, c, func() { inBH.Store(c.InHome()) })
	if !inBH.Load() {
		t.Fatal("InHome false inside a BH run by Run")
	}
	if c.InHome() {
		t.Fatal("InHome true on the test goroutine while Run is home")
	}
}

func TestAssertHome(t *testing.T) {
	c := newCtx(t, WithName("ctl"))
	catch := func(fn func()) (msg string) {
		defer func() {
			if r := recover(); r != nil {
				msg = fmt.Sprint(r)
			}
		}()
		fn()
		return ""
	}
	if msg := catch(func() { c.AssertHome("ipoib.Open") }); !strings.Contains(msg, "ipoib.Open") || !strings.Contains(msg, `"ctl"`) {
		t.Fatalf("no-home panic message %q", msg)
	}
	runLoop(t, c)
	waitFor(t, "loop home", 5*time.Second, func() bool { return c.homeG.Load() != 0 })
	if msg := catch(func() { c.AssertHome("ib.Attach") }); !strings.Contains(msg, "ib.Attach") {
		t.Fatalf("off-home panic message %q", msg)
	}
	var onHome string
	onLoop(t, c, func() { onHome = catch(func() { c.AssertHome("ib.Attach") }) })
	if onHome != "" {
		t.Fatalf("AssertHome panicked on the home goroutine: %s", onHome)
	}
}

// --- Run, Stop, Close ---

func TestRunStop(t *testing.T) {
	c := newCtx(t)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	waitFor(t, "Run", 5*time.Second, func() bool { return c.running.Load() })

	if err := c.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
	if err := c.Close(); !errors.Is(err, ErrRunning) {
		t.Fatalf("Close while running: %v, want ErrRunning", err)
	}
	var fromInside error
	onLoop(t, c, func() { fromInside = c.Close() })
	if !errors.Is(fromInside, ErrRunning) {
		t.Fatalf("Close from a callback: %v, want ErrRunning", fromInside)
	}
	c.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Stop")
	}

	// Stop before Run is not lost.
	c.Stop()
	if err := c.Run(context.Background()); err != nil {
		t.Fatalf("Run after early Stop: %v", err)
	}

	// Cancellation.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "Run", 5*time.Second, func() bool { return c.running.Load() })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close after Run: %v", err)
	}
	if err := c.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestClosedContext(t *testing.T) {
	clk := NewManualClock(time.Unix(0, 0))
	c := newCtx(t, WithClock(clk))
	r, _ := pipe(t)
	ran := false
	b := c.NewBH("b", func() { ran = true })
	tm := c.NewTimer("t", func() { ran = true })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	b.Schedule()
	c.ScheduleOneshot("o", func() { ran = true })
	c.Notify()
	tm.Reset(0)
	clk.Advance(time.Second) // must not touch the closed Context
	if c.Poll(true) || c.Poll(false) || ran {
		t.Fatal("a closed Context made progress")
	}
	if err := c.SetFDHandler(r, FDHandler{Read: func() {}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetFDHandler after Close: %v", err)
	}
	if err := c.RemoveFDHandler(r); !errors.Is(err, ErrClosed) {
		t.Fatalf("RemoveFDHandler after Close: %v", err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	_ = c.Stats()
}

func TestCloseWhileAcquired(t *testing.T) {
	c := newCtx(t)
	release := c.Acquire()
	errc := make(chan error)
	go func() { errc <- c.Close() }()
	if err := <-errc; !errors.Is(err, ErrBusy) {
		t.Fatalf("Close from another goroutine while acquired: %v, want ErrBusy", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close by the acquiring goroutine: %v", err)
	}
	release()
}

func TestStatsCounters(t *testing.T) {
	clk := NewManualClock(time.Unix(0, 0))
	c := newCtx(t, WithClock(clk))
	home(t, c)
	r, w := pipe(t)
	c.SetFDHandler(r, FDHandler{Read: func() { drain(r) }})
	b := c.NewBH("b", func() {})
	b.Schedule()
	c.NewTimer("t", func() {}).Reset(1)
	clk.Advance(1)
	mustWrite(t, w)
	c.Poll(false)
	st := c.Stats()
	if st.Name != t.Name() || st.Iterations != 1 || st.BHsRun != 1 || st.FDDispatches != 1 || st.TimersFired != 1 || st.Notifies == 0 {
		t.Fatalf("stats after one pass: %+v", st)
	}
	// Another goroutine sees the published counters too.
	got := make(chan Stats)
	go func() { got <- c.Stats() }()
	if off := <-got; off.BHsRun != 1 {
		t.Fatalf("off-home stats: %+v", off)
	}
}

// newHomeCtx is newCtx with the calling goroutine home for the rest of
// the test (released before the Context closes).
func newHomeCtx(tb testing.TB, opts ...Option) *Context {
	tb.Helper()
	c := newCtx(tb, opts...)
	tb.Cleanup(c.Acquire())
	return c
}

// TestEpollWaitResumesAfterSignal sends signals to the thread sleeping in
// epollWait, as the Go runtime does when it preempts (SIGURG). epoll_wait
// is never restarted by the kernel, so each signal ends the call with
// EINTR; epollWait must sleep on for the rest of its timeout, or until the
// eventfd is written, instead of returning with nothing. (Before it did,
// a blocking Poll nested in a borrowed pass sometimes came back at once.)
func TestEpollWaitResumesAfterSignal(t *testing.T) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(evfd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		t.Fatal(err)
	}

	// pester locks the calling goroutine to its thread, signals that
	// thread every 500 µs until stopped and reports how many signals it
	// sent.
	pester := func() (stop func() int) {
		runtime.LockOSThread()
		pid, tid := unix.Getpid(), unix.Gettid()
		done, sent := make(chan struct{}), make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-done:
					sent <- n
					return
				case <-time.After(500 * time.Microsecond):
					if unix.Tgkill(pid, tid, unix.SIGURG) == nil {
						n++
					}
				}
			}
		}()
		return func() int {
			close(done)
			runtime.UnlockOSThread()
			return <-sent
		}
	}
	buf := make([]unix.EpollEvent, 4)
	const d = 30 * time.Millisecond

	t.Run("timeout", func(t *testing.T) {
		stop := pester()
		t0 := time.Now()
		n, err := epollWait(epfd, buf, d)
		took := time.Since(t0)
		sent := stop()
		if err != nil || n != 0 {
			t.Fatalf("epollWait = %d, %v; want 0, nil after the timeout", n, err)
		}
		if took < d {
			t.Fatalf("epollWait returned after %v, before its %v timeout (%d signals sent)", took, d, sent)
		}
		if sent == 0 {
			t.Fatal("no signal was sent during the wait: the test proved nothing")
		}
	})
	t.Run("forever", func(t *testing.T) {
		stop := pester()
		t0 := time.Now()
		go func() {
			time.Sleep(d)
			_, _ = unix.Write(evfd, eventfdOne[:])
		}()
		n, err := epollWait(epfd, buf, forever)
		took := time.Since(t0)
		sent := stop()
		if err != nil || n != 1 || buf[0].Fd != int32(evfd) {
			t.Fatalf("epollWait = %d, %v; want the eventfd", n, err)
		}
		if took < d {
			t.Fatalf("epollWait returned after %v, before the eventfd was written at %v (%d signals sent)", took, d, sent)
		}
		if sent == 0 {
			t.Fatal("no signal was sent during the wait: the test proved nothing")
		}
	})
}
