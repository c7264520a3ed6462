package sim

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// TestCQArmOnDemand: a CQ set to ib.ArmOnDemand runs its handler only
// after RequestNotify, once per request, for completions that arrive
// after it; completions that arrive unrequested wait in the CQ for a
// Poll.
func TestCQArmOnDemand(t *testing.T) {
	e := newEnv(t, Config{})
	hosts := e.star(2, HostConfig{})
	const qkey = ib.QKeyIPoIBDefault
	a, b := e.open(hosts[0], qkey), e.open(hosts[1], qkey)
	pr, st := e.path(a, b.gid())
	if st != 0 {
		t.Fatalf("path: status %v", st)
	}
	// A second QP on a's device whose sends complete on a CQ of their own.
	scq, err := a.dev.CreateCQ(16)
	if err != nil {
		t.Fatal(err)
	}
	scq.SetArming(ib.ArmOnDemand)
	calls := 0
	scq.SetHandler(func() { calls++ })
	qp, err := a.dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: qkey, SendCQ: scq, RecvCQ: a.cq, SendDepth: 16, RecvDepth: 4, RecvBufSize: ib.GRHSize + 256})
	if err != nil {
		t.Fatal(err)
	}
	ah, err := a.dev.CreateAH(unicastAV(pr.DLID))
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		t.Helper()
		wrs := make([]ib.SendWR, n)
		for i := range wrs {
			wrs[i] = ib.SendWR{ID: uint64(i), AH: ah, RemoteQPN: b.qp.QPN(), RemoteQKey: qkey, Data: [][]byte{[]byte("x")}}
		}
		if got, err := qp.PostSend(wrs); got != n || err != nil {
			t.Fatalf("PostSend = %d, %v", got, err)
		}
		e.settle()
	}
	drain := func() int {
		var wcs [16]ib.Completion
		n, err := scq.Poll(wcs[:])
		if err != nil {
			t.Fatal(err)
		}
		for _, wc := range wcs[:n] {
			if wc.Kind != ib.WorkSend || wc.Status != ib.StatusSuccess {
				t.Errorf("completion %+v", wc)
			}
		}
		return n
	}
	for _, step := range []struct {
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
	} {
		before := calls
		for range step.requests {
			if err := scq.RequestNotify(); err != nil {
				t.Fatal(err)
			}
		}
		if step.sends > 0 {
			send(step.sends)
		} else {
			e.settle()
		}
		if got := calls - before; got != step.wantCalls {
			t.Errorf("%s: handler ran %d times, want %d", step.name, got, step.wantCalls)
		}
		if got := drain(); got != step.sends {
			t.Errorf("%s: %d send completions in the CQ, want %d", step.name, got, step.sends)
		}
	}
	// An ArmAlways CQ ignores requests and runs on every completion.
	if err := a.cq.RequestNotify(); err != nil {
		t.Errorf("RequestNotify on an ArmAlways CQ: %v", err)
	}
	if err := qp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := scq.Close(); err != nil {
		t.Fatal(err)
	}
	if err := scq.RequestNotify(); err == nil {
		t.Error("RequestNotify on a closed CQ succeeded")
	}
}
