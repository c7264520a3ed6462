package main

// How `ipoibd up` ends: the first SIGINT or SIGTERM (or 'down') starts an
// orderly teardown, which has shutdownTimeout to finish; a second signal,
// or a teardown that overruns, ends the process at once.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout is how long the teardown (leaving the groups,
// releasing the lease, closing the device and the control socket) may
// take before the process exits without finishing it. Each step is
// bounded on its own; this is the promise that holds whatever a step or
// a client does.
var shutdownTimeout = 15 * time.Second

// exitNow ends the process; tests replace it.
var exitNow = os.Exit

// teardownHook runs as the teardown begins; tests make it hang to check
// that the teardown's bound holds.
var teardownHook = func() {}

// upSignals returns a context that the first SIGINT or SIGTERM cancels.
// A second one exits at once with 128 plus its number, as a shell reports
// a process killed by it, after saying so on stderr.
func upSignals(stderr io.Writer) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-stopped:
			return
		}
		select {
		case sig := <-ch:
			fmt.Fprintf(stderr, "ipoibd up: second signal (%v): exiting without finishing the teardown\n", sig)
			code := 128 + 15
			if s, ok := sig.(syscall.Signal); ok {
				code = 128 + int(s)
			}
			exitNow(code)
		case <-stopped:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(stopped)
		cancel()
	}
}

// shutdownWatchdog exits the process if, once ctx has ended (a signal,
// or 'down'), served has not closed within shutdownTimeout.
func shutdownWatchdog(ctx context.Context, served <-chan struct{}, log *slog.Logger) {
	select {
	case <-ctx.Done():
	case <-served:
		return
	}
	t := time.NewTimer(shutdownTimeout)
	defer t.Stop()
	select {
	case <-served:
	case <-t.C:
		log.Error("the teardown did not finish in time; exiting without it", "timeout", shutdownTimeout)
		exitNow(exitFailure)
	}
}
