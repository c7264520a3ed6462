package ipoib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/looptest"
	"github.com/ipoibd/ipoibd/netdev"
)

// testAddr returns a distinct unicast IPoIB address for every i: QPN
// 0x48 + i%0x1000, GID fe80::2:c903:<i>.
func testAddr(i int) []byte {
	a := make([]byte, AddrLen)
	binary.BigEndian.PutUint32(a[0:], uint32(0x48+i%0x1000))
	a[4], a[5] = 0xfe, 0x80
	binary.BigEndian.PutUint32(a[12:], 0x0002c903)
	binary.BigEndian.PutUint32(a[16:], uint32(i))
	return a
}

// newLoop makes an aio loop that the calling goroutine is home to for the
// rest of the test, so the cache's ownership checks pass.
func newLoop(t testing.TB) *aio.Context {
	t.Helper()
	return looptest.Home(t, aio.WithName("ipoib-"+t.Name()))
}

// mustEnter enters addr and fails the test on error.
func mustEnter(t testing.TB, c *PeerCache, addr []byte) *Peer {
	t.Helper()
	p, err := c.Enter(addr)
	if err != nil {
		t.Fatalf("Enter(%x): %v", addr, err)
	}
	return p
}

// checkInvariants verifies the cache's internal structure: every live
// slot is found through the index at its own key, the index holds exactly
// the live slots, and the LRU list holds exactly the live slots that are
// not held, linked consistently both ways.
func checkInvariants(t testing.TB, c *PeerCache) {
	t.Helper()
	live, held := 0, 0
	for k := 1; k <= MaxPeers; k++ {
		p := &c.slots[k]
		if !c.isLive(Key(k)) {
			continue
		}
		live++
		if p.held() {
			held++
		}
		if got := c.Find(p.HWAddr()); got != p {
			t.Fatalf("slot %d (%x) found as %v through the index", k, p.raw, got)
		}
	}
	cells := 0
	for _, e := range c.index {
		if e != 0 {
			cells++
		}
	}
	if cells != live || c.Len() != live || live+c.nfree != MaxPeers {
		t.Fatalf("index %d cells, %d live slots, Len %d, %d free", cells, live, c.Len(), c.nfree)
	}
	n := 0
	for k := c.lruNext[0]; k != 0; k = c.lruNext[k] {
		if n++; n > MaxPeers {
			t.Fatal("LRU list loops")
		}
		p := &c.slots[k]
		if !c.isLive(k) || p.held() || c.state[k]&slotListed == 0 || c.lruPrev[c.lruNext[k]] != k {
			t.Fatalf("LRU entry %d: state %b held %v, next's prev %d", k, c.state[k], p.held(), c.lruPrev[c.lruNext[k]])
		}
		if c.addrs[k] != p.raw {
			t.Fatalf("slot %d: compact address %x, slot %x", k, c.addrs[k], p.raw)
		}
	}
	if n != live-held {
		t.Fatalf("LRU list has %d entries, want %d live and not held", n, live-held)
	}
}

