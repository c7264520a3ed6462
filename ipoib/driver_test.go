package ipoib

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// TestJoinAndMTU opens two links and checks the broadcast join: link up
// only afterwards, the IP MTU from the group's IB MTU, the group's
// parameters as the SA holds them, and a port that asks for other
// parameters than an existing group's joining it as it is.
func TestJoinAndMTU(t *testing.T) {
	tests := []struct {
		name       string
		first, sec ib.MTU // BroadcastMTU of the two hosts; the first creates
		wantMTU    int
		wantIB     ib.MTU
	}{
		{"default group", 0, 0, 2044, ib.MTU2048},
		{"4096 group", ib.MTU4096, ib.MTU4096, 4092, ib.MTU4096},
		{"existing 4096 group, second asks for 2048", ib.MTU4096, ib.MTU2048, 4092, ib.MTU4096},
		{"existing 2048 group, second asks for 4096", ib.MTU2048, ib.MTU4096, 2044, ib.MTU2048},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, sim.Config{})
			hs := e.star(2, sim.HostConfig{})
			a := e.create(hs[0], Config{BroadcastMTU: tc.first})
			b := e.create(hs[1], Config{BroadcastMTU: tc.sec})
			if a.up() || a.l.Group().Joined {
				t.Fatal("link up before open")
			}
			if err := a.nd.Open(); err != nil {
				t.Fatal(err)
			}
			if a.up() {
				t.Fatal("link up before the join was answered")
			}
			e.settle()
			if err := b.nd.Open(); err != nil {
				t.Fatal(err)
			}
			e.settle()
			for _, n := range []*node{a, b} {
				g := n.l.Group()
				if !n.up() || n.nd.MTU() != tc.wantMTU || !g.Joined || g.MTU != tc.wantIB {
					t.Fatalf("%s: up %v, MTU %d, group %+v; want up, MTU %d", n.nd.Name(), n.up(), n.nd.MTU(), g, tc.wantMTU)
				}
				if g.MGID != BroadcastGID(ib.PKeyDefault) || !g.MLID.IsMulticast() || g.QKey != ib.QKeyIPoIBDefault || g.PKey != ib.PKeyDefault {
					t.Fatalf("%s: group %+v", n.nd.Name(), g)
				}
				if n.stat(Joins) != 1 {
					t.Fatalf("%s: %d joins", n.nd.Name(), n.stat(Joins))
				}
			}
			groups := e.f.Groups()
			if len(groups) != 1 || len(groups[0].Members) != 2 || groups[0].MTU != tc.wantIB || groups[0].QKey != ib.QKeyIPoIBDefault {
				t.Fatalf("SA groups %+v", groups)
			}
			for _, m := range groups[0].Members {
				if m.JoinState != ib.JoinFullMember {
					t.Fatalf("member %+v is not a full member", m)
				}
			}
			// The address is flags 0, the QPN and the port GID.
			var self Addr
			_ = self.Decode(a.addr())
			attr, _ := a.dev.QueryPort(1)
			if self.Flags != 0 || self.QPN != a.l.d.qp.QPN() || self.GID != attr.GIDs[0] {
				t.Fatalf("hardware address %v", self)
			}
		})
	}
}

