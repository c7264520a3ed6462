package netdev

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestNewConfigErrors(t *testing.T) {
	loop := newLoop(t)
	good := func() Config {
		return Config{Name: "cfg0", Loop: loop, Link: etherLink{}, HWAddr: hwA, MTU: 1500, Ops: &testDriver{}}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"empty name", func(c *Config) { c.Name = "" }},
		{"name with space", func(c *Config) { c.Name = "ib 0" }},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("x", 33) }},
		{"no loop", func(c *Config) { c.Loop = nil }},
		{"no link", func(c *Config) { c.Link = nil }},
		{"no ops", func(c *Config) { c.Ops = nil }},
		{"short hwaddr", func(c *Config) { c.HWAddr = hwA[:5] }},
		{"zero MTU", func(c *Config) { c.MTU = 0 }},
		{"MTU above max", func(c *Config) { c.MaxMTU = 1000 }},
		{"huge MTU", func(c *Config) { c.MTU = 1 << 30 }},
		{"negative queue", func(c *Config) { c.TxQueueLen = -1 }},
		{"negative buffers", func(c *Config) { c.Buffers = -1 }},
		{"negative headroom", func(c *Config) { c.Headroom = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.mutate(&cfg)
			d, err := New(cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				if d != nil {
					_ = d.Unregister()
				}
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
	d, err := New(good())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unregister()
	if d.TxQueueLen() != DefaultTxQueueLen || d.Pool().Stats().Buffers != 2*DefaultTxQueueLen {
		t.Errorf("defaults: queue %d, buffers %d", d.TxQueueLen(), d.Pool().Stats().Buffers)
	}
	if d.Pool().Size() != 1514 || d.Pool().Headroom() != etherHdrLen {
		t.Errorf("pool buffers of %d bytes with %d headroom, want 1514 and 14", d.Pool().Size(), d.Pool().Headroom())
	}
}

func TestRegistry(t *testing.T) {
	loop := newLoop(t)
	a := newDev(t, loop, &testDriver{}, func(c *Config) { c.Name = "reg-b" })
	b := newDev(t, loop, &testDriver{}, func(c *Config) { c.Name = "reg-a" })
	if _, err := New(Config{Name: "reg-a", Loop: loop, Link: etherLink{}, HWAddr: hwA, MTU: 1500, Ops: &testDriver{}}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: %v, want ErrExists", err)
	}
	if got, ok := Lookup("reg-b"); !ok || got != a {
		t.Error("Lookup reg-b")
	}
	var names []string
	for _, d := range Devices() {
		if strings.HasPrefix(d.Name(), "reg-") {
			names = append(names, d.Name())
		}
	}
	if fmt.Sprint(names) != "[reg-a reg-b]" {
		t.Errorf("Devices: %v", names)
	}
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	if err := b.Unregister(); !errors.Is(err, ErrBusy) {
		t.Errorf("unregister an open device: %v, want ErrBusy", err)
	}
	_ = b.Close()
	if err := b.Unregister(); err != nil {
		t.Fatal(err)
	}
	if err := b.Unregister(); !errors.Is(err, ErrClosed) {
		t.Errorf("second unregister: %v", err)
	}
	if _, ok := Lookup("reg-a"); ok {
		t.Error("unregistered device still found")
	}
	if err := b.Open(); !errors.Is(err, ErrClosed) {
		t.Errorf("open an unregistered device: %v", err)
	}
}

func TestTransmitComplete(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, nil)
	b := packet(t, d, []byte{0x45, 0x00, 0x00, 0x14})
	if err := d.Transmit(b, hwB, 0x0800); err != nil {
		t.Fatal(err)
	}
	if len(drv.sent) != 1 || drv.sent[0] != b || d.TxQueued() != 1 {
		t.Fatalf("driver holds %d buffers, queue %d", len(drv.sent), d.TxQueued())
	}
	want := []byte{
		0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, // dst
		0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // src: the device's HWAddr
		0x08, 0x00,
		0x45, 0x00, 0x00, 0x14,
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("driver got %x\nwant         %x", b.Bytes(), want)
	}
	// A stray Free while queued must not return the buffer to the pool.
	b.Free()
	if st := d.Pool().Stats(); st.Free != 15 {
		t.Fatalf("pool has %d free with one packet queued", st.Free)
	}
	// The hardware finishes later: a bottom half on the loop.
	bh := loop.NewBH("tx-done", func() { drv.completeAll(d, nil) })
	bh.Schedule()
	for loop.Poll(false) {
	}
	wantCounters(t, d, map[Counter]uint64{TxOK: 1, TxBytes: 18, LinkUp: 1})
	if d.TxQueued() != 0 || d.Pool().Stats().Free != 16 {
		t.Errorf("after completion: queue %d, pool free %d", d.TxQueued(), d.Pool().Stats().Free)
	}
	if err := d.TxComplete(b, nil); !errors.Is(err, ErrNotQueued) {
		t.Errorf("second completion: %v, want ErrNotQueued", err)
	}
}

func TestTransmitOutOfOrderCompletion(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, nil)
	for i := range 4 {
		if err := d.Transmit(packet(t, d, []byte{byte(i)}), hwB, 0x0800); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{2, 0, 3, 1} {
		if err := d.TxComplete(drv.sent[i], nil); err != nil {
			t.Fatalf("complete %d: %v", i, err)
		}
	}
	if d.TxQueued() != 0 || d.txHead != nil || d.txTail != nil {
		t.Fatal("queue not empty after completing everything")
	}
	wantCounters(t, d, map[Counter]uint64{TxOK: 4, TxBytes: 4 * 15, LinkUp: 1})
}

var (
	errParked    = errors.New("test: packet parked too long")
	ctrParked    = MustRegister(RegisterTxDrop("test_tx_dropped_parked", errParked))
	errCRC       = errors.New("test: frame failed CRC")
	ctrBadCRC    = MustRegister(RegisterRxDrop("test_rx_bad_crc", errCRC))
	ctrPathQuery = MustRegister(RegisterCounter("test_path_queries"))
)

func TestTransmitDrops(t *testing.T) {
	big := make([]byte, 1501)
	tests := []struct {
		name    string
		open    bool
		linkUp  bool
		drv     testDriver
		link    LinkProtocol
		dst     []byte
		payload []byte
		fill    int // packets queued first
		wantErr error
		want    map[Counter]uint64 // beyond link_up
	}{
		{name: "device closed", wantErr: ErrLinkDown, want: map[Counter]uint64{TxLinkDown: 1}},
		{name: "link down", open: true, wantErr: ErrLinkDown, want: map[Counter]uint64{TxLinkDown: 1}},
		{name: "queue full", open: true, linkUp: true, fill: 4, wantErr: ErrQueueFull, want: map[Counter]uint64{TxQueueFull: 1}},
		{name: "too big", open: true, linkUp: true, payload: big, wantErr: ErrTooBig, want: map[Counter]uint64{TxInvalid: 1}},
		{name: "short destination", open: true, linkUp: true, dst: hwB[:4], wantErr: ErrBadAddr, want: map[Counter]uint64{TxInvalid: 1}},
		{name: "driver: no path", open: true, linkUp: true, drv: testDriver{txErr: fmt.Errorf("lid 7: %w", ErrNoPath)}, wantErr: ErrNoPath, want: map[Counter]uint64{TxNoPath: 1}},
		{name: "driver: other", open: true, linkUp: true, drv: testDriver{txErr: errTest}, wantErr: errTest, want: map[Counter]uint64{TxDriverError: 1}},
		{name: "driver: registered reason", open: true, linkUp: true, drv: testDriver{txErr: fmt.Errorf("peer 3: %w", errParked)}, wantErr: errParked, want: map[Counter]uint64{ctrParked: 1}},
		{name: "push: no peer key", open: true, linkUp: true, link: &keyLink{limit: 1}, dst: keyBroadcast, wantErr: ErrNoPeer, want: map[Counter]uint64{TxNoPeer: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loop := newLoop(t)
			drv := tc.drv
			drv.t = t
			drv.autoUp = tc.linkUp
			d := newDev(t, loop, &drv, func(c *Config) {
				c.MaxMTU = 1600 // room in the buffers for the too-big packet
				if tc.link != nil {
					c.Link = tc.link
					c.HWAddr = make([]byte, keyAddrLen)
				}
			})
			if tc.open {
				if err := d.Open(); err != nil {
					t.Fatal(err)
				}
			}
			dst := tc.dst
			if dst == nil {
				dst = hwB
			}
			for range tc.fill {
				if err := d.Transmit(packet(t, d, []byte{1}), hwB, 0x0800); err != nil {
					t.Fatal(err)
				}
			}
			payload := tc.payload
			if payload == nil {
				payload = []byte{0x45}
			}
			err := d.Transmit(packet(t, d, payload), dst, 0x0800)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Transmit: %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "netdev") && !errors.Is(err, tc.drv.txErr) {
				t.Errorf("error %q does not say where it failed", err)
			}
			want := tc.want
			if tc.linkUp {
				want[LinkUp] = 1
			}
			wantCounters(t, d, want)
			if free := d.Pool().Stats().Free; free != 16-tc.fill {
				t.Errorf("pool has %d free buffers, want %d: a dropped buffer leaked", free, 16-tc.fill)
			}
		})
	}
}

