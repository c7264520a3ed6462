package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/syncbuf"
	"github.com/ipoibd/ipoibd/sim"
)

// setHostLink takes the link of host i of a star down or brings it back.
func setHostLink(fabric func(func(*sim.Fabric) error) error, i int, up bool) error {
	return fabric(func(f *sim.Fabric) error {
		for _, l := range f.Cables() {
			if strings.HasPrefix(l.String(), fmt.Sprintf("host%d/", i)) {
				return f.SetLinkUp(l, up)
			}
		}
		return fmt.Errorf("no link of host%d", i)
	})
}

// linkFixture is a DHCP server daemon on host0 of a two-host simulated
// fabric and the client daemons started on host1, on subnet 10.N.0.0/24.
type linkFixture struct {
	t       *testing.T
	fabric  func(func(*sim.Fabric) error) error
	name    string
	dir     string
	net     string // "10.N.0"
	leaseRE *regexp.Regexp
}

// startLinkFixture builds the fabric and starts the server, ready.
func startLinkFixture(t *testing.T, name string, n int) *linkFixture {
	x := &linkFixture{t: t, fabric: startFabric(t, name, 2, nil), name: name, dir: t.TempDir(), net: fmt.Sprintf("10.%d.0", n)}
	x.leaseRE = regexp.MustCompile(`address (` + regexp.QuoteMeta(x.net) + `\.\d+)/24 from DHCP server`)
	server := x.start(0, "--addr", x.net+".1/24", "--dhcp-server", x.net+".10-"+x.net+".20", "--lease-file", filepath.Join(x.dir, "server.leases"))
	server.waitReady(20 * time.Second)
	return x
}

// start starts a daemon on host i, stopped when the test ends.
func (x *linkFixture) start(i int, extra ...string) *testDaemon {
	d := spawnDaemon(x.t, x.name, x.dir, i, extra...)
	x.t.Cleanup(d.stop)
	return d
}

// client starts a DHCP client daemon on host1 over its lease file.
func (x *linkFixture) client(extra ...string) *testDaemon {
	return x.start(1, append([]string{"--dhcp", "--lease-file", filepath.Join(x.dir, "client.lease")}, extra...)...)
}

// leases returns the addresses d has been given, in order.
func (x *linkFixture) leases(d *testDaemon) []string {
	var out []string
	for _, m := range x.leaseRE.FindAllStringSubmatch(d.out.String(), -1) {
		out = append(out, m[1])
	}
	return out
}

// waitLeases waits until d has been given n addresses and returns them.
func (x *linkFixture) waitLeases(d *testDaemon, n int) []string {
	x.t.Helper()
	waitFor(x.t, 30*time.Second, func() bool { return len(x.leases(d)) >= n })
	return x.leases(d)
}

// waitPing waits until the client daemon pings the server.
func (x *linkFixture) waitPing() {
	x.t.Helper()
	waitFor(x.t, 20*time.Second, func() bool {
		code, _, _ := runCLI(x.t, "ping", "-c", "1", "-W", "2", "--socket", filepath.Join(x.dir, "h1.sock"), x.net+".1")
		return code == exitOK
	})
}

// setLink takes host1's port down or brings it back.
func (x *linkFixture) setLink(up bool) {
	x.t.Helper()
	if err := setHostLink(x.fabric, 1, up); err != nil {
		x.t.Fatal(err)
	}
}

// failDevice makes host1's device fail as a whole (ib.EventDeviceFatal).
func (x *linkFixture) failDevice() {
	x.t.Helper()
	err := x.fabric(func(f *sim.Fabric) error {
		if n := f.Host("host1").FailDevices(); n != 1 {
			return fmt.Errorf("FailDevices: %d devices, want 1", n)
		}
		return nil
	})
	if err != nil {
		x.t.Fatal(err)
	}
}

// running fails the test if d has exited.
func (d *testDaemon) running(when string) {
	d.t.Helper()
	select {
	case code := <-d.exited:
		d.exited <- code
		d.t.Fatalf("the daemon exited (%d) %s: %s", code, when, d.errOut.String())
	default:
	}
}

// waitExit waits for d to exit and checks its status and that stderr
// says want.
func (d *testDaemon) waitExit(code int, want string) {
	d.t.Helper()
	select {
	case got := <-d.exited:
		d.exited <- got
		if got != code || !strings.Contains(d.errOut.String(), want) {
			d.t.Errorf("exit %d, want %d and %q in: %s", got, code, want, d.errOut.String())
		}
	case <-time.After(20 * time.Second):
		d.t.Fatalf("the daemon did not exit (want %q): %s", want, d.errOut.String())
	}
}

// TestLinkDownTimeout removes a client's port from the simulated fabric
// (its link down) and restores it. Within --link-down-timeout the daemon
// rides it out and pings again; past it, the daemon exits with status 1
// and says why, and started again (as a service manager would) over its
// lease file, it reopens the device and gets its address back.
func TestLinkDownTimeout(t *testing.T) {
	x := startLinkFixture(t, "portgone", 3)
	client := x.client("--link-down-timeout", "1s")
	first := x.waitLeases(client, 1)

	// A short outage: the daemon stays and the link comes back.
	x.setLink(false)
	time.Sleep(300 * time.Millisecond)
	x.setLink(true)
	x.waitPing()
	client.running("on a short outage")

	// A long one: the daemon gives up, with a message and status 1.
	x.setLink(false)
	client.waitExit(exitFailure, "the link has been down for 1s")

	// The port comes back and the service manager starts the daemon
	// again: the device opens afresh and the address is the same.
	x.setLink(true)
	again := x.client("--link-down-timeout", "1s")
	if second := x.waitLeases(again, 1); second[0] != first[0] {
		t.Errorf("address %s after the restart, %s before", second[0], first[0])
	}
	x.waitPing()
}

