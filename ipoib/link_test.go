package ipoib

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/netdev"
)

// Addresses from the tcpdump IPoIB capture: the pinging host's interface
// (flags 0x80 for connected mode, QPN 0x000550) and the peer it talks to.
const (
	capturedDst = "80000550 fe800000 00000000 0010e000 664ab451"
	capturedSrc = "80000048 fe800000 00000000 0002c903 004ad211"
)

func newLink(t testing.TB, loop *aio.Context, pkey ib.PKey) *Link {
	t.Helper()
	l, err := NewProtocol(NewPeerCache(loop), pkey)
	if err != nil {
		t.Fatalf("NewProtocol: %v", err)
	}
	return l
}

func TestLinkPushPullGolden(t *testing.T) {
	l := newLink(t, newLoop(t), ib.PKeyDefault)
	dst, src := hextest.Bytes(t, capturedDst), hextest.Bytes(t, capturedSrc)
	bcast := l.Broadcast()
	tests := []struct {
		name     string
		dst, src []byte
		proto    uint16
		payload  string
		inHost   string // after Push: ethertype, destination key, source key
		wire     string // after TakeTx: reserved bytes zero (RFC 4391 section 6)
	}{
		// The destination is entered first and gets key 1, the source key 2.
		{"ICMP echo from the capture", dst, src, EtherTypeIPv4, "45000054aefe", "0800 0102 45000054aefe", "0800 0000 45000054aefe"},
		{"reply the other way", src, dst, EtherTypeIPv4, "4500", "0800 0201 4500", "0800 0000 4500"},
		{"ARP to the broadcast group", bcast, src, EtherTypeARP, "00200800", "0806 0302 00200800", "0806 0000 00200800"},
	}
	for _, tc := range tests {
		payload := hextest.Bytes(t, tc.payload)
		b := bufWith(HeaderLen, payload)
		if err := l.Push(b, tc.dst, tc.src, tc.proto); err != nil {
			t.Fatalf("%s: Push: %v", tc.name, err)
		}
		if want := hextest.Bytes(t, tc.inHost); !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("%s: in-host frame %x, want %x", tc.name, b.Bytes(), want)
		}
		// On the way in, the same keyed frame pulls back to the addresses.
		rx := bufWith(0, b.Bytes())
		gotDst, gotSrc, proto, err := l.Pull(rx)
		if err != nil || !bytes.Equal(gotDst, tc.dst) || !bytes.Equal(gotSrc, tc.src) || proto != tc.proto || !bytes.Equal(rx.Bytes(), payload) {
			t.Fatalf("%s: Pull = %x, %x, %#x, %v leaving %x", tc.name, gotDst, gotSrc, proto, err, rx.Bytes())
		}
		// The driver's side: TakeTx names the destination and clears the
		// keys.
		p, err := l.Cache().TakeTx(b)
		if err != nil || !bytes.Equal(p.HWAddr(), tc.dst) {
			t.Fatalf("%s: TakeTx = %v, %v", tc.name, p, err)
		}
		if want := hextest.Bytes(t, tc.wire); !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("%s: wire frame %x, want %x", tc.name, b.Bytes(), want)
		}
		// The wire frame keyed by the receive path pulls to the same
		// addresses again.
		var d, s Addr
		_ = d.Decode(tc.dst)
		_ = s.Decode(tc.src)
		if err := l.SetRxPeers(b, d, s); err != nil {
			t.Fatal(err)
		}
		if want := hextest.Bytes(t, tc.inHost); !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("%s: received frame keyed %x, want %x", tc.name, b.Bytes(), want)
		}
	}
}