func TestTxCompleteReasons(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, func(c *Config) { c.TxQueueLen = 8 })
	errs := []error{
		nil,
		fmt.Errorf("path record timed out: %w", ErrNoPath),
		fmt.Errorf("key 9 evicted: %w", ErrNoPeer),
		fmt.Errorf("port went down: %w", ErrLinkDown),
		fmt.Errorf("parked: %w", errParked),
		errTest,
	}
	for range errs {
		_ = d.Transmit(packet(t, d, []byte{1, 2}), hwB, 0x0800)
	}
	for i, err := range errs {
		if cerr := d.TxComplete(drv.sent[i], err); cerr != nil {
			t.Fatal(cerr)
		}
	}
	d.Stats().Inc(ctrPathQuery)
	wantCounters(t, d, map[Counter]uint64{
		TxOK: 1, TxBytes: 16, TxNoPath: 1, TxNoPeer: 1, TxLinkDown: 1,
		ctrParked: 1, TxDriverError: 1, ctrPathQuery: 1, LinkUp: 1,
	})
}

func TestCloseFlushesQueue(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, nil)
	var events []string
	d.AddLinkListener(func(_ *Device, up bool, reason error) {
		events = append(events, fmt.Sprintf("up=%v closed=%v", up, errors.Is(reason, ErrClosed)))
	})
	for i := range 3 {
		_ = d.Transmit(packet(t, d, []byte{byte(i)}), hwB, 0x0800)
	}
	// The driver's Close completes the oldest packet itself; the device
	// must flush the other two.
	drv.onClose = func(d *Device) {
		if err := d.TxComplete(drv.sent[0], nil); err != nil {
			t.Error(err)
		}
		if err := d.Transmit(packet(t, d, []byte{9}), hwB, 0x0800); !errors.Is(err, ErrClosed) {
			t.Errorf("transmit during close: %v, want ErrClosed", err)
		}
	}
	drv.closeErr = errTest
	if err := d.Close(); !errors.Is(err, errTest) {
		t.Errorf("Close: %v, want the driver's error", err)
	}
	if d.IsOpen() || d.TxQueued() != 0 {
		t.Fatalf("open %v, %d queued after Close", d.IsOpen(), d.TxQueued())
	}
	wantCounters(t, d, map[Counter]uint64{TxOK: 1, TxBytes: 15, TxAborted: 2, TxLinkDown: 1, LinkUp: 1, LinkDown: 1})
	if free := d.Pool().Stats().Free; free != 16 {
		t.Errorf("pool has %d free after close, want 16", free)
	}
	if fmt.Sprint(events) != "[up=false closed=true]" {
		t.Errorf("listener saw %v", events)
	}
	if up, reason := d.LinkState(); up || !errors.Is(reason, ErrClosed) {
		t.Errorf("LinkState after close: %v %v", up, reason)
	}
	if err := d.TxComplete(drv.sent[1], nil); !errors.Is(err, ErrNotQueued) {
		t.Errorf("late completion of a flushed buffer: %v, want ErrNotQueued", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Reopen works and the link comes back.
	drv.onClose, drv.closeErr = nil, nil
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	if up, _ := d.LinkState(); !up || drv.opens != 2 {
		t.Errorf("after reopen: up %v, opens %d", up, drv.opens)
	}
}

func TestOpenFailure(t *testing.T) {
	loop := newLoop(t)
	drv := &testDriver{t: t, openErr: errTest}
	d := newDev(t, loop, drv, nil)
	err := d.Open()
	if !errors.Is(err, errTest) || !strings.Contains(err.Error(), d.Name()) {
		t.Fatalf("Open: %v", err)
	}
	if d.IsOpen() {
		t.Error("device open after a failed Open")
	}
	if up, reason := d.LinkState(); up || !errors.Is(reason, errTest) {
		t.Errorf("link %v, reason %v", up, reason)
	}
	if drv.closes != 0 {
		t.Error("driver Close called after its Open failed")
	}
}

func TestReceive(t *testing.T) {
	hdr := func(dst, src []byte, et0, et1 byte) []byte {
		return append(append(append([]byte{}, dst...), src...), et0, et1)
	}
	tests := []struct {
		name      string
		closed    bool
		noRx      bool
		frame     []byte
		wantErr   error
		want      map[Counter]uint64
		wantProto uint16
	}{
		{name: "ipv4", frame: append(hdr(hwA, hwB, 0x08, 0x00), 0x45, 0x00, 0x00), want: map[Counter]uint64{RxOK: 1, RxBytes: 17}, wantProto: 0x0800},
		{name: "header only", frame: hdr(etherBroadcast, hwB, 0x08, 0x06), want: map[Counter]uint64{RxOK: 1, RxBytes: 14}, wantProto: 0x0806},
		{name: "empty", frame: []byte{}, wantErr: ErrShort, want: map[Counter]uint64{RxShort: 1}},
		{name: "short", frame: hdr(hwA, hwB, 0x08, 0x00)[:13], wantErr: ErrShort, want: map[Counter]uint64{RxShort: 1}},
		{name: "802.3 length field", frame: hdr(hwA, hwB, 0x00, 0x2e), wantErr: ErrBadHeader, want: map[Counter]uint64{RxBadHeader: 1}},
		{name: "no receiver", noRx: true, frame: hdr(hwA, hwB, 0x08, 0x00), wantErr: ErrNoReceiver, want: map[Counter]uint64{RxNoReceiver: 1}},
		{name: "device closed", closed: true, frame: hdr(hwA, hwB, 0x08, 0x00), wantErr: ErrClosed, want: map[Counter]uint64{RxDropped: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loop := newLoop(t)
			d := newDev(t, loop, &testDriver{t: t}, nil)
			rx := &collector{keep: true}
			if !tc.noRx {
				d.SetReceiver(rx)
			}
			if !tc.closed {
				_ = d.Open()
			}
			err := d.Receive(frame(t, d, tc.frame))
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Receive: %v, want %v", err, tc.wantErr)
			}
			wantCounters(t, d, tc.want)
			if tc.want[RxOK] == 1 {
				if rx.n != 1 || rx.proto != tc.wantProto || !bytes.Equal(rx.dst, tc.frame[:6]) || !bytes.Equal(rx.src, tc.frame[6:12]) || !bytes.Equal(rx.payload, tc.frame[14:]) {
					t.Errorf("receiver got n=%d proto %#x dst %x src %x payload %x", rx.n, rx.proto, rx.dst, rx.src, rx.payload)
				}
			} else if rx.n != 0 {
				t.Error("a dropped frame reached the receiver")
			}
			if free := d.Pool().Stats().Free; free != 16 {
				t.Errorf("pool has %d free, want 16", free)
			}
		})
	}
}

