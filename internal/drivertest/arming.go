package drivertest

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// armSteps are the moves of ArmOnDemand, each with the handler runs it
// must add: requests made, then sends posted and left to complete.
var armSteps = []struct {
	name      string
	requests  int // RequestNotify calls before the sends
	sends     int
	wantCalls int // handler runs the step adds
}{
	{"unrequested", 0, 2, 0},
	{"requested", 1, 1, 1},
	{"one run per request", 1, 3, 1},
	{"asking twice is asking once", 2, 1, 1},
	{"the request is spent", 0, 1, 0},
	{"a request without completions", 1, 0, 0},
	{"... still stands for the next", 0, 1, 1},
}

// ArmOnDemand checks cq, an empty send CQ already set to ib.ArmOnDemand:
// its handler runs only after RequestNotify, once per request, for
// completions that come after it; completions that come unrequested wait
// in it for a Poll, as successful sends. Each step posts its sends on qp,
// whose send CQ is cq, as copies of to (its address; ID and Data are
// ArmOnDemand's), three at the most, then calls settle, which runs the
// driver until they have completed. ArmOnDemand installs cq's handler and
// takes every completion cq holds. The contract is ib's
// (CQIO.RequestNotify). The verbs driver's test keeps its own steps: a
// real device may or may not raise an event for a completion queued
// before the request, and leaves an arm of its own behind CreateCQ.
func ArmOnDemand(tb testing.TB, cq ib.CompletionQueue, qp ib.QueuePair, to ib.SendWR, settle func()) {
	tb.Helper()
	calls := 0
	cq.SetHandler(func() { calls++ })
	for _, step := range armSteps {
		before := calls
		for range step.requests {
			if err := cq.RequestNotify(); err != nil {
				tb.Fatalf("%s: RequestNotify: %v", step.name, err)
			}
		}
		wrs := make([]ib.SendWR, step.sends)
		for i := range wrs {
			wrs[i] = to
			wrs[i].ID, wrs[i].Data = uint64(i), [][]byte{[]byte("x")}
		}
		if n, err := qp.PostSend(wrs); n != step.sends || err != nil {
			tb.Fatalf("%s: PostSend = %d, %v", step.name, n, err)
		}
		settle()
		if got := calls - before; got != step.wantCalls {
			tb.Errorf("%s: handler ran %d times, want %d", step.name, got, step.wantCalls)
		}
		var wcs [16]ib.Completion
		n, err := cq.Poll(wcs[:])
		if err != nil {
			tb.Fatalf("%s: Poll: %v", step.name, err)
		}
		if n != step.sends {
			tb.Errorf("%s: %d send completions in the CQ, want %d", step.name, n, step.sends)
		}
		for _, wc := range wcs[:n] {
			if wc.Kind != ib.WorkSend || wc.Status != ib.StatusSuccess {
				tb.Errorf("%s: completion %+v, want a successful send", step.name, wc)
			}
		}
	}
}