// TestUnicastBothWays sends datagrams both ways through netdev: the path
// is resolved on first use, the frames arrive with the right addresses
// and ethertype and with zero reserved bytes on the wire, and later
// packets use the cached path.
func TestUnicastBothWays(t *testing.T) {
	e, _, a, b := newPair(t)
	a.mustSend(b.addr(), []byte("hello b"))
	e.settle()
	b.mustSend(a.addr(), []byte("hello a"))
	e.settle()
	a.mustSend(b.addr(), []byte("again"))
	e.settle()
	if got := b.received(a.addr()); !slices.Equal(got, []string{"hello b", "again"}) {
		t.Fatalf("b received %q from a (all: %+v)", got, b.rx)
	}
	if got := a.received(b.addr()); !slices.Equal(got, []string{"hello a"}) {
		t.Fatalf("a received %q from b", got)
	}
	for _, f := range b.rx {
		if !bytes.Equal(f.dst, b.addr()) || f.proto != EtherTypeIPv4 {
			t.Fatalf("frame %+v", f)
		}
	}
	if a.stat(PathQueries) != 1 || b.stat(PathQueries) != 1 || a.stat(PathCacheHits) != 1 {
		t.Fatalf("path queries %d/%d, a's cache hits %d", a.stat(PathQueries), b.stat(PathQueries), a.stat(PathCacheHits))
	}
	if a.stat(netdev.TxOK) != 2 || b.stat(netdev.RxOK) != 2 || a.nd.TxQueued() != 0 {
		t.Fatalf("a tx_ok %d, b rx_ok %d, a queued %d", a.stat(netdev.TxOK), b.stat(netdev.RxOK), a.nd.TxQueued())
	}
	peers, err := a.l.Peers()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, p := range peers {
		states[p.Addr] = p.State
	}
	var bAddr Addr
	_ = bAddr.Decode(b.addr())
	if states[bAddr.String()] != "resolved" || states[BroadcastAddr(ib.PKeyDefault).String()] != "joined" {
		t.Fatalf("peers %+v", peers)
	}
}

// TestPendingQueue sends a burst before the path is known: three packets
// wait and go out, in order, when it arrives; the fourth is dropped and
// counted.
func TestPendingQueue(t *testing.T) {
	e, _, a, b := newPair(t)
	var errs []error
	for i := range 4 {
		errs = append(errs, a.send(b.addr(), fmt.Appendf(nil, "p%d", i)))
	}
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || !errors.Is(errs[3], netdev.ErrNoPath) || !errors.Is(errs[3], ErrParkFull) {
		t.Fatalf("transmit results %v", errs)
	}
	if a.nd.TxQueued() != 3 || len(b.rx) != 0 {
		t.Fatalf("%d queued, %d received before the path", a.nd.TxQueued(), len(b.rx))
	}
	e.settle()
	if got := b.received(a.addr()); !slices.Equal(got, []string{"p0", "p1", "p2"}) {
		t.Fatalf("b received %q", got)
	}
	if a.stat(PendingDrops) != 1 || a.stat(netdev.TxNoPath) != 1 || a.stat(netdev.TxOK) != 3 || a.stat(PathQueries) != 1 {
		t.Fatalf("pending drops %d, no path %d, tx ok %d, queries %d",
			a.stat(PendingDrops), a.stat(netdev.TxNoPath), a.stat(netdev.TxOK), a.stat(PathQueries))
	}
}

// TestBroadcastAndLoopback sends to the broadcast address: every other
// host receives it, addressed to the broadcast address, and the sender's
// own copy, which the HCA loops back, is dropped and counted.
func TestBroadcastAndLoopback(t *testing.T) {
	e := newEnv(t, sim.Config{})
	hs := e.star(4, sim.HostConfig{})
	var ns []*node
	for _, h := range hs {
		ns = append(ns, e.open(h, Config{}))
	}
	e.settle()
	bcast := ns[0].l.Broadcast()
	ns[0].mustSend(bcast, []byte("to all"))
	e.settle()
	if len(ns[0].rx) != 0 || ns[0].stat(RxLoopback) != 1 {
		t.Fatalf("sender received %d frames, loopback drops %d", len(ns[0].rx), ns[0].stat(RxLoopback))
	}
	for _, n := range ns[1:] {
		if len(n.rx) != 1 || string(n.rx[0].data) != "to all" || !bytes.Equal(n.rx[0].dst, bcast) || !bytes.Equal(n.rx[0].src, ns[0].addr()) {
			t.Fatalf("%s received %+v", n.nd.Name(), n.rx)
		}
	}
	if ns[0].stat(PathQueries) != 0 {
		t.Fatal("a broadcast asked for a path")
	}
}