func TestReceiveKeyed(t *testing.T) {
	loop := newLoop(t)
	lp := &keyLink{limit: 4}
	self := bytes.Repeat([]byte{0x0a}, keyAddrLen)
	peer := bytes.Repeat([]byte{0x0b}, keyAddrLen)
	d := newDev(t, loop, &testDriver{t: t}, func(c *Config) { c.Link, c.HWAddr = lp, self })
	rx := &collector{keep: true}
	d.SetReceiver(rx)
	_ = d.Open()
	_, _ = lp.key(self) // key 1
	_, _ = lp.key(peer) // key 2
	for _, tc := range []struct {
		frame   []byte
		wantErr error
	}{
		{[]byte{0x08, 0x00, 0x01, 0x02, 0x45}, nil},
		{[]byte{0x08, 0x00, 0x01, 0x07, 0x45}, ErrUnknownKey},
		{[]byte{0x08, 0x00, 0x00, 0x02}, ErrUnknownKey},
		{[]byte{0x00, 0x00, 0x01, 0x02}, ErrBadHeader},
		{[]byte{0x08, 0x00, 0x01}, ErrShort},
	} {
		if err := d.Receive(frame(t, d, tc.frame)); !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
			t.Errorf("frame %x: %v, want %v", tc.frame, err, tc.wantErr)
		}
	}
	d.ReceiveError(nil, fmt.Errorf("completion status 4: %w", errCRC))
	d.ReceiveError(frame(t, d, []byte{1}), errTest)
	wantCounters(t, d, map[Counter]uint64{RxOK: 1, RxBytes: 5, RxUnknownKey: 2, RxBadHeader: 1, RxShort: 1, ctrBadCRC: 1, RxDropped: 1})
	if !bytes.Equal(rx.dst, self) || !bytes.Equal(rx.src, peer) {
		t.Errorf("keyed receive: dst %x src %x", rx.dst, rx.src)
	}
	if free := d.Pool().Stats().Free; free != 16 {
		t.Errorf("pool has %d free, want 16", free)
	}
}

