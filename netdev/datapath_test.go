package netdev

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
)

// ipv4Frame is an Ethernet frame from hwB to hwA carrying the start of an
// IPv4 header (20 bytes, written out by hand).
var ipv4Frame = []byte{
	0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // dst
	0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, // src
	0x08, 0x00, // IPv4
	0x45, 0x00, 0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01,
	0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01,
}

func TestZeroAllocs(t *testing.T) {
	loop := newLoop(t)
	drv := &testDriver{t: t, autoUp: true, sent: make([]*Buffer, 0, 8)}
	d := newDev(t, loop, drv, nil)
	rx := &collector{}
	d.SetReceiver(rx)
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	down := newDev(t, loop, &testDriver{t: t}, func(c *Config) { c.Name = devName(t, "-down") })
	if err := down.Open(); err != nil {
		t.Fatal(err)
	}
	payload := ipv4Frame[14:]
	tests := []struct {
		name string
		fn   func()
	}{
		{"transmit+complete", func() {
			b, _ := d.AllocBuffer()
			_ = b.Append(payload)
			_ = d.Transmit(b, hwB, 0x0800)
			drv.completeAll(d, nil)
		}},
		{"receive", func() {
			b, _ := d.AllocBuffer()
			_ = b.Reset(0)
			_ = b.Append(ipv4Frame)
			_ = d.Receive(b)
		}},
		{"drop: queue full", func() {
			var held [4]*Buffer
			for i := range held {
				held[i], _ = d.AllocBuffer()
				_ = d.Transmit(held[i], hwB, 0x0800)
			}
			b, _ := d.AllocBuffer()
			_ = d.Transmit(b, hwB, 0x0800)
			drv.completeAll(d, nil)
		}},
		{"drop: link down", func() {
			b, _ := down.AllocBuffer()
			_ = down.Transmit(b, hwB, 0x0800)
		}},
		{"drop: short frame", func() {
			b, _ := d.AllocBuffer()
			_ = d.Receive(b)
		}},
	}
	// No subtests: they would run on goroutines that are not the loop's
	// home.
	for _, tc := range tests {
		tc.fn() // warm up
		if n := testing.AllocsPerRun(200, tc.fn); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", tc.name, n)
		}
	}
	if free := d.Pool().Stats().Free; free != 16 {
		t.Errorf("pool has %d free after the runs, want 16", free)
	}
}

// TestConcurrentReaders reads counters, status and link state from other
// goroutines while the loop moves packets and flaps the link; -race checks
// that the readers only touch what is safe to share.
func TestConcurrentReaders(t *testing.T) {
	loop := newLoop(t)
	drv := &testDriver{t: t, autoUp: true}
	d := newDev(t, loop, drv, func(c *Config) { c.Buffers = 32 })
	rx := &collector{}
	d.SetReceiver(rx)
	_ = d.Open()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := d.Status()
				if v, _ := st.Counters.Get("tx_ok"); v > 1000 {
					t.Error("impossible tx_ok")
				}
				_ = d.Stats().Load(RxOK)
				_, _ = d.LinkState()
				_ = d.HWAddr()
				_ = d.MTU()
				if b, err := d.AllocBuffer(); err == nil {
					b.Free()
				}
				reads.Add(1)
			}
		}()
	}
	for reads.Load() < 3 { // make sure the readers overlap the traffic
		runtime.Gosched()
	}
	const n = 500
	for i := range n {
		if i%100 == 50 {
			d.SetLinkDown(ErrLinkDown)
			d.SetLinkUp()
		}
		b, err := d.AllocBuffer()
		if err != nil {
			continue // a reader holds it for a moment
		}
		_ = b.Append(ipv4Frame[14:])
		_ = d.Transmit(b, hwB, 0x0800)
		drv.completeAll(d, nil)
		if b, err := d.AllocBuffer(); err == nil {
			_ = b.Reset(0)
			_ = b.Append(ipv4Frame)
			_ = d.Receive(b)
		}
	}
	close(stop)
	wg.Wait()
	s := d.Stats()
	if s.Load(TxOK) == 0 || s.Load(RxOK) != uint64(rx.n) {
		t.Errorf("tx_ok %d rx_ok %d delivered %d", s.Load(TxOK), s.Load(RxOK), rx.n)
	}
	if s.Load(LinkUp) != 6 || s.Load(LinkDown) != 5 {
		t.Errorf("link_up %d link_down %d", s.Load(LinkUp), s.Load(LinkDown))
	}
}

func BenchmarkTransmitComplete(b *testing.B) {
	loop := newLoop(b)
	drv := &testDriver{t: b, autoUp: true, sent: make([]*Buffer, 0, 8)}
	d := newDev(b, loop, drv, nil)
	_ = d.Open()
	payload := ipv4Frame[14:]
	b.ReportAllocs()
	for b.Loop() {
		buf, err := d.AllocBuffer()
		if err != nil {
			b.Fatal(err)
		}
		_ = buf.Append(payload)
		if err := d.Transmit(buf, hwB, 0x0800); err != nil {
			b.Fatal(err)
		}
		drv.completeAll(d, nil)
	}
}

func BenchmarkTransmitBatch(b *testing.B) {
	loop := newLoop(b)
	drv := &batchDriver{testDriver: testDriver{t: b, autoUp: true, sent: make([]*Buffer, 0, 64)}, take: 64}
	d := newDev(b, loop, drv, func(c *Config) { c.TxQueueLen = 32; c.Buffers = 64 })
	_ = d.Open()
	payload := ipv4Frame[14:]
	pkts := make([]Packet, 32)
	b.ReportAllocs()
	for b.Loop() {
		for i := range pkts {
			buf, _ := d.AllocBuffer()
			_ = buf.Append(payload)
			pkts[i] = Packet{Buf: buf, Dst: hwB, Proto: 0x0800}
		}
		if n, err := d.TransmitBatch(pkts); n != len(pkts) || err != nil {
			b.Fatal(n, err)
		}
		drv.completeAll(d, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pkts)), "ns/pkt")
}

