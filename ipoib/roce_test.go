package ipoib

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/sim"
)

// The simulator models InfiniBand ports only, so the RoCE tests put a
// simulated device behind roceDev, which reports the port as Ethernet
// link layer (LID 0, as rxe does) and records what the driver asks of
// it: multicast attaches, address vectors, sends. Nothing reaches the
// fabric; the data path over real RoCE is covered by the two-VM test in
// vmtest (TestIPoIBDTwoVMs).

// roceDev is a sim device that looks like a RoCE port.
type roceDev struct {
	ib.Device
	t         *testing.T
	activeMTU ib.MTU
	state     ib.PortState
	handler   func(ib.Event)
	avs       []ib.AddressVector
	qps       []*roceQP
}

func (d *roceDev) QueryPort(port int) (ib.PortAttr, error) {
	a, err := d.Device.QueryPort(port)
	if err != nil {
		return a, err
	}
	a.LinkLayer, a.LID, a.SMLID = ib.LinkLayerEthernet, 0, 0
	a.ActiveMTU, a.State = d.activeMTU, d.state
	return a, nil
}

func (d *roceDev) OpenMADPort(port int) (ib.MADPort, error) {
	d.t.Errorf("OpenMADPort(%d) called on a RoCE port", port)
	return nil, errors.New("roceDev: no SA on RoCE")
}

func (d *roceDev) SetEventHandler(fn func(ib.Event)) {
	d.handler = fn
	d.Device.SetEventHandler(nil)
}

func (d *roceDev) CreateAH(av ib.AddressVector) (ib.AddressHandle, error) {
	d.avs = append(d.avs, av)
	return &roceAH{av: av}, nil
}

func (d *roceDev) CreateUDQP(cfg ib.QPConfig) (ib.QueuePair, error) {
	qp, err := d.Device.CreateUDQP(cfg)
	if err != nil {
		return nil, err
	}
	q := &roceQP{QueuePair: qp, attached: map[ib.GID]ib.LID{}}
	d.qps = append(d.qps, q)
	return q, nil
}

// qp is the link's current QP.
func (d *roceDev) qp() *roceQP { return d.qps[len(d.qps)-1] }

// roceAH is an address handle that only remembers its vector.
type roceAH struct{ av ib.AddressVector }

func (a *roceAH) AddressVector() ib.AddressVector { return a.av }
func (a *roceAH) Destroy() error                  { return nil }

// roceQP records attaches and sends instead of passing them to the sim,
// whose multicast needs an MLID.
type roceQP struct {
	ib.QueuePair
	attached map[ib.GID]ib.LID
	sent     []ib.SendWR
}

func (q *roceQP) AttachMcast(mgid ib.GID, mlid ib.LID) error {
	q.attached[mgid] = mlid
	return nil
}

func (q *roceQP) DetachMcast(mgid ib.GID, mlid ib.LID) error {
	if l, ok := q.attached[mgid]; !ok || l != mlid {
		return errors.New("roceQP: detach of a group not attached")
	}
	delete(q.attached, mgid)
	return nil
}

func (q *roceQP) PostSend(wrs []ib.SendWR) (int, error) {
	q.sent = append(q.sent, wrs...)
	return len(wrs), nil
}

// newRoCE opens a Link on a RoCE-looking port of a one-host fabric.
func newRoCE(t *testing.T, mtu ib.MTU, cfg Config) (*env, *roceDev, *Link) {
	t.Helper()
	e := newEnv(t, sim.Config{})
	// A second partition, which rdma_rxe lacks but a RoCE NIC may have.
	h := e.star(1, sim.HostConfig{PKeys: []ib.PKey{ib.PKeyDefault, 0x8001}})[0]
	simDev, err := h.Open(e.loop)
	if err != nil {
		t.Fatal(err)
	}
	dev := &roceDev{Device: simDev, t: t, activeMTU: mtu, state: ib.PortActive}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("roce%d", e.id)
	}
	l, err := New(e.loop, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r := e.loop.Acquire()
		defer r()
		if !l.d.closed {
			_ = l.Close()
		}
		_ = simDev.Close()
	})
	return e, dev, l
}