func TestLinkListeners(t *testing.T) {
	loop := newLoop(t)
	d := newDev(t, loop, &testDriver{t: t}, nil)
	_ = d.Open()
	var got1, got2 []string
	rec := func(dst *[]string) LinkListener {
		return func(dd *Device, up bool, reason error) {
			if dd != d || !loop.InHome() {
				t.Error("listener called with the wrong device or off the loop")
			}
			*dst = append(*dst, fmt.Sprintf("%v/%v", up, reason))
		}
	}
	remove1 := d.AddLinkListener(rec(&got1))
	d.AddLinkListener(rec(&got2))
	d.AddLinkListener(nil)()
	errPort := errors.New("port DOWN")
	d.SetLinkUp()
	d.SetLinkUp() // no transition: no notification
	d.SetLinkDown(errPort)
	d.SetLinkDown(nil) // already down: reason updated silently
	if _, reason := d.LinkState(); reason != ErrLinkDown {
		t.Errorf("reason after SetLinkDown(nil): %v", reason)
	}
	remove1()
	remove1()
	d.SetLinkUp()
	if want := "[true/<nil> false/port DOWN]"; fmt.Sprint(got1) != want {
		t.Errorf("listener 1 saw %v, want %v", got1, want)
	}
	if want := "[true/<nil> false/port DOWN true/<nil>]"; fmt.Sprint(got2) != want {
		t.Errorf("listener 2 saw %v, want %v", got2, want)
	}
	wantCounters(t, d, map[Counter]uint64{LinkUp: 2, LinkDown: 1})
	// Transmit follows the link.
	d.SetLinkDown(errPort)
	if err := d.Transmit(packet(t, d, []byte{1}), hwB, 0x0800); !errors.Is(err, ErrLinkDown) {
		t.Errorf("transmit on a down link: %v", err)
	}
}

