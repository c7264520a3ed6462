package ipoibd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/streamtest"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/stack"
)

// TestConfigErrors checks that every unusable Config is refused by New
// with ErrConfig (or the driver table's error) and a message naming the
// field, before anything is opened.
func TestConfigErrors(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no device", Config{DHCP: true}, "no Device"},
		{"no address", Config{Device: "sim:x/host0"}, "no address"},
		{"both", Config{Device: "sim:x/host0", DHCP: true, Addr: p("10.0.0.1/24")}, "choose one"},
		{"ipv6", Config{Device: "sim:x/host0", Addr: p("fd00::1/64")}, "not an IPv4 address"},
		{"subnet address", Config{Device: "sim:x/host0", Addr: p("10.0.0.0/24")}, "subnet's own address"},
		{"/31", Config{Device: "sim:x/host0", Addr: p("10.0.0.1/31")}, "prefix of /1 to /30"},
		{"gateway outside", Config{Device: "sim:x/host0", Addr: p("10.0.0.1/24"), Gateway: a("10.0.1.1")}, "not inside"},
		{"gateway without address", Config{Device: "sim:x/host0", DHCP: true, Gateway: a("10.0.1.1")}, "not inside"},
		{"server without address", Config{Device: "sim:x/host0", DHCP: true, DHCPServer: &DHCPServer{}}, "needs a static address"},
		{"pool outside", Config{Device: "sim:x/host0", Addr: p("10.0.0.1/24"), DHCPServer: &DHCPServer{PoolStart: a("10.0.0.10"), PoolEnd: a("10.0.1.10")}}, "inside 10.0.0.0/24"},
		{"pool reversed", Config{Device: "sim:x/host0", Addr: p("10.0.0.1/24"), DHCPServer: &DHCPServer{PoolStart: a("10.0.0.10"), PoolEnd: a("10.0.0.5")}}, "ascending"},
		{"pool half", Config{Device: "sim:x/host0", Addr: p("10.0.0.1/24"), DHCPServer: &DHCPServer{PoolStart: a("10.0.0.10")}}, "both ends"},
		{"port", Config{Device: "sim:x/host0", DHCP: true, Port: 300}, "port 300"},
		{"gid index", Config{Device: "sim:x/host0", DHCP: true, GIDIndex: -1}, "GID index"},
		{"two pcaps", Config{Device: "sim:x/host0", DHCP: true, PcapPath: "x", Pcap: &strings.Builder{}}, "choose one"},
		{"unknown driver", Config{Device: "nosuch:dev", DHCP: true}, "nosuch"},
		{"unknown device", Config{Device: "nosuchdevice0", DHCP: true}, `unknown device "nosuchdevice0"`},
		{"no fabric", Config{Device: "sim:nofabric/host0", DHCP: true}, "no live fabric"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, err := New(tt.cfg)
			if err == nil {
				i.Close()
				t.Fatalf("New accepted %+v", tt.cfg)
			}
			var se *StepError
			if !errors.As(err, &se) || se.Step != StepOpen {
				t.Errorf("error %v is not a StepError of StepOpen", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestLifecycle walks an Interface through New, the calls that need the
// stack (refused with ErrNotUp), Up, the same calls working, a bad network
// refused, and Close (after which they say ErrClosed), on a simulated
// fabric.
func TestLifecycle(t *testing.T) {
	fabric, err := NewSimFabric(SimConfig{Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer fabric.Close()
	var events []EventKind
	i, err := New(Config{Device: fabric.Device(0), Name: "life0", Addr: netip.MustParsePrefix("10.9.0.1/24"),
		OnEvent: func(ev Event) { events = append(events, ev.Kind) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := i.Dial("tcp", "10.9.0.2:1"); !errors.Is(err, ErrNotUp) {
		t.Errorf("Dial before Up: %v, want ErrNotUp", err)
	}
	if a := i.Addr(); a.IsValid() {
		t.Errorf("Addr before Up = %v", a)
	}
	if s := i.Stats(); s.Interface != "life0" || len(s.Netdev) == 0 {
		t.Errorf("Stats before Up = %+v, want the link's counters", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := i.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := i.Up(ctx); err != nil {
		t.Errorf("second Up: %v", err)
	}
	if got, want := events, []EventKind{EventJoining, EventLinkUp, EventAddress}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if a := i.Addr(); a != netip.MustParsePrefix("10.9.0.1/24") {
		t.Errorf("Addr = %v", a)
	}
	if up, reason := i.LinkState(); !up || i.MTU() != 2044 || !strings.HasPrefix(i.HWAddr(), "00:") {
		t.Errorf("link up %v (%v), MTU %d, hw %s", up, reason, i.MTU(), i.HWAddr())
	}
	for _, bad := range [][2]string{{"tcp6", "10.9.0.2:1"}, {"tcp", "host.example:1"}, {"tcp", "[fd00::1]:1"}, {"tcp", "10.9.0.2"}, {"tcp", "10.9.0.2:99999"}} {
		if _, err := i.Dial(bad[0], bad[1]); !errors.Is(err, stack.ErrBadAddress) {
			t.Errorf("Dial(%q, %q): %v, want ErrBadAddress", bad[0], bad[1], err)
		}
	}
	if _, err := i.Listen("udp", ":1"); !errors.Is(err, stack.ErrBadAddress) {
		t.Errorf("Listen udp: %v", err)
	}
	if _, err := i.ListenPacket("tcp", ":1"); !errors.Is(err, stack.ErrBadAddress) {
		t.Errorf("ListenPacket tcp: %v", err)
	}
	p, err := i.Peers()
	if err != nil || !p.Group.Joined {
		t.Errorf("Peers: %+v, %v", p, err)
	}
	members := func() (n int) {
		err := fabric.Do(func(f *sim.Fabric) error {
			for _, g := range f.Groups() {
				n += len(g.Members)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := members(); n == 0 {
		t.Error("the SM has no member for the joined interface")
	}
	if err := i.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Close returned after the SA confirmed the leaves: no stale member.
	if n := members(); n != 0 {
		t.Errorf("the SM still has %d members after Close", n)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := i.Dial("tcp", "10.9.0.2:1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close: %v, want ErrClosed", err)
	}
	if err := i.Up(ctx); err == nil {
		t.Error("Up after Close succeeded")
	}
}

// noSMFabric is a one-host simulated fabric whose SM is down, so that no
// join completes; it closes when the test ends.
func noSMFabric(t *testing.T) *SimFabric {
	t.Helper()
	fabric, err := NewSimFabric(SimConfig{Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fabric.Close() })
	if err := fabric.Do(func(f *sim.Fabric) error { return f.SetSMUp(false) }); err != nil {
		t.Fatal(err)
	}
	return fabric
}

// TestJoinTimeout checks that a link that cannot come up (no subnet
// manager) fails Up at the join step with the link's reason.
func TestJoinTimeout(t *testing.T) {
	fabric := noSMFabric(t)
	_, err := Open(context.Background(), Config{Device: fabric.Device(0), Name: "nosm0", DHCP: true, JoinTimeout: 300 * time.Millisecond})
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepJoin || !strings.Contains(err.Error(), "link not up after 300ms") {
		t.Errorf("Open without an SM: %v, want a join-step error", err)
	}
}

// TestUpDeviceFailed checks that Up stops waiting for the join as soon as
// the device has failed, with an error that says so, rather than at
// JoinTimeout (or never, without one).
func TestUpDeviceFailed(t *testing.T) {
	fabric := noSMFabric(t)
	i, err := New(Config{Device: fabric.Device(0), Name: "dead0", Addr: netip.MustParsePrefix("10.9.0.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	up := make(chan error, 1)
	go func() { up <- i.Up(context.Background()) }()
	if err := fabric.Do(func(f *sim.Fabric) error {
		if n := f.Hosts()[0].FailDevices(); n != 1 {
			return fmt.Errorf("FailDevices: %d devices, want 1", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-up:
		var se *StepError
		if !errors.As(err, &se) || se.Step != StepJoin || !errors.Is(err, ib.ErrDeviceFatal) {
			t.Errorf("Up on a failed device: %v, want a join-step error wrapping ib.ErrDeviceFatal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Up still waits 10 s after the device failed")
	}
}

// TestLeaseWaitEnds checks that Up's wait for a DHCP lease (no server
// answers) ends as soon as the device fails, or as soon as Close is
// called, with an error that says which, rather than for ever.
func TestLeaseWaitEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(fabric *SimFabric, i *Interface) error
		want error
	}{
		{"device fails", func(fabric *SimFabric, _ *Interface) error {
			return fabric.Do(func(f *sim.Fabric) error {
				if n := f.Hosts()[0].FailDevices(); n != 1 {
					return fmt.Errorf("FailDevices: %d devices, want 1", n)
				}
				return nil
			})
		}, ib.ErrDeviceFatal},
		{"Close", func(_ *SimFabric, i *Interface) error { return i.Close() }, ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fabric, err := NewSimFabric(SimConfig{Hosts: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer fabric.Close()
			asking := make(chan struct{})
			var once sync.Once
			i, err := New(Config{Device: fabric.Device(0), Name: "nolease0", DHCP: true, OnEvent: func(ev Event) {
				if ev.Kind == EventDHCPAsking {
					once.Do(func() { close(asking) })
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer i.Close()
			up := make(chan error, 1)
			go func() { up <- i.Up(context.Background()) }()
			select {
			case <-asking:
			case err := <-up:
				t.Fatalf("Up returned before asking for a lease: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no DHCP request within 10 s")
			}
			ended := make(chan error, 1)
			go func() { ended <- tc.end(fabric, i) }()
			select {
			case err := <-up:
				var se *StepError
				if !errors.As(err, &se) || se.Step != StepDHCP || !errors.Is(err, tc.want) {
					t.Errorf("Up: %v, want a DHCP-step error wrapping %v", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Up still waits for a lease 10 s later")
			}
			if err := <-ended; err != nil {
				t.Error(err)
			}
		})
	}
}

// TestTCPTransfer moves streams of several sizes between two Interfaces
// of a simulated fabric through Dial and Listen, each byte-identical and
// each end of stream passed on as a half-close. Each stream is written in
// one piece while the echo comes back, so the largest fills both ends'
// windows at once.
func TestTCPTransfer(t *testing.T) {
	fabric, err := NewSimFabric(SimConfig{Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer fabric.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(i int, addr string) *Interface {
		ifc, err := Open(ctx, Config{Device: fabric.Device(i), Name: fmt.Sprintf("xfer%d", i), Addr: netip.MustParsePrefix(addr)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ifc.Close() })
		return ifc
	}
	server, client := open(0, "10.8.0.1/24"), open(1, "10.8.0.2/24")
	ln, err := server.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	streamtest.Echo(t, ln)
	// One byte; one full segment and a byte (the link's MTU of 2044 less
	// 40 bytes of IP and TCP headers); more than a 64 KiB window; 8 MiB.
	for _, size := range []int{1, 2044 - 40 + 1, 64<<10 + 3, 8 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c, err := client.DialContext(ctx, "tcp", "10.8.0.1:7")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.LocalAddr().String(); !strings.HasPrefix(got, "10.8.0.2:") {
				t.Errorf("local address %s, not the client's", got)
			}
			streamtest.Check(t, c, size)
		})
	}
}