func TestLinkErrors(t *testing.T) {
	l := newLink(t, newLoop(t), ib.PKeyDefault)
	self := testAddr(0)
	if err := l.Push(bufWith(HeaderLen, nil), self[:6], self, EtherTypeIPv4); !errors.Is(err, netdev.ErrBadAddr) {
		t.Errorf("Push to a 6-byte address: %v", err)
	}
	if err := l.Push(bufWith(HeaderLen-1, nil), testAddr(1), self, EtherTypeIPv4); !errors.Is(err, netdev.ErrNoHeadroom) {
		t.Errorf("Push without headroom: %v", err)
	}
	if l.Cache().Len() != 0 {
		t.Errorf("refused pushes left %d peers in the cache", l.Cache().Len())
	}
	tests := []struct {
		name  string
		frame string
		want  error
	}{
		{"short", "0800 01", netdev.ErrShort},
		{"bad type", "0042 0102", netdev.ErrBadHeader},
		// Straight off the wire, keys never set.
		{"no keys", "0800 0000 4500", netdev.ErrUnknownKey},
		{"unknown source key", "0800 0109 4500", netdev.ErrUnknownKey},
		{"unknown destination key", "0800 0901 4500", netdev.ErrUnknownKey},
	}
	mustEnter(t, l.Cache(), self) // key 1
	before := l.Cache().Stats().UnknownKey
	for _, tc := range tests {
		frame := hextest.Bytes(t, tc.frame)
		b := bufWith(0, frame)
		if _, _, _, err := l.Pull(b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Pull: %v, want %v", tc.name, err, tc.want)
		}
		if !bytes.Equal(b.Bytes(), frame) {
			t.Errorf("%s: refused frame changed to %x", tc.name, b.Bytes())
		}
	}
	// The frame without keys counts only its destination: a source of
	// NoKey stands for a sender the driver could not name.
	if got := l.Cache().Stats().UnknownKey - before; got != 3 {
		t.Errorf("unknown keys counted %d, want 3", got)
	}
	if dst, src, _, err := l.Pull(bufWith(0, hextest.Bytes(t, "0800 0100 4500"))); err != nil || !bytes.Equal(dst, self) || src != nil {
		t.Errorf("Pull with no source key = %x, %x, %v; want our address and no source", dst, src, err)
	}
	if _, err := l.Cache().TakeTx(bufWith(0, hextest.Bytes(t, "0800 0700"))); !errors.Is(err, netdev.ErrNoPeer) {
		t.Errorf("TakeTx with an unknown key: %v", err)
	}
	if _, err := l.Cache().TakeTx(bufWith(0, nil)); !errors.Is(err, netdev.ErrNoPeer) {
		t.Errorf("TakeTx on an empty frame: %v", err)
	}
	if err := l.SetRxPeers(bufWith(0, []byte{8}), Addr{}, Addr{}); !errors.Is(err, netdev.ErrShort) {
		t.Errorf("SetRxPeers on a 1-byte frame: %v", err)
	}
	if _, err := NewProtocol(nil, ib.PKeyDefault); !errors.Is(err, netdev.ErrInvalidConfig) {
		t.Errorf("NewProtocol without a cache: %v", err)
	}
	if _, err := NewProtocol(NewPeerCache(nil), 0x8000); !errors.Is(err, netdev.ErrInvalidConfig) {
		t.Errorf("NewProtocol for partition 0: %v", err)
	}
}

