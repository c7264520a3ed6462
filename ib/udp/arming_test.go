//go:build linux

package udp

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/drivertest"
)

// TestCQArmOnDemand holds a send CQ set to ib.ArmOnDemand to the check
// every driver's is held to (drivertest.ArmOnDemand).
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
	qp, err := p.devs[0].CreateUDQP(ib.QPConfig{Port: 1, QKey: 0x0B1B, SendCQ: scq, RecvCQ: p.cqs[0],
		SendDepth: 16, RecvDepth: 4, RecvBufSize: ib.GRHSize + 256})
	if err != nil {
		t.Fatal(err)
	}
	drivertest.ArmOnDemand(t, scq, qp, ib.SendWR{AH: ah, RemoteQPN: p.qps[1].QPN(), RemoteQKey: 0x0B1B}, func() {
		for range 4 {
			p.loop.Poll(false)
		}
	})
	if err := qp.Close(); err != nil {
		t.Fatal(err)
	}
}
