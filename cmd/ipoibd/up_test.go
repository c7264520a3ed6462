package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/sim"
)

// TestUpPingPeersStatsDown runs two daemons on a simulated fabric in this
// process, the way an operator runs `ipoibd up` on two machines, and
// drives them through their control sockets.
func TestUpPingPeersStatsDown(t *testing.T) {
	startFabric(t, "uptest", 2, nil)

	dir := t.TempDir()
	// Host 0 has a static address and serves DHCP; host 1 leases. The
	// lease files are this test's own, not the state directory the test
	// binary's daemons share.
	ds := []*testDaemon{
		spawnDaemon(t, "uptest", dir, 0, "--join-timeout", "20s", "--addr", "10.9.0.1/24",
			"--dhcp-server", "10.9.0.100-10.9.0.150", "--lease-file", filepath.Join(dir, "ib0.lease")),
		spawnDaemon(t, "uptest", dir, 1, "--join-timeout", "20s", "--dhcp", "--lease-file", filepath.Join(dir, "ib1.lease")),
	}
	sock := func(i int) string { return ds[i].sock }
	defer func() {
		ds[1].stopOK()
		ds[0].stopOK()
		for i, d := range ds {
			if !strings.Contains(d.out.String(), "leaving") {
				t.Errorf("daemon %d did not leave: %s", i, d.out.String())
			}
		}
	}()
	for _, d := range ds {
		d.waitReady(20 * time.Second)
	}
	out := ds[0].out.String()
	for _, want := range []string{"joining the broadcast group ff12:401b:ffff::ffff:ffff", "link up", "MTU 2044", "address 10.9.0.1/24", "serving DHCP leases 10.9.0.100-10.9.0.150"} {
		if !strings.Contains(out, want) {
			t.Errorf("up's progress lacks %q:\n%s", want, out)
		}
	}
	if out := ds[1].out.String(); !strings.Contains(out, "address 10.9.0.100/24 from DHCP server 10.9.0.1, lease 1h0m0s") {
		t.Errorf("the DHCP client's progress:\n%s", out)
	}

	checkPing(t, sock(0), sock(1))

	code, stdout, stderr := runCLI(t, "peers", "--json", "--socket", sock(0))
	if code != exitOK {
		t.Fatalf("peers: exit %d: %s", code, stderr)
	}
	var peers peersJSON
	if err := json.Unmarshal([]byte(stdout), &peers); err != nil {
		t.Fatal(err)
	}
	var neigh bool
	for _, n := range peers.Neighbours {
		neigh = neigh || n.Addr == "10.9.0.100"
	}
	var resolved bool
	for _, pi := range peers.Peers {
		resolved = resolved || pi.State == "resolved"
	}
	if !neigh || !resolved || !peers.Group.Joined {
		t.Errorf("peers: %s", stdout)
	}
	checkJSONConvention(t, "peers", stdout)
	if code, stdout, _ := runCLI(t, "peers", "--socket", sock(0)); code != exitOK || !strings.Contains(stdout, "10.9.0.100") {
		t.Errorf("peers table: %s", stdout)
	}

	code, stdout, stderr = runCLI(t, "stats", "--json", "--socket", sock(0))
	if code != exitOK {
		t.Fatalf("stats: exit %d: %s", code, stderr)
	}
	var st statsJSON
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatal(err)
	}
	if n := st.Netdev.Count("tx_ok"); n < 3 {
		t.Errorf("stats tx_ok %d after 3 pings: %s", n, stdout)
	}
	if n := st.Netdev.Count("rx_ok"); n < 3 {
		t.Errorf("stats rx_ok %d after 3 pings", n)
	}
	checkJSONConvention(t, "stats", stdout)
}

