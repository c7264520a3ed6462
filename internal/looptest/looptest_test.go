package looptest

import (
	"slices"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
)

// TestAdvance: timers fire in the order of their deadlines, each when
// the clock has reached it and no more than one step past it; a BH
// scheduled by a timer runs in the same Settle; and a deadline beyond
// the advance stays pending.
func TestAdvance(t *testing.T) {
	start := time.Unix(1000, 0)
	clock := aio.NewManualClock(start)
	loop := Home(t, aio.WithClock(clock))
	const step = 10 * time.Millisecond
	var fired []time.Duration
	var bhRan int
	bh := loop.NewBH("after timer", func() { bhRan++ })
	for _, at := range []time.Duration{25 * time.Millisecond, 5 * time.Millisecond, 12 * time.Millisecond, time.Second} {
		tm := loop.NewTimer("t", func() {
			now := loop.Now().Sub(start)
			if now < at || now >= at+step {
				t.Errorf("timer for %v fired at %v", at, now)
			}
			fired = append(fired, at)
			bh.Schedule()
		})
		tm.Reset(at)
	}
	Advance(t, loop, clock, 40*time.Millisecond, step)
	want := []time.Duration{5 * time.Millisecond, 12 * time.Millisecond, 25 * time.Millisecond}
	if !slices.Equal(fired, want) {
		t.Errorf("fired %v, want %v", fired, want)
	}
	if bhRan != len(want) {
		t.Errorf("the timers' BH ran %d times, want %d", bhRan, len(want))
	}
	if got := loop.Now().Sub(start); got != 40*time.Millisecond {
		t.Errorf("clock at %v after Advance, want 40ms", got)
	}
}
