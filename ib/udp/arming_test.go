//go:build linux

package udp

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// TestCQArmOnDemand: a send CQ set to ib.ArmOnDemand runs its handler
// only after RequestNotify, once per request; unrequested completions
// wait in the CQ for a Poll.
func TestCQArmOnDemand(t *testing.T) {
	p := openPair(t, "lo")
	ah, err := p.devs[0].CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: p.lastGID()})
	if err != nil {
		t.Fatal(err)
	}
	scq, err := p.devs[0].CreateCQ(16)
	if err != nil {
		t.Fatal(err)
	}
	scq.SetArming(ib.ArmOnDemand)
	calls := 0
	scq.SetHandler(func() { calls++ })
	qp, err := p.devs[0].CreateUDQP(ib.QPConfig{Port: 1, QKey: 0x0B1B, SendCQ: scq, RecvCQ: p.cqs[0],
		SendDepth: 16, RecvDepth: 4, RecvBufSize: ib.GRHSize + 256})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name      string
		requests  int
		sends     int
		wantCalls int
	}{
		{"unrequested", 0, 2, 0},
		{"requested", 1, 1, 1},
		{"one run per request", 1, 3, 1},
		{"asking twice is asking once", 2, 1, 1},
		{"the request is spent", 0, 1, 0},
	} {
		before := calls
		for range step.requests {
			if err := scq.RequestNotify(); err != nil {
				t.Fatal(err)
			}
		}
		wrs := make([]ib.SendWR, step.sends)
		for i := range wrs {
			wrs[i] = ib.SendWR{ID: uint64(i), AH: ah, RemoteQPN: p.qps[1].QPN(), RemoteQKey: 0x0B1B, Data: [][]byte{[]byte("x")}}
		}
		if n, err := qp.PostSend(wrs); n != step.sends || err != nil {
			t.Fatalf("%s: PostSend = %d, %v", step.name, n, err)
		}
		for range 4 {
			p.loop.Poll(false)
		}
		if got := calls - before; got != step.wantCalls {
			t.Errorf("%s: handler ran %d times, want %d", step.name, got, step.wantCalls)
		}
		var wcs [16]ib.Completion
		n, err := scq.Poll(wcs[:])
		if err != nil || n != step.sends {
			t.Errorf("%s: Poll = %d, %v; want %d send completions", step.name, n, err, step.sends)
		}
	}
	if err := qp.Close(); err != nil {
		t.Fatal(err)
	}
}