func TestLinkDescription(t *testing.T) {
	l := newLink(t, nil, 0x7fff)
	if l.Name() != "ipoib" || l.HeaderLen() != 4 || l.AddrLen() != 20 {
		t.Fatalf("Name %q, HeaderLen %d, AddrLen %d", l.Name(), l.HeaderLen(), l.AddrLen())
	}
	if netdev.FrameLen(l, 2044) != 2048 {
		t.Errorf("frame for IP MTU 2044: %d bytes, want 2048", netdev.FrameLen(l, 2044))
	}
	tests := []struct {
		addr string
		want string
	}{
		// The form `ip link` prints for ib0 on the capture's host.
		{capturedDst, "80:00:05:50:fe:80:00:00:00:00:00:00:00:10:e0:00:66:4a:b4:51"},
		{"00ffffff ff12401b ffff0000 00000000 ffffffff", "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff"},
		{"0102", "bad-ipoib-addr(0102)"},
		{"", "bad-ipoib-addr()"},
	}
	for _, tc := range tests {
		if got := l.AddrString(hextest.Bytes(t, tc.addr)); got != tc.want {
			t.Errorf("AddrString(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestBroadcastAndMulticast(t *testing.T) {
	tests := []struct {
		name  string
		pkey  ib.PKey
		group string // "" for the broadcast address
		// want is written out from RFC 4391 section 4: flags 0, QPN
		// 0xFFFFFF, then ff, 1 (transient) | 2 (link-local), the signature
		// (401b for IPv4, 601b for IPv6), the P_Key with the full-member
		// bit, and the group bits.
		want    string
		wantErr error
	}{
		{"broadcast, default partition", 0xffff, "", "00ffffff ff12401b ffff0000 00000000 ffffffff", nil},
		{"broadcast, limited-member key gets the full bit", 0x7fff, "", "00ffffff ff12401b ffff0000 00000000 ffffffff", nil},
		{"broadcast, partition 0x0123", 0x0123, "", "00ffffff ff12401b 81230000 00000000 ffffffff", nil},
		{"all hosts", 0xffff, "224.0.0.1", "00ffffff ff12401b ffff0000 00000000 00000001", nil},
		// The low 28 bits: the top nibble of 239 (e) is dropped.
		{"SSDP", 0xffff, "239.255.255.250", "00ffffff ff12401b ffff0000 00000000 0ffffffa", nil},
		{"mDNS in partition 0x8001", 0x8001, "224.0.0.251", "00ffffff ff12401b 80010000 00000000 000000fb", nil},
		// IPv6: bytes 6-15 of the group follow the P_Key.
		{"all nodes v6", 0xffff, "ff02::1", "00ffffff ff12601b ffff0000 00000000 00000001", nil},
		{"solicited node", 0xffff, "ff02::1:ff00:1234", "00ffffff ff12601b ffff0000 00000001 ff001234", nil},
		{"unicast v4", 0xffff, "10.0.0.1", "", netdev.ErrNoMulticast},
		{"limited broadcast is not a group", 0xffff, "255.255.255.255", "", netdev.ErrNoMulticast},
		{"unicast v6", 0xffff, "fe80::1", "", netdev.ErrNoMulticast},
		{"v4-mapped group", 0xffff, "::ffff:224.0.0.1", "", netdev.ErrNoMulticast},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLink(t, nil, tc.pkey)
			if tc.group == "" {
				if got, want := l.Broadcast(), hextest.Bytes(t, tc.want); !bytes.Equal(got, want) {
					t.Fatalf("Broadcast = %x, want %x", got, want)
				}
				return
			}
			prefix := []byte{0xaa}
			got, err := l.Multicast(netip.MustParseAddr(tc.group), prefix)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !bytes.Equal(got, prefix) {
					t.Fatalf("Multicast = %x, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if want := append([]byte{0xaa}, hextest.Bytes(t, tc.want)...); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Multicast = %x, %v; want %x", got, err, want)
			}
		})
	}
	l := newLink(t, nil, 0xffff)
	if _, err := l.Multicast(netip.Addr{}, nil); !errors.Is(err, netdev.ErrNoMulticast) {
		t.Errorf("Multicast of the zero Addr: %v", err)
	}
}

func TestSetPKey(t *testing.T) {
	l := newLink(t, newLoop(t), 0xffff)
	old := l.Broadcast()
	keep := append([]byte(nil), old...)
	if err := l.SetPKey(0x0042); err != nil {
		t.Fatal(err)
	}
	if want := hextest.Bytes(t, "00ffffff ff12401b 80420000 00000000 ffffffff"); !bytes.Equal(l.Broadcast(), want) || l.PKey() != 0x8042 {
		t.Fatalf("after SetPKey: %x, P_Key %v", l.Broadcast(), l.PKey())
	}
	if !bytes.Equal(old, keep) {
		t.Fatal("SetPKey rewrote a broadcast slice already handed out")
	}
	if err := l.SetPKey(0); !errors.Is(err, netdev.ErrInvalidConfig) {
		t.Fatalf("SetPKey(0): %v", err)
	}
}

func TestIPMTU(t *testing.T) {
	tests := []struct {
		mtu  ib.MTU
		want int
	}{
		{ib.MTU256, 252},
		{ib.MTU1024, 1020},
		{ib.MTU2048, 2044},
		{ib.MTU4096, 4092},
		{0, 0},
		{6, 0},
	}
	for _, tc := range tests {
		got, err := IPMTU(tc.mtu)
		if got != tc.want || (err == nil) != (tc.want != 0) {
			t.Errorf("IPMTU(%d) = %d, %v; want %d", tc.mtu, got, err, tc.want)
		}
	}
}

// heldTx is a frame the test driver has taken but not yet sent.
type heldTx struct {
	ref Ref
	b   *netdev.Buffer
}

// testDriver is a driver double in the shape the real one will have: it
// takes each frame with TakeTx, checks the wire header, and holds it by
// the peer's Ref until the test tells it to send.
type testDriver struct {
	t      testing.TB
	link   *Link
	held   []heldTx
	sent   int
	stale  int
	keyed  int // frames whose keys were not zero on the way out
	sentTo map[string]int
}

func (d *testDriver) Open(dev *netdev.Device) error { dev.SetLinkUp(); return nil }
func (d *testDriver) Close(*netdev.Device) error    { return nil }

func (d *testDriver) Transmit(dev *netdev.Device, b *netdev.Buffer) error {
	p, err := d.link.Cache().TakeTx(b)
	if err != nil {
		return err
	}
	if h := b.Bytes(); h[DstKeyOffset] != 0 || h[SrcKeyOffset] != 0 {
		d.keyed++
	}
	d.held = append(d.held, heldTx{ref: p.Ref(), b: b})
	return nil
}

// send sends the held frame at i: resolves its Ref and checks that the
// peer is the one the payload names.
func (d *testDriver) send(dev *netdev.Device, i int) {
	h := d.held[i]
	d.held[i] = d.held[len(d.held)-1]
	d.held = d.held[:len(d.held)-1]
	p, err := d.link.Cache().Resolve(h.ref)
	if err != nil {
		d.stale++
		_ = dev.TxComplete(h.b, err)
		return
	}
	intended := h.b.Bytes()[HeaderLen : HeaderLen+AddrLen]
	if !bytes.Equal(p.HWAddr(), intended) {
		d.t.Fatalf("frame for %x would go to %x", intended, p.HWAddr())
	}
	d.sent++
	if d.sentTo != nil {
		d.sentTo[string(intended)]++
	}
	_ = dev.TxComplete(h.b, nil)
}

// collector is a Receiver that records the last frame.
type collector struct {
	n        int
	dst, src []byte
	proto    uint16
}

func (c *collector) Receive(_ *netdev.Device, b *netdev.Buffer, proto uint16, dst, src []byte) {
	c.n++
	c.proto = proto
	c.dst = append(c.dst[:0], dst...)
	c.src = append(c.src[:0], src...)
	b.Free()
}

// newDevice makes an open IPoIB netdev over the test driver.
func newDevice(t testing.TB, loop *aio.Context, queue int) (*netdev.Device, *testDriver, *collector) {
	t.Helper()
	l := newLink(t, loop, ib.PKeyDefault)
	drv := &testDriver{t: t, link: l}
	mtu, _ := IPMTU(ib.MTU2048)
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	if len(name) > 32 {
		name = name[len(name)-32:]
	}
	dev, err := netdev.New(netdev.Config{
		Name:       name,
		Loop:       loop,
		Link:       l,
		HWAddr:     testAddr(99999),
		MTU:        mtu,
		Ops:        drv,
		TxQueueLen: queue,
		Buffers:    queue + 16,
		Headroom:   ib.GRHSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if loop.InHome() {
			_ = dev.Close()
		}
		_ = dev.Unregister()
	})
	rx := &collector{}
	dev.SetReceiver(rx)
	if err := dev.Open(); err != nil {
		t.Fatal(err)
	}
	return dev, drv, rx
}

// sendTo transmits a packet whose payload is the destination address
// itself, so the driver can check where it goes.
func sendTo(t testing.TB, dev *netdev.Device, dst []byte) error {
	t.Helper()
	b, err := dev.AllocBuffer()
	if err != nil {
		t.Fatalf("AllocBuffer: %v", err)
	}
	if err := b.Append(dst); err != nil {
		t.Fatal(err)
	}
	return dev.Transmit(b, dst, EtherTypeIPv4)
}

func TestLinkOnDevice(t *testing.T) {
	loop := newLoop(t)
	dev, drv, rx := newDevice(t, loop, 8)
	l := dev.LinkProtocol().(*Link)
	peer := hextest.Bytes(t, capturedSrc)

	if err := sendTo(t, dev, peer); err != nil {
		t.Fatal(err)
	}
	if drv.keyed != 0 || len(drv.held) != 1 {
		t.Fatalf("driver saw %d keyed frames, holds %d", drv.keyed, len(drv.held))
	}
	drv.send(dev, 0)
	if s := dev.Stats(); s.Load(netdev.TxOK) != 1 {
		t.Fatalf("tx_ok = %d", s.Load(netdev.TxOK))
	}

	// A frame from the peer to us, as the wire has it.
	wire := hextest.Bytes(t, "0800 0000 4500 0054")
	rxFrame := func(keyed bool) error {
		b, err := dev.AllocBuffer()
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Reset(ib.GRHSize)
		_ = b.Append(wire)
		if keyed {
			var self, src Addr
			_ = self.Decode(dev.HWAddr())
			_ = src.Decode(peer)
			if err := l.SetRxPeers(b, self, src); err != nil {
				t.Fatal(err)
			}
		}
		return dev.Receive(b)
	}
	if err := rxFrame(true); err != nil {
		t.Fatal(err)
	}
	if rx.n != 1 || !bytes.Equal(rx.src, peer) || !bytes.Equal(rx.dst, dev.HWAddr()) || rx.proto != EtherTypeIPv4 {
		t.Fatalf("received %d: dst %x src %x proto %#x", rx.n, rx.dst, rx.src, rx.proto)
	}
	// Keys never set: counted as an unknown key, not delivered.
	if err := rxFrame(false); !errors.Is(err, netdev.ErrUnknownKey) {
		t.Fatalf("unkeyed frame: %v", err)
	}
	if got := dev.Stats().Load(netdev.RxUnknownKey); got != 1 || rx.n != 1 {
		t.Fatalf("rx_unknown_key = %d, delivered %d", got, rx.n)
	}
	if st := dev.Status(); st.HWAddr != l.AddrString(dev.HWAddr()) || st.Link != "ipoib" {
		t.Errorf("status %+v", st)
	}
}

// TestDeviceChurn is the churn test end to end: 10,000 distinct peers
// through netdev's Transmit while the driver holds up to 600 frames by
// Ref and sends them in random order. Every frame carries its intended
// address as payload; none may reach another peer, and every stale drop
// is counted as tx_dropped_stale_peer.
func TestDeviceChurn(t *testing.T) {
	loop := newLoop(t)
	const (
		peers   = 10000
		backlog = 600
	)
	dev, drv, _ := newDevice(t, loop, backlog+8)
	rng := rand.New(rand.NewPCG(3, 5))
	for i := range peers {
		dst := testAddr(i)
		if i > 0 && rng.IntN(5) == 0 {
			dst = testAddr(rng.IntN(i))
		}
		if err := sendTo(t, dev, dst); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		for len(drv.held) > backlog {
			drv.send(dev, rng.IntN(len(drv.held)))
		}
	}
	for len(drv.held) > 0 {
		drv.send(dev, len(drv.held)-1)
	}
	s := dev.Stats()
	if drv.keyed != 0 {
		t.Errorf("%d frames reached the driver with keys in them", drv.keyed)
	}
	if drv.sent+drv.stale != peers || drv.stale == 0 || drv.sent == 0 {
		t.Fatalf("%d sent, %d stale, of %d", drv.sent, drv.stale, peers)
	}
	if s.Load(netdev.TxOK) != uint64(drv.sent) || s.Load(TxStalePeer) != uint64(drv.stale) {
		t.Fatalf("tx_ok %d tx_dropped_stale_peer %d; driver sent %d, dropped %d",
			s.Load(netdev.TxOK), s.Load(TxStalePeer), drv.sent, drv.stale)
	}
	if name := TxStalePeer.String(); name != "tx_dropped_stale_peer" {
		t.Errorf("counter name %q", name)
	}
	t.Logf("%d sent, %d dropped as stale; cache %+v", drv.sent, drv.stale, dev.LinkProtocol().(*Link).Cache().Stats())
}

// TestBatchKeepsKeys pushes a whole batch of frames to new peers before
// the driver takes any, with most of the cache pinned: the keys written
// early in the batch must not be reused by later pushes in it. The frames
// that find no free slot are refused as no-peer drops instead.
func TestBatchKeepsKeys(t *testing.T) {
	loop := newLoop(t)
	dev, drv, _ := newDevice(t, loop, 64)
	l := dev.LinkProtocol().(*Link)
	c := l.Cache()
	// Pin 230 peers: with our own address, 24 slots are left to use.
	for i := range 230 {
		p := mustEnter(t, c, testAddr(100000+i))
		if err := c.Pin(p.Ref()); err != nil {
			t.Fatal(err)
		}
	}
	c.Settle()
	pkts := make([]netdev.Packet, 40)
	for i := range pkts {
		b, _ := dev.AllocBuffer()
		dst := testAddr(i)
		_ = b.Append(dst)
		pkts[i] = netdev.Packet{Buf: b, Dst: dst, Proto: EtherTypeIPv4}
	}
	n, err := dev.TransmitBatch(pkts)
	if !errors.Is(err, ErrCacheFull) {
		t.Fatalf("batch of 40 new peers with 24 slots: %v", err)
	}
	for len(drv.held) > 0 {
		drv.send(dev, 0)
	}
	if drv.stale != 0 || drv.sent != n || n != 24 {
		t.Fatalf("driver took %d, sent %d, stale %d; want 24 sent", n, drv.sent, drv.stale)
	}
	if got := dev.Stats().Load(netdev.TxNoPeer); got != 16 {
		t.Fatalf("tx_dropped_no_peer = %d, want 16", got)
	}
}

func TestZeroAllocs(t *testing.T) {
	loop := newLoop(t)
	l := newLink(t, loop, ib.PKeyDefault)
	self := testAddr(0)
	peers := make([][]byte, 300)
	for i := range peers {
		peers[i] = testAddr(i + 1)
	}
	var selfAddr, peerAddr Addr
	_ = selfAddr.Decode(self)
	buf := bufWith(HeaderLen, []byte{0x45, 0, 0, 0x54})
	noRoom := bufWith(0, nil)
	unkeyed := bufWith(0, []byte{8, 0, 0, 0})
	i := 0
	tests := []struct {
		name string
		fn   func()
	}{
		{"push+TakeTx+SetRxPeers+pull", func() {
			_ = l.Push(buf, peers[i%200], self, EtherTypeIPv4)
			_, _ = l.Cache().TakeTx(buf)
			_ = peerAddr.Decode(peers[i%200])
			_ = l.SetRxPeers(buf, selfAddr, peerAddr)
			_, _, _, _ = l.Pull(buf)
			i++
		}},
		{"eviction: push to 300 peers round robin", func() {
			_ = l.Push(buf, peers[i%300], self, EtherTypeIPv4)
			_, _ = l.Cache().TakeTx(buf)
			_, _ = buf.Pull(HeaderLen)
			i++
		}},
		{"refusals: unknown keys, no headroom", func() {
			_, _, _, _ = l.Pull(unkeyed)
			_ = l.Push(noRoom, peers[0], self, EtherTypeIPv4)
		}},
	}
	for _, tc := range tests {
		tc.fn() // warm up
		if n := testing.AllocsPerRun(500, tc.fn); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", tc.name, n)
		}
	}
	if l.Cache().Stats().Evicted == 0 {
		t.Error("the eviction case evicted nothing")
	}
}

