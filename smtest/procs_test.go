package smtest

// What the harness leaves behind when the test binary dies without
// running its cleanups (killed, or panicking at -timeout): nothing that
// keeps running, and no directory that outlives the next run.
//
// Every process the harness starts gets SIGKILL as its parent-death
// signal and each subnet's directory is named after the test process's
// PID, swept by the next run (internal/proctest says how). ibsim in
// particular would otherwise run on: it ignores the end of its console.

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

// dirPrefix starts the name of every directory the harness makes in the
// system's temporary directory; the PID of the test process follows.
const dirPrefix = "ipoibd-smtest-"

// startProc starts c so that it dies with this process.
func startProc(c *exec.Cmd) error { return proctest.Start(c) }

// combinedOutput runs c to the end, so that it dies with this process.
func combinedOutput(c *exec.Cmd) ([]byte, error) { return proctest.CombinedOutput(c) }

// tempDir makes the test's directory, sweeping killed runs' first.
func tempDir(t *testing.T) string { return proctest.TempDir(t, dirPrefix) }

// killedEnv makes TestKilledRunHelper run: TestKilledRunLeavesNothing
// starts it and kills it.
const killedEnv = "IPOIBD_SMTEST_KILLED"

// killedPrefix starts the helper's line naming its directory and the
// PIDs of the processes it started.
const killedPrefix = "smtest-killed "

// TestKilledRunHelper starts ibsim, an OpenSM and a child, says where,
// and waits to be killed.
func TestKilledRunHelper(t *testing.T) {
	if os.Getenv(killedEnv) == "" {
		t.Skip("TestKilledRunLeavesNothing's helper; runs only when it starts it")
	}
	s := newSubnet(t, "")
	s.startSM("Hca1", 1)
	s.waitMaster("Hca1")
	ch := s.startChild("Hca2")
	fmt.Printf("%s%s %d %d %d\n", killedPrefix, s.dir, s.ibsim.Process.Pid, s.sms["Hca1"].Process.Pid, ch.c.Process.Pid)
	time.Sleep(2 * time.Minute)
	t.Error("not killed within 2 minutes")
}

// TestKilledRunLeavesNothing kills a test process that runs ibsim, an
// OpenSM and a child, as a -timeout panic or a ^C ends it, without its
// cleanups: the three die with it, and its directory goes at the next
// run's sweep.
func TestKilledRunLeavesNothing(t *testing.T) {
	needTools(t)
	h := proctest.StartHelper(t, "TestKilledRunHelper", killedEnv, killedPrefix, 90*time.Second)
	if len(h.Fields) != 4 {
		t.Fatalf("helper announced %q", h.Fields)
	}
	dir := h.Fields[0]
	names := []string{"ibsim", "opensm", "child"}
	var pids []int
	for _, p := range h.Fields[1:] {
		pid, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("helper's PID %q: %v", p, err)
		}
		pids = append(pids, pid)
	}
	for i, pid := range pids {
		if !proctest.ProcessExists(pid) {
			t.Fatalf("%s (PID %d) not running before the kill", names[i], pid)
		}
	}

	h.Kill(t)
	for i, pid := range pids {
		proctest.WaitGone(t, pid, names[i], 10*time.Second)
	}
	// The killed process removed nothing; the sweep does.
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed run's directory: %v", err)
	}
	if err := proctest.SweepDirs(filepath.Dir(dir), dirPrefix); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed run's directory %s after the sweep: %v", dir, err)
	}
}
