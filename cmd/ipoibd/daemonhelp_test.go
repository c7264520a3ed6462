package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/syncbuf"
)

// testDaemon is an `ipoibd up` a test runs in this process, on host i of
// a simulated fabric, as interface ibI with its control socket in a
// directory of the test.
type testDaemon struct {
	t           *testing.T
	sock        string
	out, errOut *syncbuf.Buffer
	exited      chan int
}

// spawnDaemon starts `ipoibd up` on sim:FABRIC/hostI with extra flags.
func spawnDaemon(t *testing.T, fabric, dir string, i int, extra ...string) *testDaemon {
	d := &testDaemon{t: t, sock: filepath.Join(dir, fmt.Sprintf("h%d.sock", i)),
		out: &syncbuf.Buffer{}, errOut: &syncbuf.Buffer{}, exited: make(chan int, 1)}
	args := append([]string{"up", "--device", fmt.Sprintf("sim:%s/host%d", fabric, i), "--name", fmt.Sprintf("ib%d", i),
		"--socket", d.sock}, extra...)
	go func() { d.exited <- run(args, d.out, d.errOut) }()
	return d
}

// stop runs 'ipoibd down' on the daemon and waits for it to exit; a
// daemon that has already exited is fine.
func (d *testDaemon) stop() {
	runCLI(d.t, "down", "--socket", d.sock)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.t.Errorf("daemon at %s did not stop: %s", d.sock, d.errOut.String())
	}
}
