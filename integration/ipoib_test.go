package integration

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/sim"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestTwoHosts is the smallest fabric a user would build: ARP resolves to
// the peer's 20-byte address through gVisor's neighbour cache, ping
// answers, and TCP carries data byte-identical.
func TestTwoHosts(t *testing.T) {
	e := newEnv(t, star(2))
	e.up(defaults)
	a, b := e.hosts[0], e.hosts[1]
	if mtu := a.ifc.MTU(); mtu != 2044 {
		t.Errorf("IP MTU %d, want 2044 for the default 2048-byte broadcast group", mtu)
	}
	st := ping(t, a, b, 5)
	if st.Received != 5 || st.Corrupt != 0 {
		t.Fatalf("ping: %v", st)
	}
	t.Logf("ping %v", st)
	neigh, err := a.st.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, n := range neigh {
		if n.Addr == b.addr {
			found = true
			if !bytes.Equal(n.LinkAddr, b.ifc.LinkAddr()) || len(n.LinkAddr) != ipoib.AddrLen {
				t.Errorf("neighbour %v has link address %x, want %x", n.Addr, n.LinkAddr, b.ifc.LinkAddr())
			}
			if n.State != gvstack.Reachable && n.State != gvstack.Stale && n.State != gvstack.Delay && n.State != gvstack.Probe {
				t.Errorf("neighbour %v in state %v", n.Addr, n.State)
			}
		}
	}
	if !found {
		t.Fatalf("no neighbour entry for %v in %+v", b.addr, neigh)
	}
	d := transfer(t, a, b, 1<<20, 60*time.Second)
	t.Logf("1 MiB in %v", d)
	transfer(t, b, a, 256<<10, 60*time.Second)
}

// TestMoreHostsThanKeys puts 300 hosts, more than a peer cache's 255
// keys, on a two-level tree: every host pings two others (its neighbour
// and one across the fabric), and a few pairs move TCP data.
func TestMoreHostsThanKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("300 stacks: not in -short")
	}
	const n = 300
	e := newEnv(t, func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error) {
		f, hosts, err := sim.Tree(loop, cfg, sim.TreeConfig{Leaves: 10, HostsPerLeaf: 30, Spines: 2})
		return f, hosts, err
	})
	e.up(defaults)
	var failed atomic.Int32
	parallel(n, 32, func(i int) {
		for _, j := range []int{(i + 1) % n, (i + n/2) % n} {
			if !pingUntil(t, e.hosts[i], e.hosts[j], time.Minute) {
				failed.Add(1)
				t.Errorf("ping %v -> %v: no answer", e.hosts[i].addr, e.hosts[j].addr)
			}
		}
	})
	if failed.Load() > 0 {
		t.Fatalf("%d pings failed", failed.Load())
	}
	// Host 0 has now talked to more peers than its cache holds keys for
	// (it answered two pings and sent two): make it talk to many more and
	// check it still reaches the first.
	parallel(40, 8, func(k int) {
		if !pingUntil(t, e.hosts[0], e.hosts[3+k*7], time.Minute) {
			t.Errorf("ping 0 -> %d: no answer", 3+k*7)
		}
	})
	if !pingUntil(t, e.hosts[0], e.hosts[1], time.Minute) {
		t.Errorf("ping 0 -> 1 after churn: no answer")
	}
	parallel(4, 4, func(k int) {
		transfer(t, e.hosts[k], e.hosts[n-1-k], 256<<10, 90*time.Second)
	})
}

// TestTCPUnderFaults moves 16 MiB through a fabric that loses, reorders
// and duplicates packets.
func TestTCPUnderFaults(t *testing.T) {
	size := 16 << 20
	if testing.Short() {
		size = 2 << 20
	}
	e := newEnv(t, star(2))
	e.up(defaults)
	e.onLoop(func() {
		if err := e.f.SetFaults(sim.Faults{Loss: 0.05, Reorder: 0.05, Duplicate: 0.05}); err != nil {
			t.Fatal(err)
		}
	})
	d := transfer(t, e.hosts[0], e.hosts[1], size, 10*time.Minute)
	c := e.fabricCounters()
	if c.Dropped(sim.DropLoss) == 0 || c.Duplicated == 0 || c.Reordered == 0 {
		t.Errorf("faults did not happen: %v", c)
	}
	t.Logf("%d MiB under 5%% loss, reordering and duplication in %v; fabric %v", size>>20, d, c)
}