func TestCacheFillAndLookupBothWays(t *testing.T) {
	c := NewPeerCache(newLoop(t))
	refs := make([]Ref, 0, MaxPeers)
	for i := range MaxPeers {
		p := mustEnter(t, c, testAddr(i))
		if want := Key(i + 1); p.Key() != want {
			t.Fatalf("address %d got key %d, want %d", i, p.Key(), want)
		}
		refs = append(refs, p.Ref())
	}
	checkInvariants(t, c)
	for i, r := range refs {
		addr := testAddr(i)
		if p := c.Find(addr); p == nil || p.Ref() != r {
			t.Fatalf("Find(address %d) = %v, want key %d", i, p, r.Key)
		}
		p := c.Lookup(r.Key)
		if p == nil || !bytes.Equal(p.HWAddr(), addr) {
			t.Fatalf("Lookup(%d) = %v, want address %d", r.Key, p, i)
		}
		var want Addr
		_ = want.Decode(addr)
		if p.Addr() != want {
			t.Fatalf("key %d: Addr %v, want %v", r.Key, p.Addr(), want)
		}
		if q, err := c.Resolve(r); err != nil || q != p {
			t.Fatalf("Resolve(%v) = %v, %v", r, q, err)
		}
		// Entering again returns the same peer.
		if q := mustEnter(t, c, addr); q != p {
			t.Fatalf("re-entering address %d gave key %d", i, q.Key())
		}
	}
	if c.Len() != MaxPeers {
		t.Fatalf("Len = %d, want %d", c.Len(), MaxPeers)
	}

	// All 255 were entered since the last claim: their keys may be in
	// headers nobody has read, so a new address is refused.
	_, err := c.Enter(testAddr(MaxPeers))
	if !errors.Is(err, ErrCacheFull) || !errors.Is(err, netdev.ErrNoPeer) {
		t.Fatalf("256th address with the fence up: %v, want ErrCacheFull and netdev.ErrNoPeer", err)
	}
	if s := c.Stats(); s.Full != 1 || s.Evicted != 0 || s.Entered != MaxPeers {
		t.Fatalf("stats %+v", s)
	}

	// Once a key has been claimed, the least recently used peer (address
	// 0, re-entered first in the loop above) makes room.
	c.Settle()
	p := mustEnter(t, c, testAddr(MaxPeers))
	if p.Key() != refs[0].Key {
		t.Fatalf("new address took key %d, want %d", p.Key(), refs[0].Key)
	}
	if c.Find(testAddr(0)) != nil {
		t.Fatal("evicted address still found")
	}
	if _, err := c.Resolve(refs[0]); !errors.Is(err, ErrStalePeer) {
		t.Fatalf("Resolve of the evicted peer's ref: %v, want ErrStalePeer", err)
	}
	if s := c.Stats(); s.Evicted != 1 || s.Stale != 1 || c.Len() != MaxPeers {
		t.Fatalf("stats %+v", s)
	}
	checkInvariants(t, c)
}