func TestUpBadInput(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"up"}, exitUsage, "--device is required"},
		{[]string{"up", "--device", "x"}, exitUsage, "one of --dhcp or --addr"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1"}, exitUsage, "not an IPv4 address with a prefix length"},
		{[]string{"up", "--device", "x", "--addr", "300.0.0.1/24"}, exitUsage, "not an IPv4 address with a prefix length"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--pkey", "banana"}, exitUsage, "not a 16-bit number"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--pkey", "0x8000"}, exitUsage, "invalid P_Key"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--port", "0"}, exitUsage, "ports are numbered"},
		{[]string{"up", "--device", "x", "--dhcp", "--addr", "10.0.0.1/24"}, exitUsage, "exclude each other"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--dhcp-server", "10.0.0.9-10.0.0.2"}, exitUsage, "last address before the first"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--dhcp-server", "10.0.1.2-10.0.1.9"}, exitUsage, "outside 10.0.0.0/24"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.5/24", "--dhcp-server", "10.0.0.2-10.0.0.9"}, exitUsage, "server's own address"},
		{[]string{"up", "--device", "x", "--addr", "10.0.0.1/24", "--lease-file", "/tmp/x"}, exitUsage, "--lease-file is for --dhcp or --dhcp-server"},
		{[]string{"up", "--device", "nosuchdev0", "--addr", "10.0.0.1/24"}, exitFailure, `unknown device "nosuchdev0"`},
		{[]string{"up", "--device", "nodriver:x", "--addr", "10.0.0.1/24"}, exitFailure, "unknown driver"},
		{[]string{"ping", "--socket", "/nonexistent/sock", "10.0.0.1"}, exitUsage, "is 'ipoibd up' running?"},
		{[]string{"ping", "not-an-ip"}, exitUsage, "want an IPv4 address"},
		{[]string{"ping", "-i", "1ms", "10.0.0.1"}, exitUsage, "invalid value"},
		{[]string{"ping"}, exitUsage, "missing argument"},
		{[]string{"ping", "-c", "0", "10.0.0.1"}, exitUsage, "-c 1..100000"},
		{[]string{"ping", "-W", "0", "10.0.0.1"}, exitUsage, "-W above 0"},
		{[]string{"stats", "--socket", "/nonexistent/sock"}, exitFailure, "no ipoibd at /nonexistent/sock"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.code, tt.want)
			}
		})
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUpWithoutSM: with no subnet manager the daemon keeps joining; its
// control socket already answers stats (showing the join attempts) and
// refuses ping with a clear message, and down stops it.
func TestUpWithoutSM(t *testing.T) {
	startFabric(t, "nosm", 1, func(f *sim.Fabric) error { return f.SetSMUp(false) })
	d := spawnDaemon(t, "nosm", t.TempDir(), 0, "--addr", "10.8.0.1/24")
	sock := d.sock
	// The join starts as the device opens; the control socket opens
	// right after, while it is still under way.
	waitFor(t, 10*time.Second, func() bool {
		o := d.out.String()
		return strings.Contains(o, "joining the broadcast group") && strings.Contains(o, "control socket")
	})
	code, stdout, stderr := runCLI(t, "stats", "--json", "--socket", sock)
	if code != exitOK {
		t.Fatalf("stats while joining: exit %d: %s", code, stderr)
	}
	var st statsJSON
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatal(err)
	}
	if n, ok := st.Netdev.Get("ipoib_joins"); !ok || n != 0 {
		t.Errorf("ipoib_joins = %d (%v) with no SM", n, ok)
	}
	if code, _, stderr := runCLI(t, "ping", "--socket", sock, "10.8.0.2"); code != exitUsage || !strings.Contains(stderr, "not configured yet") {
		t.Errorf("ping while joining: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "down", "--socket", sock); code != exitOK {
		t.Fatalf("down: exit %d: %s", code, stderr)
	}
	select {
	case code := <-d.exited:
		if !strings.Contains(d.errOut.String(), "stopped while joining") || code != exitFailure {
			t.Errorf("up exited %d: %s", code, d.errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up did not stop")
	}
}

// startFabric runs a star of n simulated hosts named name on a loop of its
// own until the test ends; setup, if given, runs on the loop once the
// fabric is built. The daemons under test find the hosts through the sim
// driver as "sim:NAME/hostI". It returns a function that runs fn on the
// fabric's loop and returns its error, for tests that change the fabric
// later.
func startFabric(t *testing.T, name string, n int, setup func(*sim.Fabric) error) func(fn func(*sim.Fabric) error) error {
	t.Helper()
	loop, err := aio.New(aio.WithName("fabric"))
	if err != nil {
		t.Fatal(err)
	}
	stop := loop.Start()
	onLoop := func(fn func()) {
		if err := loop.Call("test", fn); err != nil {
			t.Error(err)
		}
	}
	var f *sim.Fabric
	onLoop(func() {
		if f, _, err = sim.Star(loop, sim.Config{Name: name}, n); err == nil && setup != nil {
			err = setup(f)
		}
	})
	t.Cleanup(func() {
		if f != nil {
			onLoop(func() { f.Close() })
		}
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return func(fn func(*sim.Fabric) error) error {
		var err error
		onLoop(func() { err = fn(f) })
		return err
	}
}
