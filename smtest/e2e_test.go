package smtest

// Two hosts end to end in one process: IBSimPorts for the control plane
// (OpenSM through ibsim's own protocol), the simulator for the data.

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// runLoop starts a loop on a goroutine for the test's length.
func runLoop(t *testing.T, name string) *aio.Context {
	t.Helper()
	loop, err := aio.New(aio.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	stop := loop.Start()
	t.Cleanup(func() { _ = stop() })
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
}

// e2eHost is one end of TestTwoHostsEndToEnd.
type e2eHost struct {
	name string
	port *IBSimPort
	attr ib.PortAttr
	sim  ib.Device // the data plane's device
	link *ipoib.Link
	got  chan e2eFrame
}

// e2eFrame is a frame a link delivered.
type e2eFrame struct {
	payload  string
	src, dst []byte
}

// TestTwoHostsEndToEnd brings IPoIB up on two ibsim HCAs, Hca2 and Hca4,
// in this one process: the control plane is OpenSM's (each link joins
// the broadcast group at OpenSM and resolves its peer's path there,
// through an IBSimPort), the data plane the simulator's (a fabric whose
// hosts carry the HCAs' port GUIDs, OpenSM's LIDs and P_Key tables). The
// simulator's switch forwards multicast only along trees its own SM
// builds, so each host also joins the group at the simulator's SA (the
// shadow join), which must hand out OpenSM's MLID. Then a broadcast and a
// unicast frame go from Hca2 to Hca4.
func TestTwoHostsEndToEnd(t *testing.T) {
	s := newSubnet(t, "")
	s.startSM("Hca1", 1)
	s.waitMaster("Hca1")
	loop := runLoop(t, "smtest-e2e")
	hosts := []*e2eHost{{name: "Hca2"}, {name: "Hca4"}}
	for _, h := range hosts {
		p, err := DialIBSim(loop, s.sock, h.name, ibsimClientID())
		if err != nil {
			t.Fatal(err)
		}
		h.port = p
		if h.attr, err = p.PortAttr(); err != nil {
			t.Fatal(err)
		}
		h.got = make(chan e2eFrame, 8)
	}
	var fab *sim.Fabric
	var err error
	_ = loop.Call("build", func() {
		fab, err = sim.New(loop, sim.Config{Name: fmt.Sprintf("e2e%d", subnetSeq.Add(1)), MTU: ib.MTU2048, Rate: ib.Rate10Gbps,
			IPoIBPartitions: []ib.PKey{ib.PKeyDefault}})
		if err != nil {
			return
		}
		var sw *sim.Switch
		if sw, err = fab.AddSwitch("sw", sim.SwitchConfig{}); err != nil {
			return
		}
		for _, h := range hosts {
			pkeys := h.attr.PKeys
			for len(pkeys) > 1 && pkeys[len(pkeys)-1] == 0 {
				pkeys = pkeys[:len(pkeys)-1]
			}
			var sh *sim.Host
			if sh, err = fab.AddHost(h.name, sim.HostConfig{PortGUIDs: []ib.GUID{h.attr.GUID()}, LIDs: []ib.LID{h.attr.LID}, PKeys: pkeys}); err != nil {
				return
			}
			if _, err = fab.Connect(sh, sw, sim.CableConfig{}); err != nil {
				return
			}
		}
		if err = fab.Start(); err != nil {
			return
		}
		for _, h := range hosts {
			if h.sim, err = fab.Host(h.name).Open(loop); err != nil {
				return
			}
			h := h
			split := NewSplitDevice(h.sim, h.attr, h.port)
			if h.link, err = ipoib.New(loop, split, ipoib.Config{Name: fmt.Sprintf("e2e%d", subnetSeq.Add(1))}); err != nil {
				return
			}
			h.link.NetDev().SetReceiver(netdev.ReceiverFunc(func(_ *netdev.Device, b *netdev.Buffer, _ uint16, dst, src []byte) {
				h.got <- e2eFrame{payload: string(b.Bytes()), src: bytes.Clone(src), dst: bytes.Clone(dst)}
				b.Free()
			}))
			if err = h.link.NetDev().Open(); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		_ = loop.Call("close", func() {
			for _, h := range hosts {
				if h.link != nil {
					_ = h.link.Close()
				}
			}
			if fab != nil {
				_ = fab.Close()
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// Both links join at OpenSM.
	deadline := time.Now().Add(30 * time.Second)
	for _, h := range hosts {
		for {
			var g ipoib.GroupInfo
			_ = loop.Call("group", func() { g = h.link.Group() })
			if g.Joined {
				t.Logf("%s joined %v at OpenSM: MLID %v Q_Key %v", h.name, g.MGID, g.MLID, g.QKey)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: broadcast group not joined at OpenSM", h.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	osmGroup, _ := s.group(t, "Hca1", ipoib.BroadcastGID(ib.PKeyDefault))
	for _, h := range hosts {
		if !isMember(osmGroup, h.attr.GIDs[0]) {
			t.Errorf("OpenSM does not list %s (%v) in the broadcast group: %v", h.name, h.attr.GIDs[0], osmGroup.Members)
		}
	}

	// The shadow joins: the simulator's SM builds the group's tree.
	for _, h := range hosts {
		done := make(chan error, 1)
		var rec ib.MCMemberRecord
		_ = loop.Call("shadow join", func() {
			port, err := h.sim.OpenMADPort(1)
			if err != nil {
				done <- err
				return
			}
			attr, _ := h.sim.QueryPort(1)
			sa, err := ib.NewSAClient(loop, port, attr, ib.SAClientConfig{})
			if err != nil {
				done <- err
				return
			}
			q, mask := ib.MCMemberQuery(ipoib.BroadcastGID(ib.PKeyDefault), attr.GIDs[0], ib.PKeyDefault, ib.JoinFullMember)
			if _, err := sa.SetMCMemberRecord(q, mask, func(r ib.MCMemberRecord, err error) { rec = r; done <- err }); err != nil {
				done <- err
			}
		})
		if err := <-done; err != nil {
			t.Fatalf("%s: shadow join at the simulator's SA: %v", h.name, err)
		}
		if rec.MLID != osmGroup.MLID || rec.QKey != osmGroup.QKey {
			t.Fatalf("%s: the simulator's SA gave MLID %v Q_Key %v, OpenSM MLID %v Q_Key %v: the planes disagree",
				h.name, rec.MLID, rec.QKey, osmGroup.MLID, osmGroup.QKey)
		}
	}

	a, b := hosts[0], hosts[1]
	send := func(dst []byte, payload string) {
		t.Helper()
		var err error
		_ = loop.Call("send", func() {
			nd := a.link.NetDev()
			var buf *netdev.Buffer
			if buf, err = nd.AllocBuffer(); err != nil {
				return
			}
			if err = buf.Append([]byte(payload)); err != nil {
				return
			}
			err = nd.Transmit(buf, dst, 0x0800)
		})
		if err != nil {
			t.Fatalf("transmit %q: %v", payload, err)
		}
	}
	expect := func(payload string) e2eFrame {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case f := <-b.got:
				if f.payload == payload {
					return f
				}
			case <-timeout:
				t.Fatalf("%s never received %q", b.name, payload)
			}
		}
	}
	var aAddr, bAddr, bcast []byte
	_ = loop.Call("addrs", func() {
		aAddr, bAddr, bcast = a.link.NetDev().HWAddr(), b.link.NetDev().HWAddr(), a.link.Broadcast()
	})
	send(bcast, "to everyone on the broadcast group")
	if f := expect("to everyone on the broadcast group"); !bytes.Equal(f.src, aAddr) {
		t.Errorf("broadcast frame from %x, want %s's address %x", f.src, a.name, aAddr)
	}
	send(bAddr, "to Hca4 over OpenSM's path")
	if f := expect("to Hca4 over OpenSM's path"); !bytes.Equal(f.src, aAddr) {
		t.Errorf("unicast frame from %x, want %x", f.src, aAddr)
	}
	var peers []ipoib.PeerInfo
	_ = loop.Call("peers", func() { peers, _ = a.link.Peers() })
	for _, p := range peers {
		if p.State == "resolved" {
			t.Logf("%s's path to %s: LID %v SL %d MTU %d", a.name, p.Addr, p.LID, p.SL, p.MTU)
			if p.LID != b.attr.LID {
				t.Errorf("path LID %v, want %s's LID from OpenSM %v", p.LID, b.name, b.attr.LID)
			}
		}
	}
}
