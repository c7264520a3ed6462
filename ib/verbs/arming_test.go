//go:build linux && cgo && !noverbs

package verbs

import (
	"errors"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
)

// TestArmOnDemand checks a send CQ set to ib.ArmOnDemand against a real
// device: once the arm CreateCQ leaves has been used up, the handler
// runs only after RequestNotify and once per request; a completion
// queued before the request need not raise the event (rxe raises none,
// as ibv_req_notify_cq says) but is there for the poll after it. Cases
// run in line: the test goroutine holds the loop.
func TestArmOnDemand(t *testing.T) {
	r := newRig(t)
	ah := r.loopbackAH(0)
	defer ah.Destroy()
	type step int
	const (
		send    step = iota // post one datagram to self, let it complete
		request             // RequestNotify
		anyRuns = -1        // zero or one run is right
	)
	tests := []struct {
		name  string
		steps []step
		runs  int
	}{
		{"no request", []step{send, send}, 0},
		{"request then completion", []step{request, send}, 1},
		{"one run per request", []step{request, send, send}, 1},
		{"asked again", []step{request, send, request, send}, 2},
		{"requested twice", []step{request, request, send}, 1},
		{"completion before request", []step{send, request}, anyRuns},
		{"request with nothing to come", []step{request}, 0},
	}
	settle := func() { r.pollUntil(func() bool { return false }, 100*time.Millisecond) }
	wcs := make([]ib.Completion, 16)
	for _, tc := range tests {
		scq, err := r.dev.CreateCQ(8)
		if err != nil {
			t.Fatal(err)
		}
		rcq, err := r.dev.CreateCQ(8)
		if err != nil {
			t.Fatal(err)
		}
		runs := 0
		scq.SetArming(ib.ArmOnDemand)
		scq.SetHandler(func() { runs++ })
		qp, err := r.dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: testQKey, SendCQ: scq, RecvCQ: rcq,
			SendDepth: 8, RecvDepth: 8, RecvBufSize: ib.GRHSize + 256})
		if err != nil {
			t.Fatal(err)
		}
		id := uint64(0)
		post := func() {
			t.Helper()
			id++
			if n, err := qp.PostSend([]ib.SendWR{{ID: id, AH: ah, RemoteQPN: qp.QPN(), RemoteQKey: testQKey, Data: [][]byte{[]byte("x")}}}); n != 1 || err != nil {
				t.Fatalf("%s: PostSend = %d, %v", tc.name, n, err)
			}
		}
		// Use up the arm CreateCQ leaves, and the run SetHandler schedules.
		post()
		settle()
		if n, err := scq.Poll(wcs); n != 1 || err != nil {
			t.Fatalf("%s: warm-up Poll = %d, %v", tc.name, n, err)
		}
		runs = 0
		sent := 0
		for _, s := range tc.steps {
			switch s {
			case send:
				post()
				sent++
			case request:
				if err := scq.RequestNotify(); err != nil {
					t.Fatalf("%s: RequestNotify: %v", tc.name, err)
				}
			}
			settle()
		}
		if runs != tc.runs && (tc.runs != anyRuns || runs > 1) {
			t.Errorf("%s: handler ran %d times, want %d", tc.name, runs, tc.runs)
		}
		if n, err := scq.Poll(wcs); n != sent || err != nil {
			t.Errorf("%s: Poll = %d, %v; want %d sends", tc.name, n, err, sent)
		}
		if err := qp.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []ib.CompletionQueue{scq, rcq} {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := scq.RequestNotify(); !errors.Is(err, ib.ErrClosed) {
			t.Errorf("%s: RequestNotify on a closed CQ: %v, want ErrClosed", tc.name, err)
		}
	}
}
