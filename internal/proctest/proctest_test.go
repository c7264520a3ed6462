package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestSweepDirs keeps the directories of live processes, this one's
// among them, and removes those of ended ones and nothing else.
func TestSweepDirs(t *testing.T) {
	const prefix = "harness-"
	parent := t.TempDir()
	// An ended process: a child, waited for.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Skipf("no true(1): %v", err)
	}
	dead := c.Process.Pid
	for _, tc := range []struct {
		name string
		kept bool
	}{
		{Tag(prefix) + "123", true},
		{fmt.Sprintf("%s%d-456", prefix, dead), false},
		{fmt.Sprintf("%s%d", prefix, dead), true}, // not a harness name
		{prefix + "x-1", true},
		{fmt.Sprintf("other-%d-1", dead), true},
	} {
		if err := os.Mkdir(filepath.Join(parent, tc.name), 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_, err := os.Stat(filepath.Join(parent, tc.name))
			if kept := err == nil; kept != tc.kept {
				t.Errorf("%s: kept %v, want %v", tc.name, kept, tc.kept)
			}
		}()
	}
	if err := SweepDirs(parent, prefix); err != nil {
		t.Fatal(err)
	}
}

// helperEnv makes TestStartHelper run: TestStartDiesWithParent starts it
// and kills it.
const helperEnv = "IPOIBD_PROCTEST_HELPER"

// TestStartHelper starts a long sleep through Start, prints its PID and
// waits to be killed.
func TestStartHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("TestStartDiesWithParent's helper; runs only when it starts it")
	}
	c := exec.Command("sleep", "120")
	if err := Start(c); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("child %d\n", c.Process.Pid)
	time.Sleep(2 * time.Minute)
	t.Error("not killed within 2 minutes")
}

// TestStartDiesWithParent kills a process that started a child through
// Start, as a -timeout panic or a ^C ends a test binary, without its
// cleanups: the child dies with it.
func TestStartDiesWithParent(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep(1)")
	}
	h := StartHelper(t, "TestStartHelper", helperEnv, "child ", 30*time.Second)
	child, err := strconv.Atoi(h.Fields[0])
	if len(h.Fields) != 1 || err != nil {
		t.Fatalf("helper announced %q", h.Fields)
	}
	if !ProcessExists(child) {
		t.Fatalf("child %d not running before the kill", child)
	}
	h.Kill(t)
	defer syscall.Kill(child, syscall.SIGKILL) // should it have survived
	WaitGone(t, child, "the child", 10*time.Second)
}
