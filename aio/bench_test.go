package aio

import (
	"context"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkBHScheduleDispatch(b *testing.B) {
	c := newHomeCtx(b, WithName("bench-bh"))
	n := 0
	bh := c.NewBH("count", func() { n++ })
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bh.Schedule()
		c.Poll(false)
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("ran %d of %d", n, b.N)
	}
}

// BenchmarkCrossGoroutineWake measures the one-way latency from Schedule
// on one goroutine to the BH starting on a loop run by another, with the
// loop asleep (the subtest keeps its old name, epoll) or busy polling
// (polling).
func BenchmarkCrossGoroutineWake(b *testing.B) {
	for _, tc := range []struct {
		name string
		poll time.Duration
	}{
		{"epoll", 0},
		{"polling", 100 * time.Microsecond},
	} {
		b.Run(tc.name, func(b *testing.B) { benchWake(b, tc.poll) })
	}
}

func benchWake(b *testing.B, poll time.Duration) {
	c, err := New(WithName("bench-wake"), WithPolling(poll, 2, 2))
	if err != nil {
		b.Fatal(err)
	}
	base := time.Now()
	var ran atomic.Int64
	bh := c.NewBH("wake", func() { ran.Store(int64(time.Since(base))) })
	runBench(b, c)

	once := func() int64 {
		if poll == 0 {
			// Let the loop fall asleep, so every sample pays for
			// a real wake-up rather than catching the loop still awake.
			for c.notifyMe.Load() == 0 {
				runtime.Gosched()
			}
			spinFor(wakeGap)
		}
		ran.Store(0)
		t0 := int64(time.Since(base))
		bh.Schedule()
		for ran.Load() == 0 {
		}
		return ran.Load() - t0
	}
	for range 2000 { // lets the adaptive window settle
		once()
	}
	samples := make([]int64, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range samples {
		samples[i] = once()
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2]), "p50-ns")
	b.ReportMetric(float64(samples[len(samples)*99/100]), "p99-ns")
	st := c.Stats()
	b.ReportMetric(float64(st.NotifyWrites)/float64(b.N+2000), "writes/op")
}

func spinFor(d time.Duration) {
	for t := time.Now(); time.Since(t) < d; {
	}
}

// BenchmarkTimerArmFire arms a timer, advances the manual clock past it and
// lets a non-blocking pass fire it.
func BenchmarkTimerArmFire(b *testing.B) {
	clk := NewManualClock(time.Unix(1000, 0))
	c := newHomeCtx(b, WithName("bench-timer"), WithClock(clk))
	n := 0
	t := c.NewTimer("tick", func() { n++ })
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t.Reset(time.Microsecond)
		clk.Advance(time.Microsecond)
		c.Poll(false)
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("fired %d of %d", n, b.N)
	}
}

var wakeGap = 20 * time.Microsecond

// BenchmarkHandoff measures a round trip between an ordinary goroutine and
// a sleeping loop: the goroutine schedules a BH and blocks on a channel;
// the BH, on the loop, sends on that channel. It is the pattern of every
// packet between gVisor and the link (gVisor's goroutines hand packets to
// the loop, the loop wakes the goroutine a reply is for), measured for
// each way the loop can sleep, in one run, with no busy polling.
func BenchmarkHandoff(b *testing.B) {
	for _, m := range []SleepMode{SleepNetpoll, SleepSyscall} {
		b.Run(m.String(), func(b *testing.B) {
			c, err := New(WithName("bench-handoff"), WithSleep(m))
			if err != nil {
				b.Fatal(err)
			}
			back := make(chan struct{})
			bh := c.NewBH("reply", func() { back <- struct{}{} })
			runBench(b, c)
			for range 1000 {
				bh.Schedule()
				<-back
			}
			samples := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range samples {
				t0 := time.Now()
				bh.Schedule()
				<-back
				samples[i] = time.Since(t0)
			}
			b.StopTimer()
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// runBench runs c on its own goroutine until the benchmark ends, then
// stops and closes it.
func runBench(b *testing.B, c *Context) {
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	b.Cleanup(func() {
		c.Stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
		if err := c.Close(); err != nil {
			b.Error(err)
		}
	})
}
