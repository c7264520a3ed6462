package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	sock := func(i int) string { return filepath.Join(dir, fmt.Sprintf("h%d.sock", i)) }
	leases := filepath.Join(dir, "server.leases")
	type daemon struct {
		out, errOut *syncBuffer
		exited      chan int
	}
	start := func(i int, extra ...string) *daemon {
		d := &daemon{out: &syncBuffer{}, errOut: &syncBuffer{}, exited: make(chan int, 1)}
		args := append([]string{"up", "--device", fmt.Sprintf("sim:restart/host%d", i), "--name", fmt.Sprintf("ib%d", i),
			"--socket", sock(i)}, extra...)
		go func() { d.exited <- run(args, d.out, d.errOut) }()
		t.Cleanup(func() {
			runCLI(t, "down", "--socket", sock(i))
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				t.Errorf("daemon %d did not stop", i)
			}
		})
		return d
	}
	server := func() *daemon {
		d := start(0, "--addr", "10.4.0.1/24", "--dhcp-server", "10.4.0.10-10.4.0.20", "--lease-file", leases)
		waitFor(t, 20*time.Second, func() bool { return strings.Contains(d.out.String(), "ready") })
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
		if code, _, stderr := runCLI(t, "down", "--socket", sock(0)); code != exitOK {
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