func TestReceiverFunc(t *testing.T) {
	loop := newLoop(t)
	d := newDev(t, loop, &testDriver{t: t}, nil)
	var got uint16
	d.SetReceiver(ReceiverFunc(func(_ *Device, b *Buffer, proto uint16, _, _ []byte) {
		got = proto
		b.Free()
	}))
	_ = d.Open()
	if err := d.Receive(frame(t, d, ipv4Frame)); err != nil || got != 0x0800 {
		t.Errorf("Receive: %v, proto %#x", err, got)
	}
	d.SetReceiver(nil)
	if err := d.Receive(frame(t, d, ipv4Frame)); !errors.Is(err, ErrNoReceiver) {
		t.Errorf("after detaching: %v", err)
	}
}

func TestListenerMayCallDevice(t *testing.T) {
	loop := newLoop(t)
	drv := &testDriver{t: t}
	d := newDev(t, loop, drv, nil)
	_ = d.Open()
	// A listener that sends a gratuitous announcement when the link comes
	// up, as the stack layer will.
	d.AddLinkListener(func(d *Device, up bool, _ error) {
		if up {
			if err := d.Transmit(packet(t, d, []byte{1}), etherBroadcast, 0x0806); err != nil {
				t.Errorf("transmit from a listener: %v", err)
			}
		}
	})
	d.SetLinkUp()
	if len(drv.sent) != 1 {
		t.Fatalf("driver got %d packets", len(drv.sent))
	}
}

