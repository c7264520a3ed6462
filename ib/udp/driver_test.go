//go:build linux

package udp

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/drivertest"
	"github.com/ipoibd/ipoibd/internal/looptest"
)

// pair is two udp devices opened on one interface, each with a QP, on a
// loop the test goroutine is home on.
type pair struct {
	t     testing.TB
	loop  *aio.Context
	devs  [2]ib.Device
	cqs   [2]ib.CompletionQueue
	qps   [2]ib.QueuePair
	wcs   []ib.Completion
	qkeys [2]ib.QKey
}

// openPair opens iface twice; it skips when raw sockets are not allowed.
func openPair(t testing.TB, iface string) *pair {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("SKIP: raw sockets need root (CAP_NET_RAW)")
	}
	loop := looptest.Home(t, aio.WithName("udp-test"))
	p := &pair{t: t, loop: loop, wcs: make([]ib.Completion, 16), qkeys: [2]ib.QKey{0x0B1B, 0x0B1B}}
	for i := range p.devs {
		dev, err := ib.Open(loop, DriverName, iface)
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("SKIP: cannot open raw sockets here (needs CAP_NET_RAW): %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		p.devs[i] = dev
		cq, err := dev.CreateCQ(64)
		if err != nil {
			t.Fatal(err)
		}
		q, err := dev.CreateUDQP(ib.QPConfig{Port: 1, QKey: p.qkeys[i], SendCQ: cq, RecvCQ: cq,
			SendDepth: 16, RecvDepth: 16, RecvBufSize: ib.GRHSize + 2048})
		if err != nil {
			t.Fatal(err)
		}
		p.cqs[i], p.qps[i] = cq, q
	}
	return p
}

// lastGID returns the last GID of device 0's port: on lo, the
// IPv4-mapped GID of 127.0.0.1.
func (p *pair) lastGID() ib.GID {
	p.t.Helper()
	attr, err := p.devs[0].QueryPort(1)
	if err != nil {
		p.t.Fatal(err)
	}
	return attr.GIDs[len(attr.GIDs)-1]
}

// wait polls the loop until cq i has a completion of kind k, or fails
// after a second.
func (p *pair) wait(i int, k ib.WorkKind) *ib.Completion {
	p.t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		p.loop.Poll(false)
		n, err := p.cqs[i].Poll(p.wcs[:1])
		if err != nil {
			p.t.Fatal(err)
		}
		if n == 1 && p.wcs[0].Kind == k {
			return &p.wcs[0]
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// TestUnicastLoopback sends UD datagrams between two devices on the
// loopback interface over IPv4: the payload and the GRH arrive, a wrong
// Q_Key is dropped and counted, and so is a corrupted ICRC.
func TestUnicastLoopback(t *testing.T) {
	p := openPair(t, "lo")
	gid := p.lastGID()
	if want := (ib.GID{10: 0xff, 11: 0xff, 12: 127, 15: 1}); gid != want {
		t.Fatalf("lo GID %v, want %v", gid, want)
	}
	ah, err := p.devs[0].CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: gid})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello over RoCEv2, five bytes of pad?")
	send := func(qkey ib.QKey) {
		t.Helper()
		n, err := p.qps[0].PostSend([]ib.SendWR{{ID: 7, AH: ah, RemoteQPN: p.qps[1].QPN(), RemoteQKey: qkey, Data: [][]byte{msg[:5], msg[5:]}}})
		if n != 1 || err != nil {
			t.Fatalf("PostSend: %d, %v", n, err)
		}
		if wc := p.wait(0, ib.WorkSend); wc == nil || wc.Status != ib.StatusSuccess || wc.ID != 7 {
			t.Fatalf("send completion %+v", wc)
		}
	}
	send(0x0B1B)
	wc := p.wait(1, ib.WorkRecv)
	if wc == nil {
		t.Fatalf("nothing received; counters %+v", p.devs[1].(*device).Counters())
	}
	if !bytes.Equal(wc.Payload(), msg) || wc.SrcQPN != p.qps[0].QPN() || !wc.HasGRH {
		t.Fatalf("received %q from QP %v (GRH %v), want %q from %v", wc.Payload(), wc.SrcQPN, wc.HasGRH, msg, p.qps[0].QPN())
	}
	var grh ib.GRH
	_ = grh.Decode(wc.Buf)
	if grh.SGID != gid || grh.DGID != gid {
		t.Errorf("GRH %v -> %v, want %v both ways", grh.SGID, grh.DGID, gid)
	}
	if err := p.qps[1].RepostRecv(wc.ID); err != nil {
		t.Fatal(err)
	}
	before := p.devs[1].(*device).Counters()
	send(0x1234)
	if wc := p.wait(1, ib.WorkRecv); wc != nil {
		t.Fatalf("a datagram with the wrong Q_Key arrived: %+v", wc)
	}
	if c := p.devs[1].(*device).Counters(); c.RxQKey != before.RxQKey+1 {
		t.Errorf("Q_Key drops %d, want %d", c.RxQKey, before.RxQKey+1)
	}
}

