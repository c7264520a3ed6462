package main

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/syncbuf"
)

// testDaemon is an `ipoibd up` a test runs in this process, on host i of
// a simulated fabric, as interface ibI with its control socket in a
// directory of the test.
type testDaemon struct {
	t           testing.TB
	sock        string
	out, errOut *syncbuf.Buffer
	// exited gets the exit code; whoever takes it puts it back, so every
	// later look (stop, waitExit) finds it too.
	exited chan int
}

// spawnDaemon starts `ipoibd up` on sim:FABRIC/hostI with extra flags.
func spawnDaemon(t testing.TB, fabric, dir string, i int, extra ...string) *testDaemon {
	d := &testDaemon{t: t, sock: filepath.Join(dir, fmt.Sprintf("h%d.sock", i)),
		out: &syncbuf.Buffer{}, errOut: &syncbuf.Buffer{}, exited: make(chan int, 1)}
	args := append([]string{"up", "--device", fmt.Sprintf("sim:%s/host%d", fabric, i), "--name", fmt.Sprintf("ib%d", i),
		"--socket", d.sock}, extra...)
	go func() { d.exited <- run(args, d.out, d.errOut) }()
	return d
}

// startDaemon spawns `ipoibd up` on host i of fabric with a static address
// ("dhcp" for --dhcp) and extra flags, waits until it is ready, and stops
// it at the test's end, failing the test unless it then exits well.
func startDaemon(t testing.TB, fabric string, i int, addr string, extra ...string) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	flags := []string{"--join-timeout", "20s", "--addr", addr}
	if addr == "dhcp" {
		// The lease file goes in the test's folder, not the machine's
		// state directory, where other runs would find it.
		flags = []string{"--join-timeout", "20s", "--dhcp", "--lease-file", filepath.Join(dir, "lease")}
	}
	d := spawnDaemon(t, fabric, dir, i, append(flags, extra...)...)
	t.Cleanup(d.stopOK)
	d.waitReady(20 * time.Second)
	return d
}

// waitReady waits up to limit for the daemon's "ready" progress line,
// failing the test at once if the daemon exits first.
func (d *testDaemon) waitReady(limit time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(d.out.String(), "ready") {
		select {
		case code := <-d.exited:
			d.exited <- code
			d.t.Fatalf("up at %s exited %d: %s%s", d.sock, code, d.out.String(), d.errOut.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("up at %s not ready after %v: %s%s", d.sock, limit, d.out.String(), d.errOut.String())
		}
	}
}

// stop runs 'ipoibd down' on the daemon and waits for it to exit; a
// daemon that has already exited is fine.
func (d *testDaemon) stop() { d.halt() }

// stopOK is stop for a daemon that must exit with exitOK.
func (d *testDaemon) stopOK() {
	if code, ok := d.halt(); ok && code != exitOK {
		d.t.Errorf("up at %s: exit %d: %s", d.sock, code, d.errOut.String())
	}
}

// halt runs 'ipoibd down' and returns the exit code; ok is false, and the
// test failed, if the daemon did not exit.
func (d *testDaemon) halt() (code int, ok bool) {
	run([]string{"down", "--socket", d.sock}, io.Discard, io.Discard)
	select {
	case code = <-d.exited:
		d.exited <- code
		return code, true
	case <-time.After(20 * time.Second):
		d.t.Errorf("daemon at %s did not stop: %s", d.sock, d.errOut.String())
		return 0, false
	}
}

// listening finds the address a progress line matching re reports.
func (d *testDaemon) listening(t testing.TB, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("no progress line matching %q:\n%s", re, d.out.String())
	}
	return m[1]
}
