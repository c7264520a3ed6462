package aio

import (
	"context"
	"errors"
	"sync"
	"testing"
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