// TestSMOutage takes the subnet manager away: links that are up stay up
// and pairs that already talk keep talking; a path never asked for before
// waits for the SM; when it returns, new joins and path queries succeed.
func TestSMOutage(t *testing.T) {
	e := newEnv(t, star(4))
	e.up(defaults)
	a, b, c, d := e.hosts[0], e.hosts[1], e.hosts[2], e.hosts[3]
	if st := ping(t, a, b, 2); st.Received != 2 {
		t.Fatalf("ping before the outage: %v", st)
	}
	e.onLoop(func() {
		if err := e.f.SetSMUp(false); err != nil {
			t.Fatal(err)
		}
	})
	if st := ping(t, a, b, 3); st.Received != 3 {
		t.Errorf("cached path stopped working with the SM down: %v", st)
	}
	for _, h := range e.hosts {
		if up, err := h.ifc.LinkState(); !up {
			t.Errorf("%s went down with the SM: %v", h.ifc.Name(), err)
		}
	}
	// c has never talked to d: ARP goes over the broadcast group, but the
	// unicast reply needs a path the SA cannot give. Ask while the SM is
	// away, bring it back, and the same exchange must then complete.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if st := ping(t, c, d, 1); st.Received == 1 {
			t.Log("first ping answered during the outage (path already known)")
		}
	}()
	time.Sleep(200 * time.Millisecond)
	e.onLoop(func() {
		if err := e.f.SetSMUp(true); err != nil {
			t.Fatal(err)
		}
	})
	<-done
	e.waitUp(e.hosts, 30*time.Second)
	if st := ping(t, c, d, 3); st.Received == 0 {
		t.Errorf("no path after the SM returned: %v", st)
	}
	if st := ping(t, a, b, 3); st.Received == 0 {
		t.Errorf("old pair broken after the SM returned: %v", st)
	}
}

// TestLIDChange gives a host a new LID mid-conversation: its peers' paths
// go stale, are refreshed, and traffic resumes.
func TestLIDChange(t *testing.T) {
	e := newEnv(t, star(2))
	e.up(defaults)
	a, b := e.hosts[0], e.hosts[1]
	if st := ping(t, a, b, 2); st.Received != 2 {
		t.Fatalf("ping before: %v", st)
	}
	var old, lid ib.LID
	e.onLoop(func() {
		attr, _ := b.sim.Port(1)
		old = attr.LID
		var err error
		if lid, err = b.sim.ReassignLID(1, 0); err != nil {
			t.Fatal(err)
		}
	})
	if lid == old {
		t.Fatalf("LID stayed %v", lid)
	}
	e.waitUp(e.hosts, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := ping(t, a, b, 1)
		if st.Received == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer after the LID moved from %v to %v", old, lid)
		}
	}
	if st := ping(t, b, a, 3); st.Received != 3 {
		t.Errorf("reverse direction after the LID change: %v", st)
	}
	transfer(t, a, b, 256<<10, 60*time.Second)
}

