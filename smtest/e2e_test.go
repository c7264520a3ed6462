package smtest

// Two hosts end to end in one process: IBSimPorts for the control plane
// (OpenSM through ibsim's own protocol), the simulator for the data.

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// runLoop starts a loop on a goroutine for the test's length.
func runLoop(t *testing.T, name string) *aio.Context {
	t.Helper()
	loop, err := aio.New(aio.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { _ = loop.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran; _ = loop.Close() })
	return loop
}

// ibsimClientID makes client IDs unique across the process's attachments.
func ibsimClientID() uint32 { return uint32(os.Getpid())*16 + uint32(subnetSeq.Add(1)%16) }

// TestIBSimPortMatchesSMA attaches to two HCAs over ibsim's protocol
// from this process and checks their attributes against smpquery and a
// path between them against saquery.
func TestIBSimPortMatchesSMA(t *testing.T) {
	s := newSubnet(t, "")
	s.startSM("Hca1", 1)
	s.waitMaster("Hca1")
	loop := runLoop(t, "smtest-ibsim")
	ports := map[string]*IBSimPort{}
	attrs := map[string]ib.PortAttr{}
	for _, h := range []string{"Hca2", "Hca4"} {
		p, err := DialIBSim(loop, s.sock, h, ibsimClientID())
		if err != nil {
			t.Fatal(err)
		}
		ports[h] = p
		t.Cleanup(func() { _ = p.Close() })
		a, err := p.PortAttr()
		if err != nil {
			t.Fatal(err)
		}
		attrs[h] = a
		lid, sm, st := s.portState(t, h)
		if uint64(a.LID) != lid || uint64(a.SMLID) != sm || a.State != st || a.GIDs[0] != s.portGID(t, h) {
			t.Errorf("%s over ibsim's protocol: LID %v SM %v state %v GID %v; smpquery: LID %d SM %d state %v GID %v",
				h, a.LID, a.SMLID, a.State, a.GIDs[0], lid, sm, st, s.portGID(t, h))
		}
		t.Logf("%s: LID %v SM %v %v GID %v P_Keys %v", h, a.LID, a.SMLID, a.State, a.GIDs[0], a.PKeys[:2])
	}
	done := make(chan error, 1)
	var got ib.PathRecord
	_ = loop.Call("path", func() {
		sa, err := ib.NewSAClient(loop, ports["Hca2"], attrs["Hca2"], ib.SAClientConfig{})
		if err != nil {
			done <- err
			return
		}
		q, mask := ib.PathQueryByGID(attrs["Hca2"].GIDs[0], attrs["Hca4"].GIDs[0], ib.PKeyDefault)
		if _, err := sa.GetPathRecord(q, mask, func(r ib.PathRecord, err error) { got = r; done <- err }); err != nil {
			done <- err
		}
	})
	if err := <-done; err != nil {
		t.Fatalf("path over ibsim's protocol: %v", err)
	}
	if got.DLID != attrs["Hca4"].LID || got.SLID != attrs["Hca2"].LID {
		t.Errorf("path %v -> %v: DLID %v SLID %v", attrs["Hca2"].GIDs[0], attrs["Hca4"].GIDs[0], got.DLID, got.SLID)
	}
	_ = fmt.Sprint
}
