//go:build linux && cgo && !noverbs

package verbs

import (
	"errors"
	"os"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/looptest"
)

// kernelHasVerbs reports whether the running kernel offers the verbs
// character devices at all; libibverbs looks for this same ABI file.
func kernelHasVerbs() bool {
	_, err := os.Stat("/sys/class/infiniband_verbs/abi_version")
	return err == nil
}

// TestProbeNoRDMA runs on machines whose kernel has no RDMA support (the
// project's development machines and CI): Probe and Open must say so with
// ib.ErrNoRDMA instead of reporting zero devices.
func TestProbeNoRDMA(t *testing.T) {
	if kernelHasVerbs() {
		t.Skip("this kernel supports RDMA; the no-RDMA path cannot be exercised here")
	}
	if !cBuiltWithRDMA() {
		t.Skip("built without the rdma-core headers: TestProbeWithoutHeaders covers this build")
	}
	devs, err := Probe()
	if !errors.Is(err, ib.ErrNoRDMA) {
		t.Fatalf("Probe() = %v, %v; want an error wrapping ib.ErrNoRDMA", devs, err)
	}
	if len(devs) != 0 {
		t.Errorf("Probe returned devices along with ErrNoRDMA: %v", devs)
	}
	loop := looptest.Home(t)
	if _, err := ib.Open(loop, DriverName, "rxe0"); !errors.Is(err, ib.ErrNoRDMA) {
		t.Errorf("ib.Open(verbs, rxe0) = %v, want ib.ErrNoRDMA", err)
	}
}

func TestRegistered(t *testing.T) {
	d, err := ib.LookupDriver(DriverName)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != DriverName || d.Probe == nil || d.Open == nil {
		t.Errorf("registered driver = %+v", d)
	}
}

func TestWRID(t *testing.T) {
	tests := []struct {
		handle uint32
		recv   bool
		idx    uint32
	}{
		{1, false, 0},
		{1, true, 0},
		{7, true, 0xFFFFFFFF},
		{maxHandle, false, 12345},
		{maxHandle, true, 1},
	}
	seen := map[uint64]bool{}
	for _, tc := range tests {
		id := wrID(tc.handle, tc.recv, tc.idx)
		if seen[id] {
			t.Errorf("wrID(%d, %v, %d) = %#x collides", tc.handle, tc.recv, tc.idx, id)
		}
		seen[id] = true
		h, r, i := splitWRID(id)
		if h != tc.handle || r != tc.recv || i != tc.idx {
			t.Errorf("splitWRID(wrID(%d, %v, %d)) = %d, %v, %d", tc.handle, tc.recv, tc.idx, h, r, i)
		}
	}
}

func TestPortRate(t *testing.T) {
	tests := []struct {
		width uint8
		speed uint32
		want  ib.Rate
	}{
		{1, 1, ib.Rate2_5Gbps},  // 1x SDR (what rxe reports on a 1 Gb/s NIC)
		{2, 1, ib.Rate10Gbps},   // 4x SDR
		{2, 4, ib.Rate40Gbps},   // 4x QDR
		{2, 16, ib.Rate56Gbps},  // 4x FDR
		{2, 32, ib.Rate100Gbps}, // 4x EDR
		{2, 64, ib.Rate200Gbps}, // 4x HDR
		{8, 4, ib.Rate120Gbps},  // 12x QDR
		{16, 32, 0},             // 2x EDR: 50 Gb/s has no code here
		{3, 1, 0},               // not a width code
		{2, 3, 0},               // not a speed code
	}
	for _, tc := range tests {
		if got := portRate(tc.width, tc.speed); got != tc.want {
			t.Errorf("portRate(%d, %d) = %v, want %v", tc.width, tc.speed, got, tc.want)
		}
	}
}

func TestStatusAndEventMapping(t *testing.T) {
	for in, want := range map[uint32]ib.Status{
		ibvWCSuccess: ib.StatusSuccess, ibvWCLocLenErr: ib.StatusLocalLength,
		ibvWCLocProtErr: ib.StatusLocalProtection, ibvWCWRFlushErr: ib.StatusFlushed,
		2: ib.StatusGeneral, 21: ib.StatusGeneral,
	} {
		if got := statusOf(in); got != want {
			t.Errorf("statusOf(%d) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[int]ib.EventType{
		ibvEventPortActive: ib.EventPortActive, ibvEventPortErr: ib.EventPortDown,
		ibvEventLIDChange: ib.EventLIDChange, ibvEventPKeyChange: ib.EventPKeyChange,
		ibvEventSMChange: ib.EventSMChange, ibvEventClientReregister: ib.EventClientReregister,
		ibvEventGIDChange: ib.EventGIDChange,
	} {
		if got, ok := eventType(in); !ok || got != want {
			t.Errorf("eventType(%d) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []int{0, 1, 2, 8, 15, 99} {
		if got, ok := eventType(in); ok {
			t.Errorf("eventType(%d) = %v, want not a port event", in, got)
		}
	}
}

func TestMcastSourceGID(t *testing.T) {
	ll := ib.GIDFromParts(0xfe80000000000000, 0x505400fffe770001)
	v4, _ := ib.ParseGID("::ffff:10.77.0.1")
	v6, _ := ib.ParseGID("2001:db8::1")
	gids := []gidEntry{
		{port: 1, index: 0, gid: ll},
		{port: 1, index: 1, gid: v4},
		{port: 1, index: 2, gid: v6},
		{port: 2, index: 0, gid: v4},
	}
	tests := []struct {
		port, want, got int
	}{
		{1, 0, 0}, // link-local kept
		{1, 1, 0}, // IPv4-mapped replaced by link-local
		{1, 2, 2}, // global IPv6 kept
		{1, 9, 0}, // unknown index: the link-local one
		{2, 0, 0}, // no link-local on the port: left alone
	}
	for _, tc := range tests {
		if got := mcastSourceGID(gids, tc.port, tc.want); got != tc.got {
			t.Errorf("mcastSourceGID(port %d, index %d) = %d, want %d", tc.port, tc.want, got, tc.got)
		}
	}
	if !isV4Mapped(v4) || isV4Mapped(ll) || isV4Mapped(v6) {
		t.Error("isV4Mapped misclassifies")
	}
}

// TestEnumsMatchC checks the libibverbs constants the Go code copies.
func TestEnumsMatchC(t *testing.T) {
	if !cBuiltWithRDMA() {
		t.Skip("built without the rdma-core headers: no C layout to compare with")
	}
	want := []int{
		ibvWCSuccess, ibvWCLocLenErr, ibvWCLocProtErr, ibvWCWRFlushErr, ibvWCFlagGRH,
		ibvEventPortActive, ibvEventPortErr, ibvEventLIDChange, ibvEventPKeyChange,
		ibvEventSMChange, ibvEventDeviceFatal, ibvEventClientReregister, ibvEventGIDChange,
		ibvLinkLayerUnspecified, ibvLinkLayerInfiniBand, ibvLinkLayerEthernet,
	}
	got := cEnumValues()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("constant %d: C value %d, Go value %d", i, got[i], want[i])
		}
	}
}