// TestRoCEBroadcastJoin: the broadcast group is joined without an SA —
// attached with MLID 0, Q_Key 0x0B1B, the port's active MTU — and the
// link comes up with IP MTU = IB MTU - 4.
func TestRoCEBroadcastJoin(t *testing.T) {
	tests := []struct {
		name   string
		active ib.MTU
		pkey   ib.PKey
		wantIB ib.MTU
		wantIP int
	}{
		{"1500-byte NIC", ib.MTU1024, 0, ib.MTU1024, 1020},
		{"2200-byte NIC", ib.MTU2048, 0, ib.MTU2048, 2044},
		{"jumbo NIC", ib.MTU4096, 0, ib.MTU4096, 4092},
		{"no active MTU", 0, 0, DefaultBroadcastMTU, 2044},
		{"partition 0x8001", ib.MTU1024, 0x8001, ib.MTU1024, 1020},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, dev, l := newRoCE(t, tc.active, Config{PKey: tc.pkey})
			pkey := tc.pkey
			if pkey == 0 {
				pkey = ib.PKeyDefault
			}
			if err := l.NetDev().Open(); err != nil {
				t.Fatal(err)
			}
			e.settle()
			if up, why := l.NetDev().LinkState(); !up {
				t.Fatalf("link down after the local join: %v", why)
			}
			mgid := BroadcastGID(pkey)
			if mlid, ok := dev.qp().attached[mgid]; !ok || mlid != 0 {
				t.Errorf("attached %v, want %v with MLID 0", dev.qp().attached, mgid)
			}
			g := l.Group()
			if !g.Joined || g.MGID != mgid || g.MLID != 0 || g.QKey != ib.QKeyIPoIBDefault || g.MTU != tc.wantIB || g.HopLimit != roceHopLimit {
				t.Errorf("group %+v, want joined %v MLID 0 Q_Key %v MTU %v hop limit %d", g, mgid, ib.QKeyIPoIBDefault, tc.wantIB, roceHopLimit)
			}
			if got := l.NetDev().MTU(); got != tc.wantIP {
				t.Errorf("IP MTU %d, want %d", got, tc.wantIP)
			}
			// The group's address vector: GRH to the MGID, no LID.
			var found bool
			for _, av := range dev.avs {
				if av.DGID == mgid {
					found = true
					if !av.GlobalRoute || av.DLID != 0 || av.SGIDIndex != 0 {
						t.Errorf("broadcast AV %+v: want GRH, DLID 0, SGID index 0", av)
					}
				}
			}
			if !found {
				t.Errorf("no address vector for the broadcast group among %+v", dev.avs)
			}
			if n := l.NetDev().Stats().Load(Joins); n != 1 {
				t.Errorf("ipoib_joins %d, want 1", n)
			}
		})
	}
}

