package ipoib

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// TestPKeyIsolation puts two hosts in different partitions (each a
// limited member of the default one, for the SA): neither unicast nor
// broadcast crosses, and a datagram forced across on a hand-made path is
// dropped by the receiving port's P_Key check and counted at the sim.
func TestPKeyIsolation(t *testing.T) {
	e := newEnv(t, sim.Config{})
	sw, err := e.f.AddSwitch("sw0", sim.SwitchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var hs []*sim.Host
	for i, pk := range []ib.PKey{0x8001, 0x8002} {
		h, err := e.f.AddHost(fmt.Sprintf("host%d", i), sim.HostConfig{PKeys: []ib.PKey{0x7FFF, pk}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.f.Connect(h, sw, sim.CableConfig{}); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	a, b := e.open(hs[0], Config{PKey: 0x8001}), e.open(hs[1], Config{PKey: 0x8002})
	e.settle()
	if !a.up() || !b.up() || a.l.Group().MGID == b.l.Group().MGID {
		t.Fatalf("up %v %v, groups %v %v", a.up(), b.up(), a.l.Group().MGID, b.l.Group().MGID)
	}
	a.mustSend(b.addr(), []byte("unicast"))
	a.mustSend(a.l.Broadcast(), []byte("broadcast"))
	e.settle()
	if len(b.rx) != 0 || a.stat(PathFailures) != 1 || a.stat(netdev.TxNoPath) != 1 {
		t.Fatalf("b received %d; a: %d path failures, %d no-path drops", len(b.rx), a.stat(PathFailures), a.stat(netdev.TxNoPath))
	}
	// Force a path to b, as a misbehaving sender would.
	p := a.l.Cache().Find(b.addr())
	ah, err := a.dev.CreateAH(ib.AddressVector{Port: 1, DLID: b.lid(), GlobalRoute: true, DGID: b.l.d.self.GID})
	if err != nil {
		t.Fatal(err)
	}
	st := a.l.d.state(p)
	if err := a.l.Cache().SetPath(st.ref, Path{LID: b.lid(), MTU: ib.MTU2048, AH: ah}); err != nil {
		t.Fatal(err)
	}
	before := hostDrops(hs[1], sim.DropPKey)
	a.mustSend(b.addr(), []byte("forced"))
	e.settle()
	if len(b.rx) != 0 || hostDrops(hs[1], sim.DropPKey) != before+1 {
		t.Fatalf("b received %d, P_Key drops %d -> %d", len(b.rx), before, hostDrops(hs[1], sim.DropPKey))
	}
}

// TestQKeyAndNoGRH sends raw datagrams at a link: one with a wrong Q_Key
// never reaches netdev (the sim counts it); ones without a GRH are
// delivered with no source when the sender's LID and QPN are unknown and
// with its address once the link has resolved a path to it.
func TestQKeyAndNoGRH(t *testing.T) {
	e := newEnv(t, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	a := e.open(hs[0], Config{})
	e.settle()
	r := e.raw(hs[1], ib.QKeyIPoIBDefault)
	frame := func(s string) []byte { return append([]byte{0x08, 0x00, 0, 0}, s...) }
	qpn := a.l.d.self.QPN

	r.send(a.lid(), qpn, 0x1234, frame("wrong qkey"))
	e.settle()
	if len(a.rx) != 0 || hostDrops(hs[0], sim.DropQKey) != 1 {
		t.Fatalf("a received %d, Q_Key drops %d", len(a.rx), hostDrops(hs[0], sim.DropQKey))
	}
	r.send(a.lid(), qpn, ib.QKeyIPoIBDefault, frame("anonymous"))
	e.settle()
	if len(a.rx) != 1 || a.rx[0].src != nil || !bytes.Equal(a.rx[0].dst, a.addr()) || string(a.rx[0].data) != "anonymous" {
		t.Fatalf("a received %+v", a.rx)
	}
	a.mustSend(r.addr(), []byte("hi raw")) // resolves the path to the raw QP
	e.settle()
	// On the wire the reserved bytes are zero, whatever keys the frame
	// carried inside the host (RFC 4391 section 6).
	if len(r.rx) != 1 || !bytes.Equal(r.rx[0], []byte("\x08\x00\x00\x00hi raw")) {
		t.Fatalf("raw QP received %q", r.rx)
	}
	r.send(a.lid(), qpn, ib.QKeyIPoIBDefault, frame("known"))
	e.settle()
	if len(a.rx) != 2 || !bytes.Equal(a.rx[1].src, r.addr()) {
		t.Fatalf("a received %+v, want the second from %x", a.rx, r.addr())
	}
	if a.stat(netdev.RxOK) != 2 || a.stat(netdev.RxUnknownKey) != 0 {
		t.Fatalf("rx_ok %d, rx_unknown_key %d", a.stat(netdev.RxOK), a.stat(netdev.RxUnknownKey))
	}
}

// TestPKeyChange rewrites a port's P_Key table. When the link's partition
// keeps its index the heavy flush only rejoins; when it moves, the QP is
// re-created on the new index, the interface address follows its new
// QPN, and traffic resumes both ways.
func TestPKeyChange(t *testing.T) {
	tests := []struct {
		name   string
		table  []ib.PKey
		moveQP bool
	}{
		{"same index", []ib.PKey{0xFFFF, 0x8005}, false},
		{"index moves", []ib.PKey{0x7FFF, 0xFFFF}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, hs, a, b := newPair(t)
			a.mustSend(b.addr(), []byte("1"))
			e.settle()
			old := a.addr()
			if err := hs[0].SetPKeys(1, tc.table); err != nil {
				t.Fatal(err)
			}
			e.settle()
			if !a.up() || a.stat(FlushHeavy) != 1 || a.stat(Joins) != 2 {
				t.Fatalf("a: up %v, %d heavy flushes, %d joins", a.up(), a.stat(FlushHeavy), a.stat(Joins))
			}
			if moved := !bytes.Equal(old, a.addr()); moved != tc.moveQP {
				t.Fatalf("address %x -> %x; want moved %v", old, a.addr(), tc.moveQP)
			}
			a.mustSend(b.addr(), []byte("2"))
			b.mustSend(a.addr(), []byte("3"))
			e.settle()
			if got := b.received(nil); !slices.Equal(got, []string{"1", "2"}) {
				t.Fatalf("b received %q", got)
			}
			if got := a.received(b.addr()); !slices.Equal(got, []string{"3"}) {
				t.Fatalf("a received %q", got)
			}
		})
	}
}

// TestPathExpiry lets a path outlive PathTimeout: the scan marks it, the
// next packet still goes out on it and asks the SA again.
func TestPathExpiry(t *testing.T) {
	e := newEnv(t, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	a, b := e.open(hs[0], Config{PathTimeout: time.Minute}), e.open(hs[1], Config{})
	e.settle()
	a.mustSend(b.addr(), []byte("1"))
	e.settle()
	e.advance(50 * time.Second)
	if a.stat(PathsExpired) != 0 {
		t.Fatal("path expired early")
	}
	e.advance(30 * time.Second)
	if a.stat(PathsExpired) != 1 {
		t.Fatalf("%d paths expired", a.stat(PathsExpired))
	}
	peers, _ := a.l.Peers()
	if !slices.ContainsFunc(peers, func(p PeerInfo) bool { return p.State == "stale" && p.Age >= time.Minute }) {
		t.Fatalf("no stale peer in %+v", peers)
	}
	a.mustSend(b.addr(), []byte("2"))
	e.settle()
	if got := b.received(nil); !slices.Equal(got, []string{"1", "2"}) || a.stat(PathQueries) != 2 {
		t.Fatalf("b received %q, a sent %d queries", got, a.stat(PathQueries))
	}
	peers, _ = a.l.Peers()
	if !slices.ContainsFunc(peers, func(p PeerInfo) bool { return p.State == "resolved" && p.Age == 0 }) {
		t.Fatalf("path not refreshed: %+v", peers)
	}
}

// TestBatchTransmit sends one batch to a resolved peer, the broadcast
// group and an unresolved peer.
func TestBatchTransmit(t *testing.T) {
	e, a, b, c := newTrio(t)
	a.mustSend(b.addr(), []byte("warm"))
	e.settle()
	var pkts []netdev.Packet
	for _, dst := range [][]byte{b.addr(), a.l.Broadcast(), c.addr(), b.addr()} {
		buf, _ := a.nd.AllocBuffer()
		_ = buf.Append([]byte("batch"))
		pkts = append(pkts, netdev.Packet{Buf: buf, Dst: dst, Proto: EtherTypeIPv4})
	}
	if n, err := a.nd.TransmitBatch(pkts); n != 4 || err != nil {
		t.Fatal(n, err)
	}
	e.settle()
	if len(b.received(a.addr())) != 4 || len(c.received(a.addr())) != 2 || a.stat(netdev.TxOK) != 5 {
		t.Fatalf("b got %q, c got %q, tx_ok %d", b.received(nil), c.received(nil), a.stat(netdev.TxOK))
	}
}

// TestCloseLeaves closes a link with a packet waiting for a path: the
// link leaves the broadcast group, the packet is aborted, the netdev's
// name is free again and the other host is unaffected.
func TestCloseLeaves(t *testing.T) {
	e, a, b, c := newTrio(t)
	if g := e.f.Groups(); len(g) != 1 || len(g[0].Members) != 3 {
		t.Fatalf("groups %+v", g)
	}
	a.mustSend(c.addr(), []byte("never"))
	name := a.nd.Name()
	if err := a.l.Close(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if g := e.f.Groups(); len(g) != 1 || len(g[0].Members) != 2 {
		t.Fatalf("groups after close %+v", g)
	}
	if a.stat(netdev.TxAborted) != 1 || len(c.rx) != 0 {
		t.Fatalf("tx_aborted %d, c received %d", a.stat(netdev.TxAborted), len(c.rx))
	}
	if _, ok := netdev.Lookup(name); ok {
		t.Fatal("netdev still registered")
	}
	if err := a.l.Close(); err == nil {
		t.Fatal("second close succeeded")
	}
	b.mustSend(c.addr(), []byte("still"))
	e.settle()
	if got := c.received(b.addr()); !slices.Equal(got, []string{"still"}) {
		t.Fatalf("c received %q", got)
	}
	// Reopening after a netdev close (not a Link close) works.
	if err := b.nd.Close(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if err := b.nd.Open(); err != nil {
		t.Fatal(err)
	}
	e.settle()
	b.mustSend(c.addr(), []byte("again"))
	e.settle()
	if !b.up() || !slices.Equal(c.received(b.addr()), []string{"still", "again"}) {
		t.Fatalf("b up %v, c received %q", b.up(), c.received(b.addr()))
	}
}

// TestLeaveWaitsForSA: Leave takes the link down and calls back only
// once the SA has answered the leave, so the subnet manager has
// forgotten the port; with the SA silent it calls back when the SA
// client has given up after its retries, and a link whose netdev is
// already closed has nothing to wait for.
func TestLeaveWaitsForSA(t *testing.T) {
	e, a, b, c := newTrio(t)
	left := 0
	if err := a.l.Leave(func() { left++ }); err != nil {
		t.Fatal(err)
	}
	if left != 0 || a.up() {
		t.Fatalf("before the SA answered: called back %d times, link up %v", left, a.up())
	}
	e.settle()
	if left != 1 {
		t.Fatalf("after the SA answered: called back %d times, want 1", left)
	}
	if g := e.f.Groups(); len(g) != 1 || len(g[0].Members) != 2 {
		t.Fatalf("groups after the leave %+v", g)
	}
	// Nothing outstanding: at once.
	if err := a.l.Leave(func() { left++ }); err != nil || left != 2 {
		t.Fatalf("second Leave: %v, called back %d times, want 2", err, left)
	}
	if err := a.l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.l.Leave(func() { left++ }); err == nil || left != 2 {
		t.Fatalf("Leave after Close: %v, called back %d times", err, left)
	}

	// The SA silent: the client's retries run out, and then the call.
	if err := e.f.SetSMUp(false); err != nil {
		t.Fatal(err)
	}
	gaveUp := false
	if err := b.l.Leave(func() { gaveUp = true }); err != nil {
		t.Fatal(err)
	}
	e.advance(fastSA.Timeout / 2)
	if gaveUp {
		t.Fatal("called back while the SA client was still retrying")
	}
	e.advance(10 * fastSA.MaxTimeout)
	if !gaveUp {
		t.Fatal("not called back after the SA client's retries ran out")
	}
	// Closing with a leave outstanding calls back too (the SA client
	// fails what it still waits for).
	closedEarly := false
	if err := c.l.Leave(func() { closedEarly = true }); err != nil {
		t.Fatal(err)
	}
	if err := c.l.Close(); err != nil {
		t.Fatal(err)
	}
	if !closedEarly {
		t.Fatal("Close with a leave outstanding did not call back")
	}
}

// TestLeaveWithJoinInFlight: a link taken down while the join of a group
// is still on its way to the SA leaves that group too, so the subnet
// manager keeps no member for it (the SA makes the port a member on the
// Join, then takes it out on the Delete that follows).
func TestLeaveWithJoinInFlight(t *testing.T) {
	e, a, b, _ := newTrio(t)
	grp := netip.MustParseAddr("224.1.2.3")
	if err := a.l.JoinMulticast(grp); err != nil {
		t.Fatal(err)
	}
	left := false
	if err := a.l.Leave(func() { left = true }); err != nil {
		t.Fatal(err)
	}
	var self Addr
	if err := self.Decode(a.addr()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if !left {
		t.Fatal("Leave did not call back")
	}
	for _, g := range e.f.Groups() {
		for _, m := range g.Members {
			if m.PortGID == self.GID {
				t.Errorf("the SM still has the port in %v (join state %v)", g.MGID, m.JoinState)
			}
		}
	}
	if len(b.received(nil)) != 0 {
		t.Errorf("b received %q", b.received(nil))
	}
}

// TestManyHosts runs 300 links on a tree: all join, each exchanges a
// datagram with its neighbour, then all send to host0, which answers all
// of them. host0 sees more peers than there are keys, so its cache
// evicts, and every answer must still reach the host it was meant for.
func TestManyHosts(t *testing.T) {
	const n = 300
	e := newTreeEnv(t, sim.Config{}, sim.TreeConfig{Leaves: 10, HostsPerLeaf: n / 10, Spines: 2})
	cfg := Config{SendDepth: 32, RecvDepth: 32, TxQueueLen: 32, Buffers: 80}
	ns := make([]*node, n)
	index := map[string]int{}
	for i, h := range e.hosts {
		ns[i] = e.open(h, cfg)
		index[string(ns[i].addr())] = i
	}
	e.settle()
	for i, nd := range ns {
		if !nd.up() {
			t.Fatalf("host %d not up", i)
		}
	}
	msg := func(from, to int, kind string) []byte { return fmt.Appendf(nil, "%s %d %d", kind, from, to) }
	// check verifies that every frame a node got was meant for it and
	// came from the host it names, and counts them by kind.
	check := func() map[string]int {
		t.Helper()
		count := map[string]int{}
		for i, nd := range ns {
			for _, f := range nd.rx {
				var kind string
				var from, to int
				if _, err := fmt.Sscanf(string(f.data), "%s %d %d", &kind, &from, &to); err != nil {
					t.Fatalf("host %d: frame %q", i, f.data)
				}
				if to != i || index[string(f.src)] != from {
					t.Fatalf("host %d got %q from host %d", i, f.data, index[string(f.src)])
				}
				count[kind]++
			}
		}
		return count
	}
	for i, nd := range ns {
		nd.mustSend(ns[(i+1)%n].addr(), msg(i, (i+1)%n, "ping"))
	}
	e.settle()
	for i, nd := range ns {
		for _, f := range nd.rx {
			nd.mustSend(f.src, msg(i, index[string(f.src)], "pong"))
		}
	}
	e.settle()
	if c := check(); c["ping"] != n || c["pong"] != n {
		t.Fatalf("pings %d, pongs %d", c["ping"], c["pong"])
	}
	for i := range ns {
		ns[i].rx = nil
	}
	// host0 keeps 32 receive buffers posted: requests come in waves, as
	// a UD receiver without buffers loses datagrams.
	for i, nd := range ns[1:] {
		nd.mustSend(ns[0].addr(), msg(i+1, 0, "req"))
		if i%25 == 24 {
			e.settle()
		}
	}
	e.settle()
	reqs := slices.Clone(ns[0].rx)
	if len(reqs) != n-1 {
		t.Fatalf("host0 got %d requests", len(reqs))
	}
	// Answer in waves, so that peers waiting for a path never hold every
	// key at once.
	for len(reqs) > 0 {
		w := min(len(reqs), 25)
		for _, f := range reqs[:w] {
			fields := strings.Fields(string(f.data))
			from, _ := strconv.Atoi(fields[1])
			ns[0].mustSend(f.src, msg(0, from, "ans"))
		}
		reqs = reqs[w:]
		e.settle()
	}
	if c := check(); c["req"] != n-1 || c["ans"] != n-1 {
		t.Fatalf("requests %d, answers %d", c["req"], c["ans"])
	}
	st := ns[0].l.Cache().Stats()
	if st.Evicted == 0 || ns[0].l.Cache().Len() != MaxPeers {
		t.Fatalf("host0 cache %+v: expected evictions", st)
	}
	if d := ns[0].stat(netdev.TxNoPeer) + ns[0].stat(TxStalePeer) + ns[0].stat(netdev.TxNoPath); d != 0 {
		t.Fatalf("host0 dropped %d", d)
	}
}

// TestBroadcastSendersDoNotChurn settles a suspicion of the hardening
// issue: on a subnet of more hosts than the peer cache has keys, every
// host that broadcasts is entered in the cache of every receiver, and
// used to push out the peers the receiver talks to, whose paths then had
// to be asked for again. The senders of multicast now enter at the cold
// end of the LRU order and take each other's slots.
func TestBroadcastSendersDoNotChurn(t *testing.T) {
	const n = 300
	e := newTreeEnv(t, sim.Config{}, sim.TreeConfig{Leaves: 10, HostsPerLeaf: n / 10, Spines: 2})
	cfg := Config{SendDepth: 32, RecvDepth: 64, TxQueueLen: 32, Buffers: 96}
	ns := make([]*node, n)
	for i, h := range e.hosts {
		ns[i] = e.open(h, cfg)
	}
	e.settle()
	host0, friend := ns[0], ns[1]
	host0.mustSend(friend.addr(), []byte("hello"))
	e.settle()
	queries := host0.stat(PathQueries)
	if queries == 0 || len(friend.rx) != 1 {
		t.Fatalf("first exchange: %d path queries, friend got %d frames", queries, len(friend.rx))
	}
	// Every other host broadcasts, in waves a receive queue can hold.
	for i, nd := range ns[2:] {
		nd.mustSend(nd.l.Broadcast(), []byte("who has"))
		if i%32 == 31 {
			e.settle()
		}
	}
	e.settle()
	if got := len(host0.rx); got < n-2-32 {
		t.Fatalf("host0 heard %d of %d broadcasts", got, n-2)
	}
	if st := host0.l.Cache().Stats(); st.Evicted == 0 {
		t.Fatalf("cache %+v: %d senders should have overflowed %d keys", st, n-2, MaxPeers)
	}
	friend.rx = nil
	host0.mustSend(friend.addr(), []byte("still there"))
	e.settle()
	if len(friend.rx) != 1 {
		t.Fatalf("friend got %d frames after the broadcasts", len(friend.rx))
	}
	if q := host0.stat(PathQueries); q != queries {
		t.Errorf("the friend's path was asked for again (%d queries, was %d): the broadcasts evicted it", q, queries)
	}
}

// TestSendBurstReaped sends a burst larger than what the fabric puts on
// the wire in one pass, so that sends are still in flight when the
// driver looks right after the post: the send CQ, armed on demand, brings
// every completion back; all slots are free again and nothing is queued.
func TestSendBurstReaped(t *testing.T) {
	e, _, a, b := newPair(t)
	a.mustSend(b.addr(), []byte("warm"))
	e.settle()
	const burst = 40
	var pkts []netdev.Packet
	for i := range burst {
		buf, _ := a.nd.AllocBuffer()
		_ = buf.Append([]byte{byte(i)})
		pkts = append(pkts, netdev.Packet{Buf: buf, Dst: b.addr(), Proto: EtherTypeIPv4})
	}
	if n, err := a.nd.TransmitBatch(pkts); n != burst || err != nil {
		t.Fatal(n, err)
	}
	d := a.l.d
	if d.finished >= d.posted {
		t.Fatalf("every send of the burst completed inside the post (%d of %d): the test needs some in flight", d.finished, d.posted)
	}
	e.settle()
	if got := len(b.received(a.addr())); got != burst+1 {
		t.Errorf("b received %d frames, want %d", got, burst+1)
	}
	if a.stat(netdev.TxOK) != burst+1 || a.nd.TxQueued() != 0 {
		t.Errorf("tx_ok %d (want %d), %d still queued", a.stat(netdev.TxOK), burst+1, a.nd.TxQueued())
	}
	if d.finished != d.posted || len(d.txFree) != len(d.tx) {
		t.Errorf("%d of %d sends finished, %d of %d slots free", d.finished, d.posted, len(d.txFree), len(d.tx))
	}
}
