package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

// TestLinkDownTimeout removes a client's port from the simulated fabric
// (its link down) and restores it. Within --link-down-timeout the daemon
// rides it out and pings again; past it, the daemon exits with status 1
// and says why, and started again (as a service manager would) over its
// lease file, it reopens the device and gets its address back.
func TestLinkDownTimeout(t *testing.T) {
	fabric := startFabric(t, "portgone", 2, nil)
	dir := t.TempDir()
	sock := func(i int) string { return filepath.Join(dir, fmt.Sprintf("h%d.sock", i)) }
	start := func(i int, extra ...string) *testDaemon { return spawnDaemon(t, "portgone", dir, i, extra...) }
	server := start(0, "--addr", "10.3.0.1/24", "--dhcp-server", "10.3.0.10-10.3.0.20", "--lease-file", filepath.Join(dir, "server.leases"))
	defer server.stop()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(server.out.String(), "ready") })

	leaseRE := regexp.MustCompile(`address (10\.3\.0\.\d+)/24 from DHCP server`)
	clientArgs := []string{"--dhcp", "--lease-file", filepath.Join(dir, "client.lease"), "--link-down-timeout", "1s"}
	client := start(1, clientArgs...)
	var first []string
	waitFor(t, 30*time.Second, func() bool { first = leaseRE.FindStringSubmatch(client.out.String()); return first != nil })
	pingOK := func() bool {
		code, _, _ := runCLI(t, "ping", "-c", "1", "-W", "2", "--socket", sock(1), "10.3.0.1")
		return code == exitOK
	}

	// A short outage: the daemon stays and the link comes back.
	if err := setHostLink(fabric, 1, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := setHostLink(fabric, 1, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, pingOK)
	select {
	case code := <-client.exited:
		t.Fatalf("the daemon exited (%d) on a short outage: %s", code, client.errOut.String())
	default:
	}

	// A long one: the daemon gives up, with a message and status 1.
	if err := setHostLink(fabric, 1, false); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-client.exited:
		if code != exitFailure || !strings.Contains(client.errOut.String(), "the link has been down for 1s") {
			t.Errorf("exit %d: %s", code, client.errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the daemon did not give up on its link: %s", client.errOut.String())
	}

	// The port comes back and the service manager starts the daemon
	// again: the device opens afresh and the address is the same.
	if err := setHostLink(fabric, 1, true); err != nil {
		t.Fatal(err)
	}
	again := start(1, clientArgs...)
	defer again.stop()
	var second []string
	waitFor(t, 30*time.Second, func() bool { second = leaseRE.FindStringSubmatch(again.out.String()); return second != nil })
	if second[1] != first[1] {
		t.Errorf("address %s after the restart, %s before", second[1], first[1])
	}
	waitFor(t, 20*time.Second, pingOK)
}