// TestMulticastOnDemand: two hosts join an IPv4 group for receiving; a
// third sends to it without having joined, which joins it as a send-only
// member on demand, holds the packets meanwhile and sends them after.
func TestMulticastOnDemand(t *testing.T) {
	e := newEnv(t, sim.Config{})
	hs := e.star(3, sim.HostConfig{})
	a, b, c := e.open(hs[0], Config{PathTimeout: time.Minute}), e.open(hs[1], Config{}), e.open(hs[2], Config{})
	e.settle()
	grp := netip.MustParseAddr("224.1.2.3")
	for _, n := range []*node{b, c} {
		if err := n.l.JoinMulticast(grp); err != nil {
			t.Fatal(err)
		}
	}
	e.settle()
	dst, err := a.l.Multicast(grp, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.mustSend(dst, []byte("m1"))
	a.mustSend(dst, []byte("m2"))
	if a.nd.TxQueued() != 2 {
		t.Fatalf("%d queued while joining", a.nd.TxQueued())
	}
	e.settle()
	for _, n := range []*node{b, c} {
		if got := n.received(a.addr()); !slices.Equal(got, []string{"m1", "m2"}) || !bytes.Equal(n.rx[0].dst, dst) {
			t.Fatalf("%s received %+v", n.nd.Name(), n.rx)
		}
	}
	mgid, _ := IPv4MulticastGID(ib.PKeyDefault, grp)
	var members map[ib.GID]ib.JoinState
	for _, g := range e.f.Groups() {
		if g.MGID == mgid {
			members = map[ib.GID]ib.JoinState{}
			for _, m := range g.Members {
				members[m.PortGID] = m.JoinState
			}
			if g.QKey != ib.QKeyIPoIBDefault || g.MTU != ib.MTU2048 {
				t.Fatalf("group %+v does not copy the broadcast group's parameters", g)
			}
		}
	}
	ga, gb := a.l.d.self.GID, b.l.d.self.GID
	if members[ga] != ib.JoinSendOnlyFullMember || members[gb] != ib.JoinFullMember {
		t.Fatalf("members %v", members)
	}
	if a.stat(McastJoins) != 1 || b.stat(McastJoins) != 1 {
		t.Fatalf("multicast joins %d, %d", a.stat(McastJoins), b.stat(McastJoins))
	}
	// Leaving takes b out of the group: c still gets the next one.
	if err := b.l.LeaveMulticast(grp); err != nil {
		t.Fatal(err)
	}
	e.settle()
	a.mustSend(dst, []byte("m3"))
	e.settle()
	if len(b.received(nil)) != 2 || len(c.received(nil)) != 3 {
		t.Fatalf("after b left: b %q, c %q", b.received(nil), c.received(nil))
	}
	// a's send-only membership lapses once a has not sent for a while.
	member := func(gid ib.GID) bool {
		for _, g := range e.f.Groups() {
			if g.MGID == mgid && slices.ContainsFunc(g.Members, func(m sim.MemberInfo) bool { return m.PortGID == gid }) {
				return true
			}
		}
		return false
	}
	e.advance(20 * time.Second)
	if !member(ga) {
		t.Fatal("a left the group while still using it")
	}
	e.advance(20 * time.Second)
	if member(ga) || !member(c.l.d.self.GID) || len(a.l.d.groups) != 0 {
		t.Fatalf("after a minute idle: a member %v, a's groups %d", member(ga), len(a.l.d.groups))
	}
	a.mustSend(dst, []byte("m4"))
	e.settle()
	if got := c.received(a.addr()); len(got) != 4 || a.stat(McastJoins) != 2 {
		t.Fatalf("c received %q; a joined %d times", got, a.stat(McastJoins))
	}
}

// TestSADownAtOpen opens links while the SM is down: the joins fail and
// are retried with backoff, the links stay down, and they come up once
// the SM is back.
func TestSADownAtOpen(t *testing.T) {
	e := newEnv(t, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	if err := e.f.SetSMUp(false); err != nil {
		t.Fatal(err)
	}
	cfg := Config{JoinBackoff: time.Second, JoinBackoffMax: 4 * time.Second}
	a, b := e.open(hs[0], cfg), e.open(hs[1], cfg)
	e.advance(20 * time.Second)
	for _, n := range []*node{a, b} {
		if n.up() || n.stat(JoinFailures) < 3 || n.stat(JoinRetries) < 3 {
			t.Fatalf("%s: up %v, %d failures, %d retries", n.nd.Name(), n.up(), n.stat(JoinFailures), n.stat(JoinRetries))
		}
	}
	// The backoff doubles up to its cap: 1+2+4+4+... seconds plus the
	// SA client's own 0.3 s per try, so 20 s make well under 20 tries.
	if r := a.stat(JoinRetries); r > 8 {
		t.Fatalf("%d retries in 20 s: no backoff", r)
	}
	if err := e.f.SetSMUp(true); err != nil {
		t.Fatal(err)
	}
	e.advance(5 * time.Second)
	if !a.up() || !b.up() {
		t.Fatalf("links up: %v, %v", a.up(), b.up())
	}
	a.mustSend(b.addr(), []byte("after"))
	e.settle()
	if got := b.received(a.addr()); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("b received %q", got)
	}
}

// TestSMRestart keeps the links up while the SM is away: known paths and
// the broadcast group keep working, a new path cannot be resolved; when
// the SM returns (SM change, client reregister) the links rejoin and new
// paths resolve.
func TestSMRestart(t *testing.T) {
	e, a, b, c := newTrio(t)
	a.mustSend(b.addr(), []byte("1"))
	e.settle()
	if err := e.f.SetSMUp(false); err != nil {
		t.Fatal(err)
	}
	e.advance(30 * time.Second)
	if !a.up() || !b.up() || !c.up() {
		t.Fatal("a link went down with the SM")
	}
	a.mustSend(b.addr(), []byte("2"))
	a.mustSend(a.l.Broadcast(), []byte("3"))
	a.mustSend(c.addr(), []byte("lost"))
	e.advance(2 * time.Second)
	if got := b.received(a.addr()); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("b received %q while the SM was down", got)
	}
	if len(c.received(a.addr())) != 1 || a.stat(PathFailures) != 1 || a.stat(netdev.TxNoPath) != 1 {
		t.Fatalf("c received %q; a: %d path failures, %d no-path drops", c.received(a.addr()), a.stat(PathFailures), a.stat(netdev.TxNoPath))
	}
	if err := e.f.SetSMUp(true); err != nil {
		t.Fatal(err)
	}
	e.settle()
	for _, n := range []*node{a, b, c} {
		if !n.up() || n.stat(FlushLight) != 1 || n.stat(Joins) != 2 {
			t.Fatalf("%s: up %v, %d light flushes, %d joins", n.nd.Name(), n.up(), n.stat(FlushLight), n.stat(Joins))
		}
	}
	a.mustSend(c.addr(), []byte("4"))
	a.mustSend(b.addr(), []byte("5"))
	e.settle()
	a.mustSend(a.l.Broadcast(), []byte("6"))
	e.settle()
	if got := c.received(a.addr()); !slices.Equal(got, []string{"3", "4", "6"}) {
		t.Fatalf("c received %q", got)
	}
	if got := b.received(a.addr()); !slices.Equal(got, []string{"1", "2", "3", "5", "6"}) {
		t.Fatalf("b received %q", got)
	}
	// The light flush marked a's path to b stale: "5" went on it while it
	// was refreshed.
	if a.stat(PathQueries) != 4 {
		t.Fatalf("a sent %d path queries, want 4 (b, c lost, c, b refreshed)", a.stat(PathQueries))
	}
}