func TestSetMTUAndHWAddr(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, func(c *Config) { c.MTU, c.MaxMTU = 1000, 1500 })
	for _, mtu := range []int{0, -1, 1501} {
		if err := d.SetMTU(mtu); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SetMTU(%d): %v", mtu, err)
		}
	}
	if err := d.Transmit(packet(t, d, make([]byte, 1200)), hwB, 0x0800); !errors.Is(err, ErrTooBig) {
		t.Errorf("1200 bytes at MTU 1000: %v", err)
	}
	if err := d.SetMTU(1500); err != nil || d.MTU() != 1500 {
		t.Fatalf("SetMTU(1500): %v", err)
	}
	if err := d.Transmit(packet(t, d, make([]byte, 1500)), hwB, 0x0800); err != nil {
		t.Errorf("1500 bytes at MTU 1500: %v", err)
	}
	old := d.HWAddr()
	if err := d.SetHWAddr(hwB[:3]); !errors.Is(err, ErrBadAddr) {
		t.Errorf("SetHWAddr short: %v", err)
	}
	if err := d.SetHWAddr(hwB); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(old, hwA) || !bytes.Equal(d.HWAddr(), hwB) {
		t.Errorf("old %x new %x", old, d.HWAddr())
	}
	_ = d.Transmit(packet(t, d, []byte{1}), hwA, 0x0800)
	if src := drv.sent[1].Bytes()[6:12]; !bytes.Equal(src, hwB) {
		t.Errorf("source after SetHWAddr: %x", src)
	}
}

func TestTransmitBatch(t *testing.T) {
	t.Run("batch driver", func(t *testing.T) {
		loop := newLoop(t)
		drv := &batchDriver{testDriver: testDriver{t: t, autoUp: true}, take: 2, err: errTest}
		d := newDev(t, loop, drv, nil)
		_ = d.Open()
		pkts := []Packet{
			{packet(t, d, []byte{1}), hwB, 0x0800},
			{packet(t, d, []byte{2}), hwB[:2], 0x0800}, // refused by netdev
			{packet(t, d, []byte{3}), hwB, 0x0800},
			{packet(t, d, []byte{4}), hwB, 0x0800}, // refused by the driver
		}
		sent, err := d.TransmitBatch(pkts)
		if sent != 2 || !errors.Is(err, ErrBadAddr) || drv.batches != 1 {
			t.Fatalf("sent %d, err %v, %d batches", sent, err, drv.batches)
		}
		drv.completeAll(d, nil)
		wantCounters(t, d, map[Counter]uint64{TxOK: 2, TxBytes: 30, TxInvalid: 1, TxDriverError: 1, LinkUp: 1})
		if free := d.Pool().Stats().Free; free != 16 {
			t.Errorf("pool has %d free", free)
		}
		for _, p := range d.pending[:cap(d.pending)] {
			if p != nil {
				t.Fatal("batch scratch keeps a buffer reference")
			}
		}
	})
	t.Run("plain driver", func(t *testing.T) {
		loop := newLoop(t)
		drv, d := openDev(t, loop, nil)
		var pkts []Packet
		for i := range 6 { // two beyond the queue bound of 4
			pkts = append(pkts, Packet{packet(t, d, []byte{byte(i)}), hwB, 0x0800})
		}
		sent, err := d.TransmitBatch(pkts)
		if sent != 4 || !errors.Is(err, ErrQueueFull) || len(drv.sent) != 4 {
			t.Fatalf("sent %d, err %v, driver has %d", sent, err, len(drv.sent))
		}
		drv.completeAll(d, nil)
		wantCounters(t, d, map[Counter]uint64{TxOK: 4, TxBytes: 60, TxQueueFull: 2, LinkUp: 1})
	})
}

