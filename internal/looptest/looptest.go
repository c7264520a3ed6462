// Package looptest gives tests an event loop: the one thing nearly every
// package's tests build first, written once.
package looptest

import (
	"testing"

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