// TestLIDChange moves a host to a new LID: it flushes (normal), rejoins
// and resolves afresh; its peer learns of the move from the first
// datagram that arrives from the new LID, and traffic resumes both ways.
func TestLIDChange(t *testing.T) {
	e, hs, a, b := newPair(t)
	a.mustSend(b.addr(), []byte("1"))
	b.mustSend(a.addr(), []byte("1"))
	e.settle()
	e.advance(2 * time.Second)
	old, _ := b.dev.QueryPort(1)
	lid, err := hs[1].ReassignLID(1, 0x100)
	if err != nil || lid == old.LID {
		t.Fatal(lid, err)
	}
	e.settle()
	if !b.up() || b.stat(FlushNormal) != 1 || b.stat(Joins) != 2 || !slices.Equal(b.ups, []bool{true, false, true}) {
		t.Fatalf("b: up %v, %d normal flushes, %d joins, transitions %v", b.up(), b.stat(FlushNormal), b.stat(Joins), b.ups)
	}
	b.mustSend(a.addr(), []byte("2"))
	e.settle()
	a.mustSend(b.addr(), []byte("2"))
	e.settle()
	if got := b.received(a.addr()); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("b received %q (wrong-DLID drops %d)", got, hostDrops(hs[1], sim.DropWrongDLID))
	}
	if got := a.received(b.addr()); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("a received %q", got)
	}
	if a.stat(PathQueries) != 2 || b.stat(PathQueries) != 2 {
		t.Fatalf("path queries %d, %d", a.stat(PathQueries), b.stat(PathQueries))
	}
}