// TestRoCEUnicastPath: the first packet to a peer resolves its path on
// the spot (GRH to the peer's GID, DLID 0, hop limit 1) and goes out at
// once; the next reuses it.
func TestRoCEUnicastPath(t *testing.T) {
	e, dev, l := newRoCE(t, ib.MTU1024, Config{SL: 3})
	if err := l.NetDev().Open(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	peer := Addr{QPN: 0x11, GID: ib.GID{0xfe, 0x80, 14: 0x12, 15: 0x34}}
	var dst [AddrLen]byte
	if err := peer.Encode(dst[:]); err != nil {
		t.Fatal(err)
	}
	sends := len(dev.qp().sent)
	for i := range 2 {
		b, err := l.NetDev().AllocBuffer()
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Append([]byte("hello over RoCE"))
		if err := l.NetDev().Transmit(b, dst[:], EtherTypeIPv4); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		e.settle()
	}
	sent := dev.qp().sent[sends:]
	if len(sent) != 2 {
		t.Fatalf("%d sends posted, want 2", len(sent))
	}
	for _, wr := range sent {
		av := wr.AH.AddressVector()
		if wr.RemoteQPN != peer.QPN || wr.RemoteQKey != ib.QKeyIPoIBDefault {
			t.Errorf("send to QPN %v Q_Key %v, want %v %v", wr.RemoteQPN, wr.RemoteQKey, peer.QPN, ib.QKeyIPoIBDefault)
		}
		if !av.GlobalRoute || av.DLID != 0 || av.DGID != peer.GID || av.SGIDIndex != 0 || av.HopLimit != roceHopLimit || av.SL != 3 {
			t.Errorf("unicast AV %+v: want GRH to %v, DLID 0, SGID index 0, hop limit %d, SL 3", av, peer.GID, roceHopLimit)
		}
	}
	st := l.NetDev().Stats()
	if st.Load(LocalPaths) != 1 || st.Load(PathQueries) != 0 || st.Load(PathCacheHits) != 1 {
		t.Errorf("local paths %d, queries %d, cache hits %d; want 1, 0, 1",
			st.Load(LocalPaths), st.Load(PathQueries), st.Load(PathCacheHits))
	}
}

// TestRoCEMulticastAndEvents: an IP multicast group is attached locally
// with MLID 0; a port going down detaches everything and takes the link
// down, and its return attaches everything again.
func TestRoCEMulticastAndEvents(t *testing.T) {
	e, dev, l := newRoCE(t, ib.MTU2048, Config{})
	if err := l.NetDev().Open(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	group := netip.MustParseAddr("239.1.2.3")
	if err := l.JoinMulticast(group); err != nil {
		t.Fatal(err)
	}
	e.settle()
	mgid, err := l.groupGID(group)
	if err != nil {
		t.Fatal(err)
	}
	bcast := BroadcastGID(ib.PKeyDefault)
	check := func(when string, want ...ib.GID) {
		t.Helper()
		got := dev.qp().attached
		if len(got) != len(want) {
			t.Errorf("%s: attached %v, want %v", when, got, want)
		}
		for _, g := range want {
			if mlid, ok := got[g]; !ok || mlid != 0 {
				t.Errorf("%s: %v not attached with MLID 0 (%v)", when, g, got)
			}
		}
	}
	check("joined", bcast, mgid)
	if n := l.NetDev().Stats().Load(McastJoins); n != 1 {
		t.Errorf("ipoib_mcast_joins %d, want 1", n)
	}

	dev.state = ib.PortDown
	dev.handler(ib.Event{Type: ib.EventPortDown, Port: 1})
	e.settle()
	if up, _ := l.NetDev().LinkState(); up {
		t.Error("link still up after the port went down")
	}
	check("port down")

	dev.state = ib.PortActive
	dev.handler(ib.Event{Type: ib.EventPortActive, Port: 1})
	e.settle()
	if up, why := l.NetDev().LinkState(); !up {
		t.Errorf("link down after the port came back: %v", why)
	}
	check("port active again", bcast, mgid)

	// Closing the netdev leaves (detaches) every group without an SA.
	if err := l.NetDev().Close(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	check("closed")
}

// TestRoCEJoinCancelled: a local join still pending when the port goes
// down is void; it must not attach or bring the link up afterwards.
func TestRoCEJoinCancelled(t *testing.T) {
	e, dev, l := newRoCE(t, ib.MTU1024, Config{})
	if err := l.NetDev().Open(); err != nil {
		t.Fatal(err)
	}
	// The join's answer is scheduled but has not run: take the port down
	// first, the way a flush would.
	dev.state = ib.PortDown
	l.d.flush(flushNormal)
	e.settle()
	if up, _ := l.NetDev().LinkState(); up {
		t.Error("a voided local join brought the link up")
	}
	if len(dev.qp().attached) != 0 {
		t.Errorf("a voided local join attached %v", dev.qp().attached)
	}
}
