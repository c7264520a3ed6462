// Package looptest gives tests an event loop: the one thing nearly every
// package's tests build first, written once; and, for a loop on a manual
// clock, the two moves such a test is made of: run everything due now
// (Settle), and move time on (Advance).
package looptest

import (
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
)

// Home returns a new loop the calling goroutine is home to for the rest of
// the test (aio.Context.Acquire), so control-plane calls that assert
// their loop pass when made directly from the test. The loop is released
// and closed when the test ends; a failure to close fails the test.
func Home(tb testing.TB, opts ...aio.Option) *aio.Context {
	tb.Helper()
	loop, err := aio.New(append([]aio.Option{aio.WithName(tb.Name())}, opts...)...)
	if err != nil {
		tb.Fatalf("aio.New: %v", err)
	}
	release := loop.Acquire()
	tb.Cleanup(func() {
		release()
		if err := loop.Close(); err != nil {
			tb.Errorf("close loop %s: %v", loop.Name(), err)
		}
	})
	return loop
}

// maxSettlePasses bounds Settle: far more passes than the largest
// simulated fabric needs to go quiet, few enough to fail in seconds.
const maxSettlePasses = 10_000_000

// Settle runs passes of loop, which the caller is home to, until one
// finds nothing to do at the current time. A loop that never goes quiet
// (a BH that schedules itself, a timer re-armed for now) fails tb instead
// of hanging the test.
func Settle(tb testing.TB, loop *aio.Context) {
	tb.Helper()
	for i := 0; loop.Poll(false); i++ {
		if i > maxSettlePasses {
			tb.Fatalf("loop %s does not settle", loop.Name())
		}
	}
}

// Advance moves clock, loop's, on by d in steps no longer than step (one
// step when step is zero), settling loop after each: timers fire in the
// order of their deadlines, each seeing a time no later than step past
// its own.
func Advance(tb testing.TB, loop *aio.Context, clock *aio.ManualClock, d, step time.Duration) {
	tb.Helper()
	if step <= 0 {
		step = d
	}
	for d > 0 {
		s := min(d, step)
		clock.Advance(s)
		Settle(tb, loop)
		d -= s
	}
}
