//go:build linux && cgo && !noverbs

package verbs

// Tests against a real device. They run where IPOIBD_VERBS_DEVICE names
// one: inside the vmtest VMs (soft-RoCE, rxe0), or on a machine with an
// HCA. Elsewhere they skip.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// testDevice returns the device named by IPOIBD_VERBS_DEVICE or skips.
func testDevice(t testing.TB) string {
	name := os.Getenv("IPOIBD_VERBS_DEVICE")
	if name == "" {
		t.Skip("IPOIBD_VERBS_DEVICE is not set (go test ./vmtest runs these tests on soft-RoCE in a VM)")
	}
	return name
}

// rig is an open device on a loop the test goroutine holds.
type rig struct {
	t       testing.TB
	loop    *aio.Context
	dev     ib.Device
	release func()
	port    ib.PortAttr
}

func newRig(t testing.TB) *rig {
	name := testDevice(t)
	loop, err := aio.New(aio.WithName("verbs-test"))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, loop: loop, release: loop.Acquire()}
	t.Cleanup(func() {
		if r.dev != nil {
			if err := r.dev.Close(); err != nil {
				t.Errorf("device Close: %v", err)
			}
		}
		r.release()
		loop.Close()
	})
	r.dev, err = ib.Open(loop, DriverName, name)
	if err != nil {
		t.Fatal(err)
	}
	r.port, err = r.dev.QueryPort(1)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pollUntil runs the loop until cond holds or timeout passes.
func (r *rig) pollUntil(cond func() bool, timeout time.Duration) bool {
	expired := false
	tm := r.loop.NewTimer("test deadline", func() { expired = true })
	tm.Reset(timeout)
	defer tm.Stop()
	for !cond() {
		if expired {
			return false
		}
		r.loop.Poll(true)
	}
	return true
}

// endpoint is a CQ and a UD QP whose completions are collected.
type endpoint struct {
	r     *rig
	cq    ib.CompletionQueue
	qp    ib.QueuePair
	recvs []ib.Completion // copies, with Buf copied too
	sends []ib.Completion
	wcs   []ib.Completion
	ids   []uint64
}

const testQKey ib.QKey = 0x0B1B