func TestPoll(t *testing.T) {
	loop := newLoop(t)
	pd := &pollDriver{testDriver{t: t, autoUp: true}}
	d := newDev(t, loop, pd, nil)
	if d.Poll() {
		t.Error("Poll on a closed device reported work")
	}
	_ = d.Open()
	if d.Poll() || pd.polls != 1 {
		t.Errorf("idle poll: polls %d", pd.polls)
	}
	_ = d.Transmit(packet(t, d, []byte{1}), hwB, 0x0800)
	if !d.Poll() {
		t.Error("Poll with work reported none")
	}
	d2 := newDev(t, loop, &testDriver{t: t}, func(c *Config) { c.Name = devName(t, "2") })
	_ = d2.Open()
	if d2.Poll() {
		t.Error("Poll on a driver without a Poller reported work")
	}
}

func TestInUseBuffer(t *testing.T) {
	loop := newLoop(t)
	_, d := openDev(t, loop, nil)
	b := packet(t, d, []byte{1})
	_ = d.Transmit(b, hwB, 0x0800)
	if err := d.Transmit(b, hwB, 0x0800); !errors.Is(err, ErrInUse) {
		t.Fatalf("re-transmit of a queued buffer: %v", err)
	}
	if d.TxQueued() != 1 {
		t.Fatal("queue corrupted")
	}
	if err := d.Transmit(nil, hwB, 0x0800); err == nil {
		t.Error("nil buffer accepted")
	}
	if err := d.Receive(nil); err == nil {
		t.Error("nil frame accepted")
	}
	if err := d.TxComplete(nil, nil); !errors.Is(err, ErrNotQueued) {
		t.Errorf("nil completion: %v", err)
	}
}

func TestSyncCompletion(t *testing.T) {
	loop := newLoop(t)
	drv := &testDriver{t: t, autoUp: true, syncDone: true}
	d := newDev(t, loop, drv, nil)
	_ = d.Open()
	for range 10 { // more than the queue bound: each completes at once
		if err := d.Transmit(packet(t, d, []byte{1}), hwB, 0x0800); err != nil {
			t.Fatal(err)
		}
	}
	wantCounters(t, d, map[Counter]uint64{TxOK: 10, TxBytes: 150, LinkUp: 1})
}

func TestControlOffLoopPanics(t *testing.T) {
	loop := newLoop(t)
	d := newDev(t, loop, &testDriver{t: t}, nil)
	calls := []struct {
		name string
		fn   func()
	}{
		{"Open", func() { _ = d.Open() }},
		{"Close", func() { _ = d.Close() }},
		{"SetLinkUp", d.SetLinkUp},
		{"SetLinkDown", func() { d.SetLinkDown(nil) }},
		{"SetReceiver", func() { d.SetReceiver(nil) }},
		{"SetMTU", func() { _ = d.SetMTU(1000) }},
		{"SetHWAddr", func() { _ = d.SetHWAddr(hwB) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var recovered any
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { recovered = recover() }()
				c.fn()
			}()
			wg.Wait()
			msg, _ := recovered.(string)
			if !strings.Contains(msg, "netdev."+c.name) {
				t.Errorf("%s off the loop: recovered %v, want an AssertHome panic", c.name, recovered)
			}
		})
	}
	if d.IsOpen() {
		t.Error("off-loop Open took effect")
	}
}

