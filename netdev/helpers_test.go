package netdev

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/internal/looptest"
)

// etherLink is a minimal Ethernet II link layer, a test double that shows
// the model works for a link other than IPoIB: a 14-byte header of
// destination, source and ethertype (IEEE 802.3 clause 3.2).
type etherLink struct{}

const (
	etherAddrLen = 6
	etherHdrLen  = 2*etherAddrLen + 2
	// etherMinType is the smallest value of the type/length field that is
	// an ethertype; below it the field is an 802.3 length (IEEE 802.3
	// clause 3.2.6), which this double treats as a bad header.
	etherMinType = 0x0600
)

var etherBroadcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func (etherLink) Name() string      { return "ether" }
func (etherLink) HeaderLen() int    { return etherHdrLen }
func (etherLink) AddrLen() int      { return etherAddrLen }
func (etherLink) Broadcast() []byte { return etherBroadcast }

func (etherLink) Push(b *Buffer, dst, src []byte, proto uint16) error {
	if len(dst) != etherAddrLen || len(src) != etherAddrLen {
		return fmt.Errorf("ether push: addresses of %d and %d bytes: %w", len(dst), len(src), ErrBadAddr)
	}
	h, err := b.Push(etherHdrLen)
	if err != nil {
		return fmt.Errorf("ether push: %w", err)
	}
	copy(h[0:6], dst)
	copy(h[6:12], src)
	binary.BigEndian.PutUint16(h[12:14], proto)
	return nil
}

func (etherLink) Pull(b *Buffer) (dst, src []byte, proto uint16, err error) {
	if b.Len() < etherHdrLen {
		return nil, nil, 0, ErrShort
	}
	h, _ := b.Peek(etherHdrLen)
	proto = binary.BigEndian.Uint16(h[12:14])
	if proto < etherMinType {
		return nil, nil, 0, ErrBadHeader
	}
	_, _ = b.Pull(etherHdrLen)
	return h[0:6], h[6:12], proto, nil
}

func (etherLink) AddrString(a []byte) string {
	if len(a) != etherAddrLen {
		return fmt.Sprintf("bad-ether-addr(%x)", a)
	}
	var sb strings.Builder
	for i, c := range a {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}

// Multicast maps IPv4 groups to 01:00:5e plus the low 23 bits of the group
// (RFC 1112 section 6.4) and IPv6 groups to 33:33 plus the low 32 bits
// (RFC 2464 section 7).
func (etherLink) Multicast(g netip.Addr, dst []byte) ([]byte, error) {
	switch {
	case g.Is4() && g.IsMulticast():
		a := g.As4()
		return append(dst, 0x01, 0x00, 0x5e, a[1]&0x7f, a[2], a[3]), nil
	case g.Is6() && g.IsMulticast():
		a := g.As16()
		return append(dst, 0x33, 0x33, a[12], a[13], a[14], a[15]), nil
	}
	return dst, fmt.Errorf("ether multicast %s: %w", g, ErrNoMulticast)
}

// keyLink imitates the IPoIB scheme with its 4-byte header (ethertype, then
// one-byte destination and source keys into a small peer table) and 20-byte
// addresses. Key 0 is never handed out.
type keyLink struct {
	peers [][]byte // peers[k-1] is the address of key k
	limit int
}

const (
	keyAddrLen = 20
	keyHdrLen  = 4
)

var keyBroadcast = func() []byte {
	a := make([]byte, keyAddrLen)
	a[1], a[2], a[3] = 0xff, 0xff, 0xff
	a[4], a[5] = 0xff, 0x12
	return a
}()

func (*keyLink) Name() string      { return "keyed" }
func (*keyLink) HeaderLen() int    { return keyHdrLen }
func (*keyLink) AddrLen() int      { return keyAddrLen }
func (*keyLink) Broadcast() []byte { return keyBroadcast }
func (*keyLink) MTUOverhead() int  { return 2 }

func (*keyLink) AddrString(a []byte) string { return hex.EncodeToString(a) }

func (*keyLink) Multicast(g netip.Addr, dst []byte) ([]byte, error) {
	if !g.Is4() || !g.IsMulticast() {
		return dst, fmt.Errorf("keyed multicast %s: %w", g, ErrNoMulticast)
	}
	a := g.As4()
	out := append(dst, keyBroadcast[:16]...)
	return append(out, a[0]&0x0f, a[1], a[2], a[3]), nil
}

// key returns the key of addr, adding it to the table if there is room.
func (l *keyLink) key(addr []byte) (byte, error) {
	for i, p := range l.peers {
		if bytes.Equal(p, addr) {
			return byte(i + 1), nil
		}
	}
	if len(l.peers) >= l.limit {
		return 0, ErrNoPeer
	}
	l.peers = append(l.peers, append([]byte(nil), addr...))
	return byte(len(l.peers)), nil
}

func (l *keyLink) Push(b *Buffer, dst, src []byte, proto uint16) error {
	dk, err := l.key(dst)
	if err != nil {
		return err
	}
	sk, err := l.key(src)
	if err != nil {
		return err
	}
	h, err := b.Push(keyHdrLen)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint16(h, proto)
	h[2], h[3] = dk, sk
	return nil
}

func (l *keyLink) lookup(k byte) ([]byte, bool) {
	if k == 0 || int(k) > len(l.peers) {
		return nil, false
	}
	return l.peers[k-1], true
}

func (l *keyLink) Pull(b *Buffer) (dst, src []byte, proto uint16, err error) {
	h, err := b.Peek(keyHdrLen)
	if err != nil {
		return nil, nil, 0, ErrShort
	}
	proto = binary.BigEndian.Uint16(h)
	if proto == 0 {
		return nil, nil, 0, ErrBadHeader
	}
	dst, ok1 := l.lookup(h[2])
	src, ok2 := l.lookup(h[3])
	if !ok1 || !ok2 {
		return nil, nil, 0, ErrUnknownKey
	}
	_, _ = b.Pull(keyHdrLen)
	return dst, src, proto, nil
}

// testDriver is a driver double. Transmitted buffers are kept in sent
// until the test completes them.
type testDriver struct {
	t        testing.TB
	autoUp   bool  // call SetLinkUp from Open
	openErr  error // Open fails with this
	closeErr error
	txErr    error // Transmit refuses with this
	syncDone bool  // complete inside Transmit
	sent     []*Buffer
	opens    int
	closes   int
	polls    int
	onClose  func(d *Device)
}

func (t *testDriver) Open(d *Device) error {
	t.opens++
	if t.openErr != nil {
		return t.openErr
	}
	if t.autoUp {
		d.SetLinkUp()
	}
	return nil
}

func (t *testDriver) Close(d *Device) error {
	t.closes++
	if t.onClose != nil {
		t.onClose(d)
	}
	return t.closeErr
}

func (t *testDriver) Transmit(d *Device, b *Buffer) error {
	if t.txErr != nil {
		return t.txErr
	}
	if t.syncDone {
		return d.TxComplete(b, nil)
	}
	t.sent = append(t.sent, b)
	return nil
}

// completeAll completes every buffer the driver holds with err.
func (t *testDriver) completeAll(d *Device, err error) {
	for _, b := range t.sent {
		if cerr := d.TxComplete(b, err); cerr != nil {
			t.t.Errorf("TxComplete: %v", cerr)
		}
	}
	clear(t.sent)
	t.sent = t.sent[:0]
}

// pollDriver adds a Poller.
type pollDriver struct{ testDriver }

func (p *pollDriver) Poll(d *Device) bool {
	p.polls++
	return len(p.sent) > 0
}

// batchDriver adds a BatchTransmitter that takes at most take buffers.
type batchDriver struct {
	testDriver
	take    int
	batches int
	err     error
}

func (bd *batchDriver) TransmitBatch(d *Device, bufs []*Buffer) (int, error) {
	bd.batches++
	n := min(bd.take, len(bufs))
	bd.sent = append(bd.sent, bufs[:n]...)
	if n < len(bufs) {
		return n, bd.err
	}
	return n, nil
}

// collector is a Receiver that records what it gets and frees the buffer.
type collector struct {
	n       int
	proto   uint16
	dst     []byte
	src     []byte
	payload []byte
	keep    bool // record copies (allocates); off for allocation tests
}

func (c *collector) Receive(d *Device, b *Buffer, proto uint16, dst, src []byte) {
	c.n++
	c.proto = proto
	if c.keep {
		c.dst = append(c.dst[:0], dst...)
		c.src = append(c.src[:0], src...)
		c.payload = append(c.payload[:0], b.Bytes()...)
	}
	b.Free()
}

var (
	hwA = []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	hwB = []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}
)

