package aio

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCall runs control-plane work on a running loop from many goroutines
// at once and from the home goroutine itself, and checks that every call
// ran on the home goroutine, exactly once, before Call returned; then that
// a closed Context refuses the call without running it.
func TestCall(t *testing.T) {
	c := newCtx(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	const callers, calls = 8, 50
	var mu sync.Mutex
	count, offHome := 0, 0
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				ran := false
				err := c.Call("test", func() {
					ran = true
					mu.Lock()
					count++
					if !c.InHome() {
						offHome++
					}
					mu.Unlock()
					// A nested Call from home runs at once.
					nested := false
					if err := c.Call("nested", func() { nested = true }); err != nil || !nested {
						t.Errorf("nested Call: ran %v, err %v", nested, err)
					}
				})
				if err != nil || !ran {
					t.Errorf("Call returned %v before its function ran (ran %v)", err, ran)
				}
			}
		}()
	}
	wg.Wait()
	if count != callers*calls || offHome != 0 {
		t.Errorf("ran %d calls (want %d), %d off the home goroutine", count, callers*calls, offHome)
	}
	cancel()
	<-done
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ran := false
	if err := c.Call("closed", func() { ran = true }); !errors.Is(err, ErrClosed) || ran {
		t.Errorf("Call on a closed context: err %v, ran %v; want ErrClosed and not run", err, ran)
	}
}

// TestCallClosedWhileWaiting: a Call waiting on a loop that nobody runs
// returns ErrClosed, without running fn, when the Context is closed; and
// CallContext gives up when its context ends.
func TestCallClosedWhileWaiting(t *testing.T) {
	c := newCtx(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	err := c.CallContext(ctx, "never run", func() error { ran = true; return nil })
	if !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("CallContext on an idle loop: err %v ran %v, want DeadlineExceeded and not run", err, ran)
	}

	var ranAfter atomic.Bool
	got := make(chan error, 1)
	go func() { got <- c.Call("waits", func() { ranAfter.Store(true) }) }()
	time.Sleep(10 * time.Millisecond) // let it queue its bottom half
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrClosed) || ranAfter.Load() {
			t.Fatalf("Call across Close: err %v ran %v, want ErrClosed and not run", err, ranAfter.Load())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Call still waiting 5 s after Close")
	}
}

// TestCallContextError passes fn's error back.
func TestCallContextError(t *testing.T) {
	c := newCtx(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	want := errors.New("refused")
	if err := c.CallContext(context.Background(), "fails", func() error { return want }); err != want {
		t.Fatalf("CallContext = %v, want %v", err, want)
	}
}

// TestStart runs a loop through Start, calls into it, and stops it twice.
func TestStart(t *testing.T) {
	c, err := New(WithName(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	stop := c.Start()
	ran := false
	if err := c.Call("start", func() { ran = c.InHome() }); err != nil || !ran {
		t.Fatalf("Call on a started loop: err %v, ran at home %v", err, ran)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := c.Call("after", func() {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after stop: %v, want ErrClosed", err)
	}
}