func TestStatusAndSnapshotJSON(t *testing.T) {
	loop := newLoop(t)
	drv, d := openDev(t, loop, nil)
	_ = d.Transmit(packet(t, d, []byte{1}), hwB, 0x0800)
	drv.completeAll(d, nil)
	st := d.Status()
	if st.Name != d.Name() || st.Link != "ether" || st.HWAddr != "02:00:00:00:00:0a" || !st.Open || !st.LinkUp || st.MTU != 1500 {
		t.Errorf("status %+v", st)
	}
	whole, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(whole), `"link_up":true,"pool":{"buffers":16,"free":16,`) ||
		!strings.Contains(string(whole), `"counters":{"tx_ok":1,"tx_bytes":15,`) {
		t.Errorf("status JSON %s (%v)", whole, err)
	}
	js, err := st.Counters.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(js), `{"tx_ok":1,"tx_bytes":15,"tx_dropped_no_path":0,`) {
		t.Errorf("JSON starts %s", js[:min(len(js), 80)])
	}
	var back Snapshot
	if err := back.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back) != fmt.Sprint(st.Counters) {
		t.Errorf("round trip:\n%v\n%v", back, st.Counters)
	}
	if v, ok := back.Get("tx_bytes"); !ok || v != 15 {
		t.Errorf("Get(tx_bytes) = %d, %v", v, ok)
	}
	if _, ok := back.Get("nope"); ok {
		t.Error("Get of a missing counter")
	}
	for _, bad := range []string{`[]`, `{"a":-1}`, `{"a":"1"}`, `{"a":1`, `{"a":1.5}`} {
		if err := back.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("UnmarshalJSON(%s) accepted", bad)
		}
	}
	_ = d.Close()
	if st := d.Status(); st.LinkUp || !strings.Contains(st.LinkReason, "closed") {
		t.Errorf("closed status %+v", st)
	}
}

func TestCounterRegistry(t *testing.T) {
	names := map[string]bool{}
	for _, c := range Counters() {
		if names[c.String()] {
			t.Errorf("duplicate counter name %s", c)
		}
		names[c.String()] = true
	}
	// The built-in names are part of the CLI's and JSON's interface.
	want := []string{"tx_ok", "tx_bytes", "tx_dropped_no_path", "tx_dropped_no_peer",
		"tx_dropped_link_down", "tx_dropped_queue_full", "tx_dropped_invalid", "tx_aborted",
		"tx_driver_error", "rx_ok", "rx_bytes", "rx_short", "rx_bad_header", "rx_unknown_key",
		"rx_no_receiver", "rx_dropped", "link_up", "link_down"}
	for i, n := range want {
		if Counter(i).String() != n {
			t.Errorf("counter %d is %q, want %q", i, Counter(i), n)
		}
	}
	if Counter(MaxCounters).String() != fmt.Sprintf("counter_%d", MaxCounters) {
		t.Errorf("counter beyond the table is named %q", Counter(MaxCounters))
	}
	for _, bad := range []string{"", "Tx", "1x", "tx-ok", strings.Repeat("a", 65)} {
		if _, err := RegisterCounter(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("RegisterCounter(%q): %v", bad, err)
		}
	}
	if _, err := RegisterCounter("tx_ok"); !errors.Is(err, ErrExists) {
		t.Errorf("re-register tx_ok: %v", err)
	}
	if _, err := RegisterTxDrop("test_nil_cause", nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil cause: %v", err)
	}
	if _, err := RegisterRxDrop("test_nil_cause", nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil cause: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustRegister did not panic on an error")
			}
		}()
		MustRegister(RegisterCounter("tx_ok"))
	}()
	var s Stats
	s.Add(Counter(200), 1) // out of the table: ignored
	if s.Load(Counter(200)) != 0 {
		t.Error("out-of-range counter")
	}
}

func TestCounterTableFull(t *testing.T) {
	// Fills the process-wide table; the package's own registrations all
	// happen at init, before this runs.
	var err error
	for i := 0; i <= 2*MaxCounters; i++ {
		_, err = RegisterCounter(fmt.Sprintf("test_fill_%d", i))
		if err != nil && !errors.Is(err, ErrExists) { // ErrExists: -count > 1
			break
		}
	}
	if !errors.Is(err, ErrTooManyCounters) {
		t.Errorf("overflow: %v", err)
	}
	if n := len(Counters()); n != MaxCounters {
		t.Errorf("%d counters", n)
	}
}