// newLoop makes an aio loop that the calling goroutine is home to for the
// rest of the test.
func newLoop(t testing.TB) *aio.Context {
	t.Helper()
	return looptest.Home(t, aio.WithName("netdev-"+t.Name()))
}

// devName turns a test name into a valid, unique device name.
func devName(t testing.TB, suffix string) string {
	r := strings.NewReplacer("/", ".", " ", "_", "#", "_", "(", "_", ")", "_", ",", "_", "=", "_", ":", "_", "'", "_")
	n := r.Replace(t.Name()) + suffix
	if len(n) > 32 {
		n = n[len(n)-32:]
	}
	return n
}

// newDev creates an ether device on loop with driver ops; mutate edits the
// Config first. The device is closed and unregistered at cleanup.
func newDev(t testing.TB, loop *aio.Context, ops Ops, mutate func(*Config)) *Device {
	t.Helper()
	cfg := Config{
		Name:       devName(t, ""),
		Loop:       loop,
		Link:       etherLink{},
		HWAddr:     hwA,
		MTU:        1500,
		Ops:        ops,
		TxQueueLen: 4,
		Buffers:    16,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if loop.InHome() {
			_ = d.Close()
		}
		_ = d.Unregister()
	})
	return d
}

// openDev is newDev on a driver that brings the link up as it opens,
// opened.
func openDev(t testing.TB, loop *aio.Context, mutate func(*Config)) (*testDriver, *Device) {
	t.Helper()
	drv := &testDriver{t: t, autoUp: true}
	d := newDev(t, loop, drv, mutate)
	if err := d.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	return drv, d
}

// packet allocates a buffer from d's pool holding payload.
func packet(t testing.TB, d *Device, payload []byte) *Buffer {
	t.Helper()
	b, err := d.AllocBuffer()
	if err != nil {
		t.Fatalf("AllocBuffer: %v", err)
	}
	if err := b.Append(payload); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return b
}

// frame allocates a buffer from d's pool holding raw frame bytes with
// the data at offset 0, as a driver's receive would.
func frame(t testing.TB, d *Device, raw []byte) *Buffer {
	t.Helper()
	b, err := d.AllocBuffer()
	if err != nil {
		t.Fatalf("AllocBuffer: %v", err)
	}
	if err := b.Reset(0); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(raw); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return b
}

// wantCounters checks that exactly the listed counters are non-zero, with
// the given values.
func wantCounters(t testing.TB, d *Device, want map[Counter]uint64) {
	t.Helper()
	for _, c := range Counters() {
		if got := d.Stats().Load(c); got != want[c] {
			t.Errorf("%s = %d, want %d", c, got, want[c])
		}
	}
}

var errTest = errors.New("test driver failure")