// BenchmarkPushPull is the link layer's per-packet cost on a busy fabric:
// Push (two peer-cache look-ups by address, the header) and Pull (two
// look-ups by key) with 255 live peers.
func BenchmarkPushPull(b *testing.B) {
	loop := newLoop(b)
	l := newLink(b, loop, ib.PKeyDefault)
	self := testAddr(0)
	peers := make([][]byte, MaxPeers-1)
	for i := range peers {
		peers[i] = testAddr(i + 1)
		mustEnter(b, l.Cache(), peers[i])
	}
	mustEnter(b, l.Cache(), self)
	if l.Cache().Len() != MaxPeers {
		b.Fatalf("%d live peers", l.Cache().Len())
	}
	buf := bufWith(HeaderLen, []byte{0x45, 0, 0, 0x54})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := l.Push(buf, peers[i%len(peers)], self, EtherTypeIPv4); err != nil {
			b.Fatal(err)
		}
		if _, _, _, err := l.Pull(buf); err != nil {
			b.Fatal(err)
		}
	}
	if l.Cache().Stats().Evicted != 0 {
		b.Fatal("benchmark evicted peers")
	}
}

// BenchmarkEnterEvict is the cost of a new peer when the cache is full:
// evict the least recently used, re-index, enter.
func BenchmarkEnterEvict(b *testing.B) {
	c := NewPeerCache(newLoop(b))
	addrs := make([][]byte, 4096)
	for i := range addrs {
		addrs[i] = testAddr(i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Settle()
		if _, err := c.Enter(addrs[i%len(addrs)]); err != nil {
			b.Fatal(err)
		}
	}
}
