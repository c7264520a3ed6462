package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestDHCPServerRestartNoDuplicates runs a DHCP server daemon and two
// client daemons on a simulated fabric, stops the server and starts it
// again (over its lease file, then with the file lost), and starts a new
// client each time: the new client never gets an address a live client
// holds. With the file the server knows the bindings; without it, its
// ARP probe finds the live clients' addresses in use.
func TestDHCPServerRestartNoDuplicates(t *testing.T) {
	startFabric(t, "restart", 5, nil)
	dir := t.TempDir()
	leases := filepath.Join(dir, "server.leases")
	start := func(i int, extra ...string) *testDaemon {
		d := spawnDaemon(t, "restart", dir, i, extra...)
		t.Cleanup(d.stop)
		return d
	}
	server := func() *testDaemon {
		d := start(0, "--addr", "10.4.0.1/24", "--dhcp-server", "10.4.0.10-10.4.0.20", "--lease-file", leases)
		d.waitReady(20 * time.Second)
		return d
	}
	leaseRE := regexp.MustCompile(`address (10\.4\.0\.\d+)/24 from DHCP server`)
	held := map[string]int{}
	client := func(i int) {
		t.Helper()
		d := start(i, "--dhcp", "--lease-file", filepath.Join(dir, fmt.Sprintf("h%d.lease", i)))
		var m []string
		waitFor(t, 30*time.Second, func() bool {
			m = leaseRE.FindStringSubmatch(d.out.String())
			return m != nil
		})
		if other, dup := held[m[1]]; dup {
			t.Fatalf("client %d got %s, which live client %d holds", i, m[1], other)
		}
		held[m[1]] = i
	}

	server()
	client(1)
	client(2)

	stopServer := func() {
		t.Helper()
		if code, _, stderr := runCLI(t, "down", "--socket", filepath.Join(dir, "h0.sock")); code != exitOK {
			t.Fatalf("down the server: exit %d: %s", code, stderr)
		}
	}
	// Restarted over its lease file.
	stopServer()
	server()
	client(3)

	// Restarted with the lease file lost: the probe alone must do.
	stopServer()
	if err := os.Remove(leases); err != nil {
		t.Fatal(err)
	}
	server()
	client(4)
	if len(held) != 4 {
		t.Errorf("addresses %v", held)
	}
}