// TestPartitions puts hosts in two partitions on the same switch: each
// pair talks within its partition, nothing crosses, and the fabric counts
// the P_Key drops.
func TestPartitions(t *testing.T) {
	pkeys := []ib.PKey{0x8001, 0x8001, 0x8002, 0x8002}
	var raw *sim.Host
	e := newEnv(t, func(loop *aio.Context, cfg sim.Config) (*sim.Fabric, []*sim.Host, error) {
		f, err := sim.New(loop, cfg)
		if err != nil {
			return nil, nil, err
		}
		sw, err := f.AddSwitch("sw0", sim.SwitchConfig{})
		if err != nil {
			return nil, nil, err
		}
		var hosts []*sim.Host
		for i, pk := range pkeys {
			// The default partition stays in every table, limited, so the
			// SA can still be reached; IPoIB runs on the host's own one.
			h, err := f.AddHost(fmt.Sprintf("host%d", i), sim.HostConfig{PKeys: []ib.PKey{0x7fff, pk}})
			if err != nil {
				return nil, nil, err
			}
			if _, err := f.Connect(h, sw, sim.CableConfig{}); err != nil {
				return nil, nil, err
			}
			hosts = append(hosts, h)
		}
		// raw is a host in both partitions that runs no IPoIB: the test
		// sends hand-made datagrams from it.
		if raw, err = f.AddHost("raw", sim.HostConfig{PKeys: []ib.PKey{0x7fff, 0x8001, 0x8002}}); err != nil {
			return nil, nil, err
		}
		if _, err := f.Connect(raw, sw, sim.CableConfig{}); err != nil {
			return nil, nil, err
		}
		return f, hosts, f.Start()
	})
	e.up(func(i int) ipoibd.Config { return ipoibd.Config{PKey: uint16(pkeys[i])} })
	if st := ping(t, e.hosts[0], e.hosts[1], 2); st.Received != 2 {
		t.Errorf("same partition 0x8001: %v", st)
	}
	if st := ping(t, e.hosts[2], e.hosts[3], 2); st.Received != 2 {
		t.Errorf("same partition 0x8002: %v", st)
	}
	// Across partitions the hosts are on different IPoIB links: ARP's
	// broadcast never reaches the other group and nothing answers.
	before := e.fabricCounters()
	if st := ping(t, e.hosts[0], e.hosts[2], 2); st.Received != 0 {
		t.Errorf("ping crossed partitions: %v", st)
	}
	after := e.fabricCounters()
	t.Logf("P_Key drops %d -> %d", before.Dropped(sim.DropPKey), after.Dropped(sim.DropPKey))

	// A datagram from partition 0x8001 to a host of 0x8002, and one with
	// the right partition but a wrong Q_Key: the fabric drops both and
	// counts why; the target's IPoIB link never sees them.
	target := e.hosts[2]
	rx := target.ifc.Stats().Netdev
	rawSend(t, e, raw, 1, target, 0)          // P_Key index 1 = 0x8001
	rawSend(t, e, raw, 2, target, 0x12345678) // 0x8002, wrong Q_Key
	time.Sleep(100 * time.Millisecond)
	final := e.fabricCounters()
	if final.Dropped(sim.DropPKey) <= after.Dropped(sim.DropPKey) {
		t.Errorf("cross-partition datagram not counted as a P_Key drop: %v", final)
	}
	if final.Dropped(sim.DropQKey) == 0 {
		t.Errorf("wrong-Q_Key datagram not counted as a Q_Key drop: %v", final)
	}
	before0 := rx.Count("rx_ok")
	after0 := target.ifc.Stats().Netdev.Count("rx_ok")
	if after0 != before0 {
		t.Errorf("target received %d packets, want none of the raw ones", after0-before0)
	}
}

// rawSend sends one IPoIB-shaped datagram (an IPv4 ethertype header and a
// few bytes) from the raw host to dst's QP, on the raw host's P_Key table
// entry pkeyIndex, with qkey (0: the broadcast group's).
func rawSend(t *testing.T, e *env, from *sim.Host, pkeyIndex int, dst *host, qkey ib.QKey) {
	t.Helper()
	var err error
	e.onLoop(func() {
		var dev ib.Device
		if dev, err = from.Open(e.loop); err != nil {
			return
		}
		// The device stays open until the test ends: closing it now would
		// flush the send before the fabric carries it.
		t.Cleanup(func() { e.onLoop(func() { dev.Close() }) })
		var cq ib.CompletionQueue
		if cq, err = dev.CreateCQ(8); err != nil {
			return
		}
		var qp ib.QueuePair
		qp, err = dev.CreateUDQP(ib.QPConfig{Port: 1, PKeyIndex: pkeyIndex, QKey: ib.QKeyIPoIBDefault,
			SendCQ: cq, RecvCQ: cq, SendDepth: 4, RecvDepth: 4, RecvBufSize: ib.GRHSize + 256})
		if err != nil {
			return
		}
		var hw ipoib.Addr
		if err = hw.Decode(dst.ifc.LinkAddr()); err != nil {
			return
		}
		attr, _ := dst.sim.Port(1)
		var ah ib.AddressHandle
		if ah, err = dev.CreateAH(ib.AddressVector{Port: 1, DLID: attr.LID}); err != nil {
			return
		}
		if qkey == 0 {
			qkey = dst.ifc.Group().QKey
		}
		payload := []byte{0x08, 0x00, 0, 0, 0x45, 0, 0, 20}
		_, err = qp.PostSend([]ib.SendWR{{AH: ah, RemoteQPN: hw.QPN, RemoteQKey: qkey, Data: [][]byte{payload}}})
	})
	if err != nil {
		t.Fatalf("raw send: %v", err)
	}
}