func (r *rig) endpoint(sendDepth, recvDepth, bufSize int) *endpoint {
	r.t.Helper()
	cq, err := r.dev.CreateCQ(sendDepth + recvDepth)
	if err != nil {
		r.t.Fatal(err)
	}
	qp, err := r.dev.CreateUDQP(ib.QPConfig{
		Port: 1, QKey: testQKey, SendCQ: cq, RecvCQ: cq,
		SendDepth: sendDepth, RecvDepth: recvDepth, RecvBufSize: bufSize,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	e := &endpoint{r: r, cq: cq, qp: qp, wcs: make([]ib.Completion, 16)}
	cq.SetHandler(e.drain)
	return e
}

// drain is the CQ handler: poll until empty, keep copies, repost.
func (e *endpoint) drain() {
	for {
		n, err := e.cq.Poll(e.wcs)
		if err != nil {
			e.r.t.Errorf("Poll: %v", err)
			return
		}
		e.ids = e.ids[:0]
		for _, wc := range e.wcs[:n] {
			if wc.Kind == ib.WorkSend {
				e.sends = append(e.sends, wc)
				continue
			}
			c := wc
			c.Buf = bytes.Clone(wc.Buf[:max(wc.Len, 0)])
			e.recvs = append(e.recvs, c)
			if wc.Status == ib.StatusSuccess {
				e.ids = append(e.ids, wc.ID)
			}
		}
		if len(e.ids) > 0 {
			if err := e.qp.RepostRecv(e.ids...); err != nil {
				e.r.t.Errorf("RepostRecv: %v", err)
			}
		}
		if n < len(e.wcs) {
			return
		}
	}
}

func (e *endpoint) close() {
	if err := e.qp.Close(); err != nil {
		e.r.t.Errorf("QP Close: %v", err)
	}
	e.drain()
	if err := e.cq.Close(); err != nil {
		e.r.t.Errorf("CQ Close: %v", err)
	}
}

func (e *endpoint) send(ah ib.AddressHandle, qpn ib.QPN, id uint64, data ...[]byte) {
	e.r.t.Helper()
	n, err := e.qp.PostSend([]ib.SendWR{{ID: id, AH: ah, RemoteQPN: qpn, RemoteQKey: testQKey, Data: data}})
	if n != 1 || err != nil {
		e.r.t.Fatalf("PostSend = %d, %v", n, err)
	}
}

func TestDeviceProbe(t *testing.T) {
	name := testDevice(t)
	devs, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	var d *ib.DeviceInfo
	for i := range devs {
		if devs[i].Name == name {
			d = &devs[i]
		}
	}
	if d == nil {
		t.Fatalf("Probe() = %+v, no %s", devs, name)
	}
	t.Logf("%s: node GUID %v, netdev %q", d.Name, d.NodeGUID, d.NetDev)
	if d.Driver != DriverName || len(d.Ports) != 1 {
		t.Fatalf("device info %+v", d)
	}
	p := d.Ports[0]
	t.Logf("port 1: %v %v LID %v SM LID %v MTU %v/%v rate %v GIDs %v P_Keys %v",
		p.State, p.LinkLayer, p.LID, p.SMLID, p.ActiveMTU, p.MaxMTU, p.Rate, p.GIDs, p.PKeys)
	if p.Num != 1 || p.State != ib.PortActive {
		t.Errorf("port %d state %v, want 1 ACTIVE", p.Num, p.State)
	}
	if !p.ActiveMTU.Valid() || !p.MaxMTU.Valid() || p.ActiveMTU > p.MaxMTU {
		t.Errorf("MTU active %v max %v", p.ActiveMTU, p.MaxMTU)
	}
	if len(p.PKeys) == 0 || p.PKeys[0] != ib.PKeyDefault {
		t.Errorf("P_Keys %v, want the default partition first", p.PKeys)
	}
	if !strings.HasPrefix(name, "rxe") {
		return
	}
	// Soft-RoCE facts (SOFTROCE.md): Ethernet, LID 0, RoCE v2 GIDs
	// fe80::<EUI-64> at 0 and ::ffff:<IPv4> at 1, active MTU from the
	// NIC's (1024 for 1500).
	if p.LinkLayer != ib.LinkLayerEthernet || p.LID != 0 {
		t.Errorf("link layer %v LID %v, want Ethernet and 0", p.LinkLayer, p.LID)
	}
	if d.NetDev != "eth0" {
		t.Errorf("netdev %q, want eth0", d.NetDev)
	}
	if len(p.GIDs) < 2 || p.GIDs[0].SubnetPrefix() != 0xfe80000000000000 {
		t.Fatalf("GIDs %v, want fe80::... first", p.GIDs)
	}
	if ip := os.Getenv("VMTEST_IP"); ip != "" {
		want := ib.GID(netip.MustParseAddr("::ffff:" + ip).As16())
		if p.GIDs[1] != want {
			t.Errorf("GID 1 = %v, want %v", p.GIDs[1], want)
		}
	}
	if p.ActiveMTU != ib.MTU1024 {
		t.Errorf("active MTU %v, want 1024 on a 1500-byte NIC", p.ActiveMTU)
	}
}

func TestDeviceOpen(t *testing.T) {
	r := newRig(t)
	if r.dev.Driver() != DriverName || r.dev.NumPorts() != 1 || r.dev.NodeGUID() == 0 || r.dev.Loop() != r.loop {
		t.Errorf("device %s: driver %s ports %d GUID %v", r.dev.Name(), r.dev.Driver(), r.dev.NumPorts(), r.dev.NodeGUID())
	}
	if _, err := r.dev.QueryPort(2); !errors.Is(err, ib.ErrNoPort) {
		t.Errorf("QueryPort(2) = %v, want ErrNoPort", err)
	}
	if _, err := r.dev.CreateCQ(0); !errors.Is(err, ib.ErrBadConfig) {
		t.Errorf("CreateCQ(0) = %v, want ib.ErrBadConfig", err)
	}
	cq, err := r.dev.CreateCQ(8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.dev.CreateUDQP(ib.QPConfig{Port: 1, SendCQ: cq, RecvCQ: cq, SendDepth: 1, RecvDepth: 1, RecvBufSize: 10}); !errors.Is(err, ib.ErrBadConfig) {
		t.Errorf("CreateUDQP with 10-byte buffers = %v, want ib.ErrBadConfig", err)
	}
}

// loopbackAH is an address handle to this port's own GID at sgid.
func (r *rig) loopbackAH(sgid int) ib.AddressHandle {
	r.t.Helper()
	ah, err := r.dev.CreateAH(ib.AddressVector{Port: 1, GlobalRoute: true, DGID: r.port.GIDs[sgid], SGIDIndex: sgid, DLID: r.port.LID})
	if err != nil {
		r.t.Fatal(err)
	}
	return ah
}

func TestUDLoopback(t *testing.T) {
	r := newRig(t)
	e := r.endpoint(8, 8, ib.GRHSize+r.port.ActiveMTU.Bytes())
	defer e.close()
	// Subtests would run on other goroutines, off the loop this one
	// holds, so the cases run in line.
	sgids := []int{0}
	if len(r.port.GIDs) > 1 && isV4Mapped(r.port.GIDs[1]) {
		sgids = append(sgids, 1) // RoCE v2 over IPv4 too
	}
	for _, sgid := range sgids {
		e.recvs, e.sends = nil, nil
		ah := r.loopbackAH(sgid)
		hdr := []byte{0x08, 0x00, 0, 0}
		body := []byte(fmt.Sprintf("hello over sgid %d", sgid))
		e.send(ah, e.qp.QPN(), 42, hdr, body)
		if !r.pollUntil(func() bool { return len(e.recvs) > 0 && len(e.sends) > 0 }, 5*time.Second) {
			t.Fatalf("SGID %d: no loopback: %d receives, %d sends", sgid, len(e.recvs), len(e.sends))
		}
		if err := ah.Destroy(); err != nil {
			t.Error(err)
		}
		s := e.sends[0]
		if s.ID != 42 || s.Status != ib.StatusSuccess || s.Kind != ib.WorkSend || s.QPN != e.qp.QPN() {
			t.Errorf("SGID %d: send completion %+v", sgid, s)
		}
		c := e.recvs[0]
		if c.Status != ib.StatusSuccess || c.SrcQPN != e.qp.QPN() || !c.HasGRH {
			t.Fatalf("SGID %d: receive completion %+v", sgid, c)
		}
		if got, want := c.Payload(), append(hdr, body...); !bytes.Equal(got, want) {
			t.Errorf("SGID %d: payload %q, want %q", sgid, got, want)
		}
		g := r.port.GIDs[sgid]
		if isV4Mapped(g) {
			// RoCE v2 over IPv4: the IPv4 header sits at offset 20 of
			// the GRH area, addresses at 12 and 16 within it.
			ip := c.Buf[20:40]
			if ip[0] != 0x45 || !bytes.Equal(ip[12:16], g[12:]) || !bytes.Equal(ip[16:20], g[12:]) {
				t.Errorf("SGID %d: IPv4 header in the GRH area: % x", sgid, ip)
			}
			t.Logf("SGID %d (%v): IPv4 header in the GRH area: % x", sgid, g, ip)
			continue
		}
		var grh ib.GRH
		if err := grh.Decode(c.Buf); err != nil {
			t.Fatal(err)
		}
		if grh.IPVer != 6 || grh.SGID != g || grh.DGID != g {
			t.Errorf("SGID %d: GRH %+v, want version 6 from and to %v", sgid, grh, g)
		}
		t.Logf("SGID %d (%v): GRH % x", sgid, g, c.Buf[:ib.GRHSize])
	}
}

// igmp6Has reports whether /proc/net/igmp6 lists group on any interface.
func igmp6Has(t *testing.T, group ib.GID) bool {
	b, err := os.ReadFile("/proc/net/igmp6")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, []byte(fmt.Sprintf("%x", group[:])))
}

func TestMulticast(t *testing.T) {
	r := newRig(t)
	e := r.endpoint(8, 8, ib.GRHSize+r.port.ActiveMTU.Bytes())
	defer e.close()
	mgid := ipoibBroadcastMGID(t)
	ethernet := r.port.LinkLayer == ib.LinkLayerEthernet
	if err := e.qp.AttachMcast(mgid, 0xC000); err != nil {
		t.Fatal(err)
	}
	if ethernet && !igmp6Has(t, mgid) {
		t.Errorf("after AttachMcast, /proc/net/igmp6 does not list %v", mgid)
	}
	// On RoCE, sent from the IPv4-mapped GID on purpose: CreateAH must
	// switch to the link-local one, or nothing reaches the wire.
	sgid := 0
	if ethernet && len(r.port.GIDs) > 1 && isV4Mapped(r.port.GIDs[1]) {
		sgid = 1
	}
	ah, err := r.dev.CreateAH(ib.AddressVector{Port: 1, DLID: 0xC000, DGID: mgid, SGIDIndex: sgid})
	if err != nil {
		t.Fatal(err)
	}
	defer ah.Destroy()
	e.send(ah, ib.QPNMulticast, 7, []byte("to the broadcast group"))
	if !r.pollUntil(func() bool { return len(e.sends) > 0 }, 5*time.Second) {
		t.Fatal("multicast send did not complete")
	}
	if e.sends[0].Status != ib.StatusSuccess {
		t.Errorf("multicast send %+v", e.sends[0])
	}
	if r.pollUntil(func() bool { return len(e.recvs) > 0 }, 2*time.Second) {
		c := e.recvs[0]
		var grh ib.GRH
		_ = grh.Decode(c.Buf)
		t.Logf("multicast looped back: %q from QPN %v, GRH %v -> %v", c.Payload(), c.SrcQPN, grh.SGID, grh.DGID)
		if string(c.Payload()) != "to the broadcast group" || grh.DGID != mgid || grh.SGID != r.port.GIDs[0] {
			t.Errorf("looped-back multicast %+v, GRH %+v", c, grh)
		}
	} else {
		t.Log("the device does not loop multicast back to the sending node; delivery is tested between two VMs")
	}
	if err := e.qp.DetachMcast(mgid, 0xC000); err != nil {
		t.Fatal(err)
	}
	if ethernet && igmp6Has(t, mgid) {
		t.Errorf("after DetachMcast, /proc/net/igmp6 still lists %v", mgid)
	}
	if err := e.qp.DetachMcast(mgid, 0xC000); !errors.Is(err, ib.ErrBadConfig) {
		t.Errorf("second DetachMcast = %v, want ib.ErrBadConfig", err)
	}
}

func TestOpenMADPort(t *testing.T) {
	r := newRig(t)
	m, err := r.dev.OpenMADPort(1)
	if r.port.LinkLayer == ib.LinkLayerEthernet {
		if !errors.Is(err, ErrNoSA) {
			t.Fatalf("OpenMADPort on RoCE = %v, %v; want ErrNoSA", m, err)
		}
		t.Logf("RoCE: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

func TestSendErrorsAndFlush(t *testing.T) {
	r := newRig(t)
	e := r.endpoint(2, 4, ib.GRHSize+256)
	ah := r.loopbackAH(0)
	other := newRig(t)
	foreign := other.loopbackAH(0)
	// Handlers stay off so completions pile up and slots stay busy.
	e.cq.SetHandler(nil)
	wr := func(id uint64, a ib.AddressHandle, n int) ib.SendWR {
		return ib.SendWR{ID: id, AH: a, RemoteQPN: e.qp.QPN(), RemoteQKey: testQKey, Data: [][]byte{make([]byte, n)}}
	}
	n, err := e.qp.PostSend([]ib.SendWR{wr(1, ah, 10), wr(2, ah, 4096+1), wr(3, ah, 10), wr(4, ah, 10)})
	if n != 3 || !errors.Is(err, ib.ErrQueueFull) {
		t.Errorf("PostSend past the send depth = %d, %v; want 3, ErrQueueFull", n, err)
	}
	if n, err := e.qp.PostSend([]ib.SendWR{wr(5, foreign, 10)}); n != 0 || !errors.Is(err, ErrInvalidWR) {
		t.Errorf("PostSend with another device's AH = %d, %v; want 0, ErrInvalidWR", n, err)
	}
	if n, err := e.qp.PostSend([]ib.SendWR{{ID: 6, AH: ah, RemoteQPN: 1 << 24}}); n != 0 || !errors.Is(err, ErrInvalidWR) {
		t.Errorf("PostSend to QPN 1<<24 = %d, %v; want 0, ErrInvalidWR", n, err)
	}
	if err := e.qp.RepostRecv(0); !errors.Is(err, ErrInvalidWR) {
		t.Errorf("RepostRecv of a posted buffer = %v, want ErrInvalidWR", err)
	}
	e.cq.SetHandler(e.drain)
	if !r.pollUntil(func() bool { return len(e.sends) == 3 && len(e.recvs) == 2 }, 5*time.Second) {
		t.Fatalf("completions: sends %+v receives %d", e.sends, len(e.recvs))
	}
	status := map[uint64]ib.Status{}
	for _, s := range e.sends {
		status[s.ID] = s.Status
	}
	if status[1] != ib.StatusSuccess || status[2] != ib.StatusLocalLength || status[3] != ib.StatusSuccess {
		t.Errorf("send statuses %v, want 1 and 3 success, 2 local length", status)
	}
	if err := e.cq.Close(); !errors.Is(err, ErrBusy) {
		t.Errorf("CQ Close while the QP uses it = %v, want ErrBusy", err)
	}
	// Closing the QP flushes the four posted receive buffers.
	e.recvs = nil
	if err := e.qp.Close(); err != nil {
		t.Fatal(err)
	}
	if !r.pollUntil(func() bool { return len(e.recvs) == 4 }, 2*time.Second) {
		t.Fatalf("%d flushed receives, want 4", len(e.recvs))
	}
	for _, c := range e.recvs {
		if c.Status != ib.StatusFlushed {
			t.Errorf("after Close: %+v, want flushed", c)
		}
	}
	if _, err := e.qp.PostSend([]ib.SendWR{wr(9, ah, 1)}); !errors.Is(err, ib.ErrClosed) {
		t.Errorf("PostSend after Close = %v, want ErrClosed", err)
	}
	if err := e.cq.Close(); err != nil {
		t.Errorf("CQ Close: %v", err)
	}
}

// TestSteadyStateAllocs checks the data path allocates nothing once warm:
// post a send to self, poll its two completions, repost the buffer.
func TestSteadyStateAllocs(t *testing.T) {
	r := newRig(t)
	e := r.endpoint(4, 4, ib.GRHSize+512)
	defer e.close()
	e.cq.SetHandler(nil)
	ah := r.loopbackAH(0)
	wrs := []ib.SendWR{{ID: 1, AH: ah, RemoteQPN: e.qp.QPN(), RemoteQKey: testQKey, Data: [][]byte{make([]byte, 64)}}}
	wcs := make([]ib.Completion, 4)
	ids := make([]uint64, 0, 4)
	round := func() {
		if n, err := e.qp.PostSend(wrs); n != 1 || err != nil {
			t.Fatalf("PostSend = %d, %v", n, err)
		}
		got := 0
		for deadline := time.Now().Add(5 * time.Second); got < 2; {
			n, err := e.cq.Poll(wcs)
			if err != nil {
				t.Fatal(err)
			}
			for _, wc := range wcs[:n] {
				got++
				if wc.Kind == ib.WorkRecv {
					ids = append(ids[:0], wc.ID)
					if err := e.qp.RepostRecv(ids...); err != nil {
						t.Fatal(err)
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("loopback stalled")
			}
		}
	}
	round()
	if a := testing.AllocsPerRun(50, round); a != 0 {
		t.Errorf("%v allocations per send/receive round, want 0", a)
	}
}

// TestAsyncEvents takes the NIC under rxe0 down and up: the device must
// report the port going down and coming back through the async event fd.
func TestAsyncEvents(t *testing.T) {
	r := newRig(t)
	info, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	netdev := ""
	for _, d := range info {
		if d.Name == r.dev.Name() {
			netdev = d.NetDev
		}
	}
	ipTool, err := exec.LookPath("ip")
	if netdev == "" || err != nil || os.Getenv("VMTEST_IP") == "" {
		t.Skip("needs a RoCE device in a vmtest VM (it takes the NIC down)")
	}
	var events []ib.Event
	r.dev.SetEventHandler(func(ev ib.Event) { events = append(events, ev) })
	has := func(typ ib.EventType) func() bool {
		return func() bool {
			for _, ev := range events {
				if ev.Type == typ && ev.Port == 1 {
					return true
				}
			}
			return false
		}
	}
	if out, err := exec.Command(ipTool, "link", "set", netdev, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set down: %v: %s", err, out)
	}
	if !r.pollUntil(has(ib.EventPortDown), 5*time.Second) {
		t.Errorf("no port-down event; got %v", events)
	}
	if out, err := exec.Command(ipTool, "link", "set", netdev, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set up: %v: %s", err, out)
	}
	if !r.pollUntil(has(ib.EventPortActive), 5*time.Second) {
		t.Errorf("no port-active event; got %v", events)
	}
	t.Logf("events: %v", events)
	if !r.pollUntil(func() bool {
		p, err := r.dev.QueryPort(1)
		return err == nil && p.State == ib.PortActive
	}, 5*time.Second) {
		t.Error("port not ACTIVE again")
	}
}

func BenchmarkUDLoopback(b *testing.B) {
	r := newRig(b)
	e := r.endpoint(64, 64, ib.GRHSize+2048)
	defer e.close()
	e.cq.SetHandler(nil)
	ah := r.loopbackAH(0)
	const batch = 16
	wrs := make([]ib.SendWR, batch)
	payload := make([]byte, 1000)
	for i := range wrs {
		wrs[i] = ib.SendWR{ID: uint64(i), AH: ah, RemoteQPN: e.qp.QPN(), RemoteQKey: testQKey, Data: [][]byte{payload}}
	}
	wcs := make([]ib.Completion, 64)
	ids := make([]uint64, 0, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload) * batch))
	for b.Loop() {
		if n, err := e.qp.PostSend(wrs); n != batch || err != nil {
			b.Fatalf("PostSend = %d, %v", n, err)
		}
		for got := 0; got < 2*batch; {
			n, err := e.cq.Poll(wcs)
			if err != nil {
				b.Fatal(err)
			}
			ids = ids[:0]
			for _, wc := range wcs[:n] {
				if wc.Kind == ib.WorkRecv {
					ids = append(ids, wc.ID)
				}
			}
			if len(ids) > 0 {
				if err := e.qp.RepostRecv(ids...); err != nil {
					b.Fatal(err)
				}
			}
			got += n
		}
	}
}

// TestMADPortPlumbing opens a umad agent on port 1 even when it is RoCE
// (rxe has umad files for the connection manager), watches its fd on the
// loop and closes it: libibumad's open and register, the non-blocking fd
// and unregistering all run for real. Sending needs an InfiniBand port.
func TestMADPortPlumbing(t *testing.T) {
	r := newRig(t)
	d := r.dev.(*device)
	m, err := d.openMADPort(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("umad agent %d on fd %d", m.agent, m.fd)
	m.SetHandler(func(ib.MADAddress, []byte) {})
	r.loop.Poll(false)
	if err := m.Send(ib.MADAddress{QPN: ib.QPNGSI, QKey: ib.QKeyGSI}, make([]byte, 10)); !errors.Is(err, ib.ErrMADLength) {
		t.Errorf("Send of 10 bytes = %v, want ErrMADLength", err)
	}
	if err := m.Send(ib.MADAddress{QPN: ib.QPNMask + 1, QKey: ib.QKeyGSI}, make([]byte, ib.MADLen)); !errors.Is(err, ErrInvalidWR) || !errors.Is(err, ib.ErrBadConfig) {
		t.Errorf("Send to QPN 1<<24 = %v, want ErrInvalidWR and ib.ErrBadConfig", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); !errors.Is(err, ib.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	m2, err := d.openMADPort(1)
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
}

// ipoibBroadcastMGID is the group the kernel's IPoIB joins on the
// default partition (RFC 4391 section 4); the multicast tests attach to it
// because soft-RoCE peers in the VMs already use it.
func ipoibBroadcastMGID(t testing.TB) ib.GID {
	t.Helper()
	g, err := ib.ParseGID("ff12:401b:ffff::ffff:ffff")
	if err != nil {
		t.Fatal(err)
	}
	return g
}
