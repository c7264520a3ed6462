package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/proctest"
)

// killedEnv makes TestKilledRunHelper run: TestKilledRunLeavesNothing
// starts it and kills it.
const killedEnv = "IPOIBD_NSTEST_KILLED"

// killedPrefix starts the helper's line naming what it made.
const killedPrefix = "nstest-killed "

// TestKilledRunHelper makes a host namespace, starts a process in it,
// says which, and waits to be killed.
func TestKilledRunHelper(t *testing.T) {
	if os.Getenv(killedEnv) == "" {
		t.Skip("TestKilledRunLeavesNothing's helper; runs only when it starts it")
	}
	tp := newTopo(t, 1, 0)
	p := tp.start(tp.hosts[0], os.DevNull, "sleep", "120")
	fmt.Printf("%s%s %s %d\n", killedPrefix, tp.sw, tp.hosts[0], p.cmd.Process.Pid)
	time.Sleep(2 * time.Minute)
	t.Error("not killed within 2 minutes")
}

// TestKilledRunLeavesNothing kills a test process that has made
// namespaces and runs a process in one, as a -timeout panic or a ^C ends
// it, without its cleanups: the process dies with it, and its namespaces
// go at the next run's sweep.
func TestKilledRunLeavesNothing(t *testing.T) {
	ip := requireNetns(t)
	h := proctest.StartHelper(t, "TestKilledRunHelper", killedEnv, killedPrefix, 60*time.Second)
	if len(h.Fields) != 3 {
		t.Fatalf("helper announced %q", h.Fields)
	}
	namespaces := h.Fields[:2]
	pid, err := strconv.Atoi(h.Fields[2])
	if err != nil {
		t.Fatalf("helper's PID %q: %v", h.Fields[2], err)
	}
	t.Cleanup(func() { // whatever the outcome, leave nothing here either
		for _, ns := range namespaces {
			_ = exec.Command(ip, "netns", "del", ns).Run()
		}
	})
	if !proctest.ProcessExists(pid) {
		t.Fatalf("the process in %s (PID %d) is not running before the kill", namespaces[1], pid)
	}

	h.Kill(t)
	proctest.WaitGone(t, pid, "the process in "+namespaces[1], 10*time.Second)
	// The killed process removed nothing; the sweep does.
	for _, ns := range namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			t.Fatalf("the killed run's namespace %s: %v", ns, err)
		}
	}
	if err := sweepNetns(ip); err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the killed run's namespace %s after the sweep: %v", ns, err)
		}
	}
}