// plainSender opens an ordinary UDP socket on 127.0.0.1 to send RoCE v2
// datagrams from, closed when the test ends, and returns it with its
// source port (which the ICRC covers).
func plainSender(t *testing.T) (int, uint16) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// Don't Fragment, so the kernel sends IPv4 ID 0, which the ICRC of
	// encodeDatagram assumes (without it every datagram fails the ICRC).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, uint16(sa.(*unix.SockaddrInet4).Port)
}

// TestReceiveChecks sends datagrams that an HCA would drop straight from
// a UDP socket: each is dropped, counted under its reason, and the QP
// receives nothing; a good one then still arrives.
func TestReceiveChecks(t *testing.T) {
	p := openPair(t, "lo")
	d := p.devs[1].(*device)
	qpn := p.qps[1].QPN()
	fd, srcPort := plainSender(t)
	good := ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: qpn}
	tests := []struct {
		name    string
		bth     ib.BTH
		qkey    ib.QKey
		corrupt bool
		counter func(Counters) uint64
	}{
		{"bad ICRC", good, 0x0B1B, true, func(c Counters) uint64 { return c.RxBadICRC }},
		{"other partition", ib.BTH{OpCode: ib.OpUDSendOnly, PKey: 0x8001, DestQP: qpn}, 0x0B1B, false, func(c Counters) uint64 { return c.RxPKey }},
		{"wrong Q_Key", good, 0x1234, false, func(c Counters) uint64 { return c.RxQKey }},
		{"unknown QPN", ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: qpn ^ 1}, 0x0B1B, false, func(c Counters) uint64 { return c.RxNoQP }},
		{"RC SEND", ib.BTH{OpCode: 0x04, PKey: ib.PKeyDefault, DestQP: qpn}, 0x0B1B, false, func(c Counters) uint64 { return c.RxNotUD }},
		{"good", good, 0x0B1B, false, func(c Counters) uint64 { return c.RxPackets }},
	}
	for _, tt := range tests {
		buf := make([]byte, 256)
		h := sendHeader{Src: d.src4, Dst: d.src4, SrcPort: srcPort}
		out, err := encodeDatagram(buf, &h, &tt.bth, &ib.DETH{QKey: tt.qkey, SrcQP: 0x99}, [][]byte{[]byte("payload!")})
		if err != nil {
			t.Fatal(err)
		}
		if tt.corrupt {
			out[len(out)-1] ^= 0xFF
		}
		before := tt.counter(d.Counters())
		if err := unix.Sendto(fd, out, 0, &unix.SockaddrInet4{Port: ib.RoCEv2Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		// The counter is the signal; then the CQ must hold nothing (or,
		// for the good datagram, its completion).
		for deadline := time.Now().Add(time.Second); tt.counter(d.Counters()) == before && time.Now().Before(deadline); {
			p.loop.Poll(false)
			time.Sleep(time.Millisecond)
		}
		var wc *ib.Completion
		if n, _ := p.cqs[1].Poll(p.wcs[:1]); n == 1 {
			wc = &p.wcs[0]
		}
		if got := tt.counter(d.Counters()); got != before+1 {
			t.Errorf("%s: counter %d, want %d (%+v)", tt.name, got, before+1, d.Counters())
		}
		if tt.name == "good" {
			if wc == nil || string(wc.Payload()) != "payload!" {
				t.Errorf("good datagram: completion %+v", wc)
			}
		} else if wc != nil {
			t.Errorf("%s: delivered %+v", tt.name, wc)
		}
	}
}

// TestSocketDrops overflows the raw socket of a device whose loop is not
// reading, and checks that every datagram is accounted for: delivered,
// dropped for want of a posted buffer, or dropped by the kernel and
// counted from the socket's SO_RXQ_OVFL report (which comes with the next
// datagram that gets through: a last one is sent once the burst is read).
func TestSocketDrops(t *testing.T) {
	p := openPair(t, "lo")
	d := p.devs[1].(*device)
	// The smallest buffer the kernel allows: a few datagrams.
	if err := unix.SetsockoptInt(d.rx4, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
		t.Fatal(err)
	}
	fd, srcPort := plainSender(t)
	h := sendHeader{Src: d.src4, Dst: d.src4, SrcPort: srcPort}
	out, err := encodeDatagram(make([]byte, 1200), &h, &ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: p.qps[1].QPN()},
		&ib.DETH{QKey: 0x0B1B, SrcQP: 0x99}, [][]byte{bytes.Repeat([]byte{1}, 1000)})
	if err != nil {
		t.Fatal(err)
	}
	to := &unix.SockaddrInet4{Port: ib.RoCEv2Port, Addr: [4]byte{127, 0, 0, 1}}
	// drain runs the loop until its counters stop moving.
	drain := func() Counters {
		c := d.Counters()
		for still := 0; still < 20; {
			p.loop.Poll(false)
			time.Sleep(time.Millisecond)
			if now := d.Counters(); now != c {
				c, still = now, 0
			} else {
				still++
			}
		}
		return c
	}
	// Datagrams the socket's filter refuses (another port) are not drops.
	other := &unix.SockaddrInet4{Port: ib.RoCEv2Port + 1, Addr: [4]byte{127, 0, 0, 1}}
	for range 50 {
		if err := unix.Sendto(fd, out, 0, other); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Sendto(fd, out, 0, to); err != nil {
		t.Fatal(err)
	}
	before := drain()
	if before.RxSocketDrops != 0 || before.RxPackets != 1 {
		t.Fatalf("after 50 datagrams for another port and 1 for ours: %+v; want 1 delivered and no drop", before)
	}
	const burst = 200
	for range burst {
		if err := unix.Sendto(fd, out, 0, to); err != nil {
			t.Fatal(err)
		}
	}
	drain()
	if err := unix.Sendto(fd, out, 0, to); err != nil {
		t.Fatal(err)
	}
	c := drain()
	got := func(c Counters) uint64 { return c.RxPackets + c.RxNoBuffer + c.RxSocketDrops }
	t.Logf("of %d datagrams: %d delivered, %d found no buffer, %d dropped by the kernel",
		burst+1, c.RxPackets-before.RxPackets, c.RxNoBuffer-before.RxNoBuffer, c.RxSocketDrops-before.RxSocketDrops)
	if c.RxSocketDrops == before.RxSocketDrops {
		t.Fatalf("no kernel drop counted, though the socket holds a few datagrams and %d came at once: %+v", burst, c)
	}
	if n := got(c) - got(before); n != burst+1 {
		t.Errorf("%d datagrams accounted for, %d sent: %+v", n, burst+1, c)
	}
}

// BenchmarkUDRoundTrip measures the driver alone on the loopback
// interface: one 1024-byte UD send, its receive completion and the
// repost, per op. The data path allocates nothing per datagram: allocs/op
// must read 0.
func BenchmarkUDRoundTrip(b *testing.B) {
	p := openPair(b, "lo")
	ah, err := p.devs[0].CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: p.lastGID()})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1024)
	wrs := []ib.SendWR{{AH: ah, RemoteQPN: p.qps[1].QPN(), RemoteQKey: 0x0B1B, Data: [][]byte{payload}}}
	wcs := make([]ib.Completion, 4)
	ids := make([]uint64, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for range b.N {
		if n, err := p.qps[0].PostSend(wrs); n != 1 {
			b.Fatal(err)
		}
		got := false
		for !got {
			p.loop.Poll(true)
			for _, cq := range p.cqs {
				n, _ := cq.Poll(wcs)
				for _, wc := range wcs[:n] {
					if wc.Kind == ib.WorkRecv {
						got = true
						ids[0] = wc.ID
						if err := p.qps[1].RepostRecv(ids...); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
		}
	}
}

// TestPostSendRefusals holds PostSend to drivertest's check, with the udp
// driver's own rule besides ib's: a multicast DGID goes to
// ib.QPNMulticast and a unicast one never does. A QP and a handle always
// share the device's one port, so ib's port check cannot fail here.
func TestPostSendRefusals(t *testing.T) {
	p := openPair(t, "lo")
	mkAH := func(dev ib.Device, dgid ib.GID) ib.AddressHandle {
		t.Helper()
		ah, err := dev.CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: dgid})
		if err != nil {
			t.Fatal(err)
		}
		return ah
	}
	to := ib.SendWR{ID: 1, AH: mkAH(p.devs[0], p.lastGID()), RemoteQPN: p.qps[1].QPN(), RemoteQKey: 0x0B1B, Data: [][]byte{[]byte("x")}}
	destroyed := mkAH(p.devs[0], p.lastGID())
	if err := destroyed.Destroy(); err != nil {
		t.Fatal(err)
	}
	cases := []drivertest.Refusal{
		{Name: "no handle", QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "handle of another device", AH: mkAH(p.devs[1], p.lastGID()), QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "destroyed handle", AH: destroyed, QPN: to.RemoteQPN, Want: ErrInvalidWR},
		{Name: "QPN past 24 bits", AH: to.AH, QPN: ib.QPNMask + 1, Want: ErrInvalidWR},
		{Name: "unicast DGID to the multicast QPN", AH: to.AH, QPN: ib.QPNMulticast, Want: ErrInvalidWR},
	}
	// A group address needs IPv6 on the interface.
	switch mc, err := p.devs[0].CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: ib.GID{0: 0xff, 1: 0x12, 15: 1}}); {
	case err == nil:
		cases = append(cases, drivertest.Refusal{Name: "multicast DGID to a unicast QPN", AH: mc, QPN: to.RemoteQPN, Want: ErrInvalidWR})
	case errors.Is(err, ErrNoIPv6):
		t.Logf("no multicast case: %v", err)
	default:
		t.Fatal(err)
	}
	drivertest.PostSendRefusals(t, p.qps[0], to, cases, func() {
		for range 4 {
			p.loop.Poll(false)
		}
		for _, cq := range p.cqs {
			for n, _ := cq.Poll(p.wcs); n > 0; n, _ = cq.Poll(p.wcs) {
			}
		}
	})
}
