package main

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDaemonNotifyLogsDown runs a DHCP server daemon and a client daemon
// the way systemd would start them (NOTIFY_SOCKET set to a datagram
// socket the test reads), the client at --log-level debug, and checks the
// readiness messages, the DHCP events in the log, and that 'down' answers
// only once the daemon has torn down and released its lease.
func TestDaemonNotifyLogsDown(t *testing.T) {
	startFabric(t, "notify", 2, nil)
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	var (
		mu   sync.Mutex
		msgs []string
	)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	notified := func(want string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if strings.Contains(m, want) {
				return true
			}
		}
		return false
	}

	ds := []*testDaemon{
		spawnDaemon(t, "notify", dir, 0, "--addr", "10.7.0.1/24", "--dhcp-server", "10.7.0.10-10.7.0.20",
			"--lease-file", filepath.Join(dir, "ib0.leases")),
		spawnDaemon(t, "notify", dir, 1, "--dhcp", "--log-level", "debug", "--lease-file", filepath.Join(dir, "ib1.lease")),
	}
	for _, d := range ds {
		d.waitReady(20 * time.Second)
	}
	waitFor(t, 5*time.Second, func() bool { return notified("READY=1") })

	// The client publishes its lease (and Up returns) a moment before
	// its goroutine logs the event.
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ds[1].errOut.String(), "DHCP lease bound") })
	log := ds[1].errOut.String()
	for _, want := range []string{`level=INFO msg="DHCP lease bound"`, "addr=10.7.0.10", "lease_s=", "level=DEBUG"} {
		if !strings.Contains(log, want) {
			t.Errorf("client log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(ds[0].errOut.String(), "level=DEBUG") {
		t.Errorf("server logged debug lines at the default level:\n%s", ds[0].errOut.String())
	}

	for i, d := range ds {
		if code, _, stderr := runCLI(t, "down", "--socket", d.sock); code != exitOK {
			t.Fatalf("down %d: exit %d: %s", i, code, stderr)
		}
		// down has answered: the daemon must already be gone.
		select {
		case code := <-d.exited:
			if code != exitOK {
				t.Errorf("up %d exited %d: %s", i, code, d.errOut.String())
			}
		case <-time.After(100 * time.Millisecond):
			t.Fatalf("down %d returned before the daemon finished", i)
		}
	}
	if !strings.Contains(ds[1].errOut.String(), `msg="DHCP lease released"`) {
		t.Errorf("client log lacks the release:\n%s", ds[1].errOut.String())
	}
	// The notification was sent before the teardown; the reader
	// goroutine may not have picked it up yet.
	for deadline := time.Now().Add(5 * time.Second); !notified("STOPPING=1") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if !notified("STOPPING=1") {
		t.Errorf("no STOPPING=1 notification; got %q", msgs)
	}
	if code, _, stderr := runCLI(t, "up", "--device", "x", "--addr", "10.0.0.1/24", "--log-level", "loud"); code != exitUsage || !strings.Contains(stderr, "--log-level") {
		t.Errorf("bad --log-level: exit %d: %s", code, stderr)
	}
}