func TestLRUEvictionOrder(t *testing.T) {
	tests := []struct {
		name  string
		touch []int // addresses re-entered after the fill, in order
		pin   []int // addresses pinned after the fill
		// want is the order in which the addresses are evicted by 255 new
		// ones: untouched ones oldest first, then the touched ones in the
		// order they were touched; pinned ones never.
		want func() []int
	}{
		{
			name:  "insertion order",
			touch: nil,
			want:  func() []int { return seq(0, MaxPeers) },
		},
		{
			name:  "touched go last",
			touch: []int{0, 5, 3},
			want: func() []int {
				out := []int{1, 2, 4}
				out = append(out, seq(6, MaxPeers)...)
				return append(out, 0, 5, 3)
			},
		},
		{
			name:  "touch twice moves to the end again",
			touch: []int{7, 8, 7},
			want: func() []int {
				out := append(seq(0, 7), seq(9, MaxPeers)...)
				return append(out, 8, 7)
			},
		},
		{
			name: "pinned never evicted",
			pin:  []int{0, 254},
			want: func() []int { return seq(1, 254) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewPeerCache(nil)
			keyOf := make(map[Key]int)
			for i := range MaxPeers {
				keyOf[mustEnter(t, c, testAddr(i)).Key()] = i
			}
			for _, i := range tc.touch {
				mustEnter(t, c, testAddr(i))
			}
			for _, i := range tc.pin {
				if err := c.Pin(c.Find(testAddr(i)).Ref()); err != nil {
					t.Fatal(err)
				}
			}
			var evicted []int
			c.SetEvictHook(func(p *Peer) {
				i, ok := keyOf[p.Key()]
				if !ok || !bytes.Equal(p.HWAddr(), testAddr(i)) {
					t.Fatalf("evicting key %d holding %x", p.Key(), p.HWAddr())
				}
				evicted = append(evicted, i)
			})
			want := tc.want()
			for j := range want {
				c.Settle() // as a driver would between packets
				p := mustEnter(t, c, testAddr(1000+j))
				keyOf[p.Key()] = 1000 + j
			}
			if !slices.Equal(evicted, want) {
				t.Fatalf("eviction order\n got %v\nwant %v", evicted, want)
			}
			for _, i := range tc.pin {
				if c.Find(testAddr(i)) == nil {
					t.Errorf("pinned address %d was evicted", i)
				}
			}
			// With every unpinned slot taken by the new addresses, one more
			// evicts the oldest of them.
			if len(tc.pin) > 0 {
				c.Settle()
				mustEnter(t, c, testAddr(5000))
				if got := evicted[len(evicted)-1]; got != 1000 {
					t.Errorf("next eviction took address %d, want 1000", got)
				}
			}
			checkInvariants(t, c)
		})
	}
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestResolveAndClaimErrors(t *testing.T) {
	c := NewPeerCache(nil)
	p := mustEnter(t, c, testAddr(1))
	live := p.Ref()
	q := mustEnter(t, c, testAddr(2))
	removed := q.Ref()
	if err := c.Remove(removed); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ref  Ref
		want error
	}{
		{"live", live, nil},
		{"zero ref", Ref{}, netdev.ErrUnknownKey},
		{"never used slot", Ref{Key: 200}, netdev.ErrUnknownKey},
		{"removed peer", removed, ErrStalePeer},
		{"older generation", Ref{Key: live.Key, Gen: live.Gen - 1}, ErrStalePeer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Resolve(tc.ref)
			if tc.want == nil {
				if err != nil || got != p {
					t.Fatalf("Resolve = %v, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Resolve = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	// The removed slot is reused with a new generation.
	r := mustEnter(t, c, testAddr(3))
	if r.Key() != removed.Key || r.Ref().Gen == removed.Gen {
		t.Fatalf("reused slot: %v, removed %v", r.Ref(), removed)
	}
	if _, err := c.Resolve(removed); !errors.Is(err, ErrStalePeer) {
		t.Fatalf("removed ref after reuse: %v", err)
	}
	for _, k := range []Key{NoKey, 99} {
		if _, err := c.Claim(k); !errors.Is(err, netdev.ErrUnknownKey) {
			t.Errorf("Claim(%d): %v", k, err)
		}
	}
	if s := c.Stats(); s.Stale != 3 || s.UnknownKey != 4 {
		t.Errorf("stats %+v, want 3 stale and 4 unknown", s)
	}
	if _, err := c.Enter(make([]byte, 6)); !errors.Is(err, netdev.ErrBadAddr) {
		t.Errorf("Enter of a 6-byte address: %v", err)
	}
	if _, err := c.EnterAddr(Addr{QPN: 1 << 24}); !errors.Is(err, netdev.ErrBadAddr) {
		t.Errorf("EnterAddr with a 25-bit QPN: %v", err)
	}
	if c.Find(make([]byte, 3)) != nil {
		t.Error("Find of a short address found something")
	}
}

func TestParkPinRemove(t *testing.T) {
	c := NewPeerCache(newLoop(t))
	p := mustEnter(t, c, testAddr(0))
	r := p.Ref()
	bufs := make([]*netdev.Buffer, MaxParked+1)
	for i := range bufs {
		bufs[i] = netdev.NewBuffer(make([]byte, 8), nil)
	}
	for i := range MaxParked {
		if err := c.Park(r, bufs[i]); err != nil {
			t.Fatalf("Park %d: %v", i, err)
		}
	}
	err := c.Park(r, bufs[MaxParked])
	if !errors.Is(err, ErrParkFull) || !errors.Is(err, netdev.ErrNoPath) {
		t.Fatalf("Park beyond %d: %v", MaxParked, err)
	}
	if p.Parked() != MaxParked {
		t.Fatalf("Parked = %d", p.Parked())
	}
	if err := c.Remove(r); !errors.Is(err, ErrPeerHeld) {
		t.Fatalf("Remove with packets parked: %v", err)
	}
	checkInvariants(t, c)

	// A parked peer survives a flood of new ones.
	for i := 1; i < 2000; i++ {
		c.Settle()
		mustEnter(t, c, testAddr(i))
	}
	if got, err := c.Resolve(r); err != nil || got != p {
		t.Fatalf("parked peer after the flood: %v, %v", got, err)
	}
	out, err := c.Unpark(r, make([]*netdev.Buffer, 0, MaxParked))
	if err != nil || len(out) != MaxParked || out[0] != bufs[0] || out[1] != bufs[1] || out[2] != bufs[2] {
		t.Fatalf("Unpark = %v, %v", out, err)
	}
	if p.Parked() != 0 {
		t.Fatalf("Parked after Unpark = %d", p.Parked())
	}
	checkInvariants(t, c)

	// Pins nest and keep the peer too.
	if err := c.Pin(r); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(r); err != nil {
		t.Fatal(err)
	}
	if err := c.Unpin(r); err != nil || !p.Pinned() {
		t.Fatalf("after one Unpin of two: %v, pinned %v", err, p.Pinned())
	}
	for i := 2000; i < 2600; i++ {
		c.Settle()
		mustEnter(t, c, testAddr(i))
	}
	if _, err := c.Resolve(r); err != nil {
		t.Fatalf("pinned peer evicted: %v", err)
	}
	if err := c.Unpin(r); err != nil || p.Pinned() {
		t.Fatal(err)
	}
	if err := c.Unpin(r); !errors.Is(err, ErrPeerHeld) {
		t.Fatalf("Unpin of an unpinned peer: %v", err)
	}
	// Unpinned, it is the most recently used peer: 254 new ones come
	// before it goes.
	for i := range MaxPeers - 1 {
		c.Settle()
		mustEnter(t, c, testAddr(3000+i))
	}
	if _, err := c.Resolve(r); err != nil {
		t.Fatalf("unpinned peer evicted too soon: %v", err)
	}
	c.Settle()
	mustEnter(t, c, testAddr(4000))
	if _, err := c.Resolve(r); !errors.Is(err, ErrStalePeer) {
		t.Fatalf("unpinned peer never evicted: %v", err)
	}
	for _, f := range []func() error{
		func() error { return c.Pin(r) },
		func() error { return c.Park(r, bufs[0]) },
		func() error { _, err := c.Unpark(r, nil); return err },
		func() error { return c.SetPath(r, Path{}) },
		func() error { _, err := c.ClearPath(r); return err },
		func() error { return c.Remove(r) },
	} {
		if err := f(); !errors.Is(err, ErrStalePeer) {
			t.Errorf("operation on a stale ref: %v", err)
		}
	}
	checkInvariants(t, c)
}

func TestPathAndEach(t *testing.T) {
	c := NewPeerCache(newLoop(t))
	rec := &ib.PathRecord{DLID: 0x12, SL: 3, Rate: 7, MTU: ib.MTU2048}
	var refs []Ref
	for i := range 4 {
		refs = append(refs, mustEnter(t, c, testAddr(i)).Ref())
	}
	if err := c.SetPath(refs[1], PathFromRecord(rec)); err != nil {
		t.Fatal(err)
	}
	p := c.Lookup(refs[1].Key)
	if path, ok := p.Path(); !ok || path != (Path{LID: 0x12, SL: 3, Rate: 7, MTU: ib.MTU2048}) {
		t.Fatalf("Path = %+v, %v", path, ok)
	}
	if err := c.Pin(refs[3]); err != nil {
		t.Fatal(err)
	}
	var order []Key
	c.Each(func(p *Peer) bool {
		order = append(order, p.Key())
		if _, ok := p.Path(); ok {
			if _, err := c.ClearPath(p.Ref()); err != nil {
				t.Error(err)
			}
		}
		return true
	})
	// Held first, then most to least recently used.
	if want := []Key{4, 3, 2, 1}; len(order) != 4 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] || order[3] != want[3] {
		t.Fatalf("Each order %v, want %v", order, want)
	}
	if _, ok := p.Path(); ok {
		t.Fatal("path survived ClearPath")
	}
	n := 0
	c.Each(func(*Peer) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("Each did not stop: %d calls", n)
	}
}

// TestIndexChurn drives the address index through random entries and
// removals and checks it against a model, so that the backward-shift
// deletion never loses or duplicates a key.
func TestIndexChurn(t *testing.T) {
	c := NewPeerCache(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	model := make(map[int]Ref) // address id -> ref while live
	for step := range 20000 {
		id := rng.IntN(600)
		c.Settle()
		if r, ok := model[id]; ok && rng.IntN(3) == 0 {
			if err := c.Remove(r); err != nil {
				t.Fatalf("step %d: Remove(%d): %v", step, id, err)
			}
			delete(model, id)
			continue
		}
		p := mustEnter(t, c, testAddr(id))
		for oid, r := range model {
			if r.Key == p.Key() && oid != id {
				delete(model, oid) // evicted
			}
		}
		model[id] = p.Ref()
		if step%500 == 0 {
			checkInvariants(t, c)
		}
	}
	checkInvariants(t, c)
	for id, r := range model {
		if p := c.Find(testAddr(id)); p == nil || p.Ref() != r {
			t.Fatalf("address %d: found %v, model %v", id, p, r)
		}
	}
	if len(model) != c.Len() {
		t.Fatalf("model has %d peers, cache %d", len(model), c.Len())
	}
}

// queued is a packet a transmit path holds for later: the reference it
// took when the packet was queued and, for checking, the address it was
// meant for.
type queued struct {
	ref      Ref
	intended []byte
	evicts   int // evictions of the intended address when it was queued
}

// TestChurnNeverMisdelivers churns 10,000 distinct peers through the
// cache while packets wait in a queue for earlier ones, the way a driver
// holds packets it could not send yet, then sends the queue. No packet
// may reach a peer other than the one it was queued for; those whose peer
// was evicted in the meantime must be dropped, and counted, and only
// those.
func TestChurnNeverMisdelivers(t *testing.T) {
	c := NewPeerCache(newLoop(t))
	rng := rand.New(rand.NewPCG(7, 11))
	evictions := make(map[string]int)
	c.SetEvictHook(func(p *Peer) { evictions[string(p.HWAddr())]++ })

	const (
		peers   = 10000
		backlog = 600 // more than the cache holds, so keys are reused under it
	)
	var (
		queue                 []queued
		sent, dropped, misses int
		total                 int
	)
	transmit := func(q queued) {
		p, err := c.Resolve(q.ref)
		wasEvicted := evictions[string(q.intended)] != q.evicts
		switch {
		case err == nil:
			if !bytes.Equal(p.HWAddr(), q.intended) {
				t.Fatalf("packet for %x would go to %x (key %d)", q.intended, p.HWAddr(), q.ref.Key)
			}
			if wasEvicted {
				t.Fatalf("packet for %x: peer was evicted but the ref still resolves", q.intended)
			}
			sent++
		case errors.Is(err, ErrStalePeer):
			if !wasEvicted {
				t.Fatalf("packet for %x dropped as stale, but its peer was never evicted", q.intended)
			}
			dropped++
		default:
			t.Fatalf("Resolve(%v): %v", q.ref, err)
		}
	}
	for i := range peers {
		addr := testAddr(i)
		if i > 0 && rng.IntN(4) == 0 {
			// Now and then talk to an earlier peer again: it may still
			// have its key, or get a new one.
			addr = testAddr(rng.IntN(i))
		}
		// Link.Push enters the address; the driver claims the key from the
		// header and keeps a Ref.
		p, err := c.Enter(addr)
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		if _, err := c.Claim(p.Key()); err != nil {
			t.Fatal(err)
		}
		queue = append(queue, queued{ref: p.Ref(), intended: addr, evicts: evictions[string(addr)]})
		total++
		// Send from the queue at random positions, as completions and
		// path answers arrive out of order, keeping a backlog.
		for len(queue) > backlog {
			j := rng.IntN(len(queue))
			transmit(queue[j])
			queue[j] = queue[len(queue)-1]
			queue = queue[:len(queue)-1]
		}
		if i%1000 == 0 {
			checkInvariants(t, c)
		}
	}
	for _, q := range queue {
		transmit(q)
	}
	if sent+dropped != total || misses != 0 {
		t.Fatalf("%d sent + %d dropped != %d queued", sent, dropped, total)
	}
	if dropped == 0 || sent == 0 {
		t.Fatalf("churn did not exercise both outcomes: %d sent, %d dropped", sent, dropped)
	}
	if s := c.Stats(); s.Stale != uint64(dropped) {
		t.Fatalf("cache counted %d stale references, test dropped %d", s.Stale, dropped)
	}
	t.Logf("%d packets: %d sent to their own peer, %d dropped after their peer's key was reused; %d evictions", total, sent, dropped, c.Stats().Evicted)
}