// TestDeviceFatal: a device that fails as a whole takes the link down
// with a reason that says so, and nothing that happens to its port later
// brings the link back; closed and opened again, the device carries a
// link that comes up and delivers.
func TestDeviceFatal(t *testing.T) {
	e, hs, a, b := newPair(t)
	a.mustSend(b.addr(), []byte("1"))
	e.settle()
	hs[0].FailDevices()
	e.settle()
	up, reason := a.nd.LinkState()
	if up || !errors.Is(reason, ib.ErrDeviceFatal) || !slices.Equal(a.ups, []bool{true, false}) {
		t.Fatalf("after the fatal event: up %v, reason %v, transitions %v", up, reason, a.ups)
	}
	if err := a.send(b.addr(), []byte("x")); !errors.Is(err, netdev.ErrLinkDown) {
		t.Fatalf("transmit on a failed device: %v", err)
	}
	// The port bouncing does not revive the dead device's link.
	hs[0].SetLinkUp(1, false)
	e.settle()
	hs[0].SetLinkUp(1, true)
	e.settle()
	if a.up() {
		t.Fatal("the link of a failed device came back up")
	}
	// Nothing to leave on a dead device: Leave calls back at once.
	left := false
	if err := a.l.Leave(func() { left = true }); err != nil || !left {
		t.Fatalf("Leave on a failed device: %v, called back %v", err, left)
	}
	if err := a.l.Close(); err != nil {
		t.Fatalf("closing the link of a failed device: %v", err)
	}
	if err := a.dev.Close(); err != nil {
		t.Fatalf("closing the failed device: %v", err)
	}
	again := e.open(hs[0], Config{Name: "again"})
	e.settle()
	if !again.up() {
		t.Fatal("the link on the reopened device is not up")
	}
	again.mustSend(b.addr(), []byte("2"))
	e.settle()
	if got := b.received(again.addr()); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("b received %q from the reopened device", got)
	}
}

// TestPortDownUp takes a host's cable out and back: the link goes down
// with the port and comes back up, rejoined, when the port is ACTIVE
// again; packets offered meanwhile are refused.
func TestPortDownUp(t *testing.T) {
	e, hs, a, b := newPair(t)
	a.mustSend(b.addr(), []byte("1"))
	e.settle()
	if err := hs[0].SetLinkUp(1, false); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if a.up() || a.l.Group().Joined {
		t.Fatalf("a up %v, group %+v after its port went down", a.up(), a.l.Group())
	}
	if err := a.send(b.addr(), []byte("x")); !errors.Is(err, netdev.ErrLinkDown) {
		t.Fatalf("transmit on a down link: %v", err)
	}
	if err := hs[0].SetLinkUp(1, true); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if !a.up() || !slices.Equal(a.ups, []bool{true, false, true}) || a.stat(Joins) != 2 {
		t.Fatalf("a: up %v, transitions %v, joins %d", a.up(), a.ups, a.stat(Joins))
	}
	a.mustSend(b.addr(), []byte("2"))
	e.settle()
	if got := b.received(a.addr()); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("b received %q", got)
	}
}