// TestDeviceFatalReopen fails a DHCP client daemon's device on the
// simulated fabric (the fatal event hardware raises): the daemon takes
// the link down, closes the device, opens it again by itself and, over
// its kept lease file, gets the same address back and pings again,
// without exiting. Failed again with its port gone as well, and
// --link-down-timeout set, it cannot reopen in time and exits with
// status 1 and a message that says so.
func TestDeviceFatalReopen(t *testing.T) {
	x := startLinkFixture(t, "fatal", 7)
	client := x.client("--link-down-timeout", "2s")
	x.waitLeases(client, 1)
	x.waitPing()

	// The counters go on across the reopen, as the interface's do in ip(8)
	// when only its device resets.
	stats := func() statsJSON {
		t.Helper()
		code, stdout, stderr := runCLI(t, "stats", "--json", "--socket", filepath.Join(x.dir, "h1.sock"))
		if code != exitOK {
			t.Fatalf("stats: exit %d: %s", code, stderr)
		}
		var st statsJSON
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := stats()
	x.failDevice()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(client.out.String(), "the device failed") })
	if got := x.waitLeases(client, 2); got[1] != got[0] {
		t.Errorf("address %s after the device was opened again, %s before", got[1], got[0])
	}
	x.waitPing()
	client.running("instead of reopening its device")
	after := stats()
	for _, c := range []struct {
		group    string
		b, a     uint64
		minAdded uint64
	}{
		{"netdev tx_ok", before.Netdev.Count("tx_ok"), after.Netdev.Count("tx_ok"), 2}, // the new join's and the lease renewal's at least
		{"netdev rx_ok", before.Netdev.Count("rx_ok"), after.Netdev.Count("rx_ok"), 1},
		{"endpoint rx_delivered", before.Endpoint.Count("rx_delivered"), after.Endpoint.Count("rx_delivered"), 1},
	} {
		if c.b == 0 || c.a < c.b+c.minAdded {
			t.Errorf("%s: %d before the failure, %d after the reopen; want it to go on counting", c.group, c.b, c.a)
		}
	}

	// The device fails with its port gone too: no link within
	// --link-down-timeout, so the daemon gives up, clearly.
	x.setLink(false)
	x.failDevice()
	client.waitExit(exitFailure, "could not be opened again within 2s")
}

// TestDeviceFatalBeforeReady: a device that fails while the daemon still
// waits for its first join (no SM answers) is opened again as one that
// fails later is, and the daemon comes up on it once the SM is back,
// instead of waiting on the dead device for good.
func TestDeviceFatalBeforeReady(t *testing.T) {
	x := startLinkFixture(t, "fatal0", 8)
	sm := func(up bool) {
		t.Helper()
		if err := x.fabric(func(f *sim.Fabric) error { return f.SetSMUp(up) }); err != nil {
			t.Fatal(err)
		}
	}
	sm(false)
	client := x.client()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(client.out.String(), "control socket") })
	x.failDevice()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(client.out.String(), "the device failed") })
	if strings.Contains(client.out.String(), ": ready") {
		t.Fatalf("ready before the join could finish:\n%s", client.out.String())
	}
	sm(true)
	x.waitLeases(client, 1)
	x.waitPing()
	client.running("instead of opening its failed device again")
}

// TestReopenBackoff: a device that cannot be opened again is retried
// with a pause that doubles up to its cap, until --link-down-timeout has
// passed since the failure (an error that says so) or the daemon stops
// (no error, at once).
func TestReopenBackoff(t *testing.T) {
	oldFirst, oldMax := reopenBackoff, reopenBackoffMax
	reopenBackoff, reopenBackoffMax = 10*time.Millisecond, 40*time.Millisecond
	defer func() { reopenBackoff, reopenBackoffMax = oldFirst, oldMax }()
	var logged syncbuf.Buffer
	d := &daemon{out: &syncbuf.Buffer{}, opt: upOptions{driver: "sim", device: "nosuch/host0", port: 1, pkey: 0xffff,
		name: "ib9", addr: netip.MustParsePrefix("10.8.0.1/24"), linkDownTimeout: 300 * time.Millisecond,
		log: slog.New(slog.NewTextHandler(&logged, nil))}}
	start := time.Now()
	ifc, err := d.reopen(context.Background(), start)
	if ifc != nil || err == nil || !strings.Contains(err.Error(), "could not be opened again within 300ms") {
		t.Fatalf("reopen: %v, %v; want the give-up error", ifc, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %v, want soon after 300ms", took)
	}
	var pauses []string
	for _, m := range regexp.MustCompile(`pause=(\S+)`).FindAllStringSubmatch(logged.String(), -1) {
		pauses = append(pauses, m[1])
	}
	if len(pauses) < 5 || !slices.Equal(pauses[:4], []string{"10ms", "20ms", "40ms", "40ms"}) {
		t.Errorf("pauses %v, want 10ms 20ms 40ms 40ms ...", pauses)
	}

	// Without a bound it retries until the daemon stops.
	d.opt.linkDownTimeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if ifc, err := d.reopen(ctx, time.Now()); ifc != nil || err != nil {
		t.Errorf("reopen, stopped: %v, %v; want nothing", ifc, err)
	}
}