func BenchmarkReceive(b *testing.B) {
	loop := newLoop(b)
	d := newDev(b, loop, &testDriver{t: b}, nil)
	rx := &collector{}
	d.SetReceiver(rx)
	_ = d.Open()
	b.ReportAllocs()
	for b.Loop() {
		buf, err := d.AllocBuffer()
		if err != nil {
			b.Fatal(err)
		}
		_ = buf.Reset(0)
		_ = buf.Append(ipv4Frame)
		if err := d.Receive(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// fuzzDevs are the devices FuzzReceive feeds: one per test link protocol,
// made once, since a device needs an event loop (an epoll fd and an
// eventfd).
var fuzzDevs struct {
	once         sync.Once
	ether, keyed *Device
	etherRx, kRx *rePusher
	err          error
	loop         *aio.Context
}

// rePusher is a Receiver that pushes the header it was given back onto the
// buffer and compares the result with the frame that arrived: for these
// link protocols the header is canonical, so decode then encode must give
// the same bytes.
type rePusher struct {
	t    *testing.T
	lp   LinkProtocol
	orig []byte
	got  bool
}

func (r *rePusher) Receive(d *Device, b *Buffer, proto uint16, dst, src []byte) {
	defer b.Free()
	r.got = true
	if len(dst) != r.lp.AddrLen() || len(src) != r.lp.AddrLen() {
		r.t.Fatalf("pulled addresses of %d and %d bytes", len(dst), len(src))
	}
	// Copy: dst and src may alias the headroom the push writes into.
	var a, s [keyAddrLen]byte
	da, sa := a[:copy(a[:], dst)], s[:copy(s[:], src)]
	if err := r.lp.Push(b, da, sa, proto); err != nil {
		r.t.Fatalf("re-push: %v", err)
	}
	if !bytes.Equal(b.Bytes(), r.orig) {
		r.t.Fatalf("re-encoded frame %x\ndiffers from     %x", b.Bytes(), r.orig)
	}
}

// FuzzReceive feeds arbitrary frames to a device through each test link
// protocol. Properties: no panic; every frame is counted under exactly one
// rx counter; the buffer always goes back to the pool; a frame that is
// delivered re-encodes to the same bytes.
func FuzzReceive(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzDevs.once.Do(func() {
			// The loop and devices live for the rest of the process: fuzz
			// inputs run on goroutines of their own, each acquiring the loop.
			loop, err := aio.New(aio.WithName("netdev-fuzz"))
			if err != nil {
				fuzzDevs.err = err
				return
			}
			fuzzDevs.loop = loop
			release := loop.Acquire()
			defer release()
			mk := func(name string, lp LinkProtocol, hw []byte) (*Device, *rePusher) {
				if fuzzDevs.err != nil {
					return nil, nil
				}
				d, err := New(Config{Name: name, Loop: loop, Link: lp, HWAddr: hw, MTU: 1500, Ops: &testDriver{}, Buffers: 2, TxQueueLen: 1})
				if err != nil {
					fuzzDevs.err = err
					return nil, nil
				}
				rp := &rePusher{lp: lp}
				d.SetReceiver(rp)
				if err := d.Open(); err != nil {
					fuzzDevs.err = err
				}
				return d, rp
			}
			fuzzDevs.ether, fuzzDevs.etherRx = mk("fuzz-ether", etherLink{}, hwA)
			kl := &keyLink{limit: 8}
			self := bytes.Repeat([]byte{0x0a}, keyAddrLen)
			peer := bytes.Repeat([]byte{0x0b}, keyAddrLen)
			_, _ = kl.key(self) // key 1
			_, _ = kl.key(peer) // key 2
			fuzzDevs.keyed, fuzzDevs.kRx = mk("fuzz-keyed", kl, self)
		})
		if fuzzDevs.err != nil {
			t.Fatal(fuzzDevs.err)
		}
		release := fuzzDevs.loop.Acquire()
		defer release()
		for _, dr := range []struct {
			d  *Device
			rp *rePusher
		}{{fuzzDevs.ether, fuzzDevs.etherRx}, {fuzzDevs.keyed, fuzzDevs.kRx}} {
			d, rp := dr.d, dr.rp
			b, err := d.AllocBuffer()
			if err != nil {
				t.Fatalf("%s: pool empty: a buffer leaked", d.Name())
			}
			_ = b.Reset(0)
			if len(raw) > b.Tailroom() {
				b.Free()
				continue
			}
			_ = b.Append(raw)
			before := rxTotal(d)
			rp.t, rp.orig, rp.got = t, raw, false
			err = d.Receive(b)
			if got := rxTotal(d) - before; got != 1 {
				t.Fatalf("%s: frame counted %d times", d.Name(), got)
			}
			if (err == nil) != rp.got {
				t.Fatalf("%s: Receive returned %v but delivered=%v", d.Name(), err, rp.got)
			}
			if free := d.Pool().Stats().Free; free != 2 {
				t.Fatalf("%s: %d of 2 buffers free after Receive", d.Name(), free)
			}
		}
	})
}

// rxTotal sums the counters a received frame can land in.
func rxTotal(d *Device) uint64 {
	s := d.Stats()
	return s.Load(RxOK) + s.Load(RxShort) + s.Load(RxBadHeader) + s.Load(RxUnknownKey) +
		s.Load(RxNoReceiver) + s.Load(RxDropped)
}
