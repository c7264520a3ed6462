//go:build linux && cgo && !noverbs

package verbs

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// TestPeer runs in two VMs at once (vmtest's TestVerbsTwoVMs) and does
// what IPoIB does to find a neighbour: both attach to the IPoIB broadcast
// group and multicast a hello naming themselves; a hello from the other
// node gives its GID (GRH SGID) and QPN (completion SrcQPN), which the
// receiver answers with a unicast ack through an address handle made from
// them. The test passes once a node has seen the peer's hello and its ack,
// and it lingers a little so the peer can finish too.
func TestPeer(t *testing.T) {
	if os.Getenv("IPOIBD_VERBS_PEER") == "" {
		t.Skip("IPOIBD_VERBS_PEER is not set (go test ./vmtest runs this test in two VMs)")
	}
	me := os.Getenv("VMTEST_IP")
	if me == "" {
		t.Fatal("VMTEST_IP is not set")
	}
	r := newRig(t)
	e := r.endpoint(16, 32, ib.GRHSize+r.port.ActiveMTU.Bytes())
	defer e.close()
	mgid := ipoibBroadcastMGID(t)
	const mlid = 0xC000
	if err := e.qp.AttachMcast(mgid, mlid); err != nil {
		t.Fatal(err)
	}
	mcast, err := r.dev.CreateAH(ib.AddressVector{Port: 1, DLID: mlid, DGID: mgid})
	if err != nil {
		t.Fatal(err)
	}
	defer mcast.Destroy()

	var (
		peerAH            ib.AddressHandle
		peerGID           ib.GID
		peerQPN           ib.QPN
		gotHello, gotAck  bool
		hellos, acks, ids uint64
		seen              int
	)
	post := func(ah ib.AddressHandle, qpn ib.QPN, msg string) {
		ids++
		n, err := e.qp.PostSend([]ib.SendWR{{ID: ids, AH: ah, RemoteQPN: qpn, RemoteQKey: testQKey, Data: [][]byte{[]byte(msg)}}})
		if n != 1 {
			t.Errorf("PostSend %q: %v", msg, err)
		}
	}
	var hello *aio.Timer
	hello = r.loop.NewTimer("hello", func() {
		post(mcast, ib.QPNMulticast, "hello from "+me)
		hellos++
		hello.Reset(200 * time.Millisecond)
	})
	hello.Reset(0)
	defer hello.Stop()

	// handle looks at the receives that arrived since the last call.
	handle := func() {
		for ; seen < len(e.recvs); seen++ {
			c := e.recvs[seen]
			if c.Status != ib.StatusSuccess || !c.HasGRH {
				t.Errorf("receive %+v", c)
				continue
			}
			var grh ib.GRH
			if err := grh.Decode(c.Buf); err != nil {
				t.Fatal(err)
			}
			msg := string(c.Payload())
			from, ok := strings.CutPrefix(msg, "hello from ")
			if ok && from != me {
				if grh.DGID != mgid {
					t.Errorf("hello from %s addressed to %v, want %v", from, grh.DGID, mgid)
				}
				if !gotHello {
					peerGID, peerQPN = grh.SGID, c.SrcQPN
					t.Logf("hello from %s: GID %v QPN %v", from, peerGID, peerQPN)
					peerAH, err = r.dev.CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: peerGID})
					if err != nil {
						t.Fatal(err)
					}
					gotHello = true
				}
				post(peerAH, peerQPN, "ack from "+me)
				acks++
				continue
			}
			if from, ok := strings.CutPrefix(msg, "ack from "); ok && from != me {
				if grh.DGID != r.port.GIDs[0] || c.SrcQPN != peerQPN && gotHello {
					t.Errorf("ack from %s: GRH %v -> %v, QPN %v", from, grh.SGID, grh.DGID, c.SrcQPN)
				}
				if !gotAck {
					t.Logf("ack from %s: GID %v QPN %v", from, grh.SGID, c.SrcQPN)
				}
				gotAck = true
			}
		}
	}
	if !r.pollUntil(func() bool { handle(); return gotHello && gotAck }, 60*time.Second) {
		t.Fatalf("peer not found: hello %v ack %v after %d hellos sent, %d receives", gotHello, gotAck, hellos, len(e.recvs))
	}
	// Keep answering so the peer sees our ack even if it started late.
	r.pollUntil(func() bool { handle(); return false }, 2*time.Second)
	t.Logf("sent %d hellos and %d acks, received %d datagrams", hellos, acks, len(e.recvs))
	for _, s := range e.sends {
		if s.Status != ib.StatusSuccess {
			t.Errorf("send %+v", s)
		}
	}
	if peerAH != nil {
		_ = peerAH.Destroy()
	}
	if bytes.Equal(peerGID[:], r.port.GIDs[0][:]) {
		t.Error("the peer has this node's GID")
	}
}
