package sim

import (
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/drivertest"
)

// TestCQArmOnDemand holds a send CQ set to ib.ArmOnDemand to the check
// every driver's is held to (drivertest.ArmOnDemand), then checks that an
// ArmAlways CQ takes requests in its stride and a closed one refuses them.
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
	qp, err := a.dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: qkey, SendCQ: scq, RecvCQ: a.cq, SendDepth: 16, RecvDepth: 4, RecvBufSize: ib.GRHSize + 256})
	if err != nil {
		t.Fatal(err)
	}
	ah, err := a.dev.CreateAH(unicastAV(pr.DLID))
	if err != nil {
		t.Fatal(err)
	}
	drivertest.ArmOnDemand(t, scq, qp, ib.SendWR{AH: ah, RemoteQPN: b.qp.QPN(), RemoteQKey: qkey}, e.settle)
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
