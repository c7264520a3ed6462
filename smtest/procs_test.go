package smtest

// What the harness leaves behind when the test binary dies without
// running its cleanups (killed, or panicking at -timeout): nothing that
// keeps running, and no directory that outlives the next run.
//
// Every process the harness starts gets SIGKILL as its parent-death
// signal. Linux sends that signal when the thread that forked the child
// ends, not the process (prctl(2), PR_SET_PDEATHSIG), and Go ends threads
// whose goroutine exits while locked to them; so every fork happens on
// one thread, locked by a goroutine that never returns. ibsim in
// particular would otherwise run on: it ignores the end of its console.
//
// Each subnet's directory is named after the test process's PID; the
// first directory a run makes removes those of runs whose process is
// gone.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// forker is the channel of the thread every child is forked on.
var forker = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		// Never unlocked: the thread lives as long as the process.
		runtime.LockOSThread()
		for fn := range ch {
			fn()
		}
	}()
	return ch
})

// startProc starts c so that it is killed when this process dies.
func startProc(c *exec.Cmd) error {
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	forker() <- func() { done <- c.Start() }
	return <-done
}

// combinedOutput runs c to the end through startProc and returns its
// standard output and error together, as exec.Cmd.CombinedOutput does.
func combinedOutput(c *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := startProc(c); err != nil {
		return nil, err
	}
	err := c.Wait()
	return out.Bytes(), err
}

// dirPrefix starts the name of every directory the harness makes in the
// system's temporary directory; the PID of the test process follows.
const dirPrefix = "ipoibd-smtest-"

// sweepOnce removes dead runs' directories once per process.
var sweepOnce sync.Once

// tempDir makes the test's directory and removes it when the test ends.
func tempDir(t *testing.T) string {
	t.Helper()
	sweepOnce.Do(func() {
		if err := sweepStale(os.TempDir()); err != nil {
			t.Logf("removing the directories of earlier, killed runs: %v", err)
		}
	})
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the test's directory: %v", err)
		}
	})
	return dir
}

// sweepStale removes the harness directories in parent whose test
// process no longer exists.
func sweepStale(parent string) error {
	dirs, err := filepath.Glob(filepath.Join(parent, dirPrefix+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		pid, ok := dirPID(filepath.Base(d))
		if !ok || processExists(pid) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dirPID reads the PID from a directory name dirPrefix+"<pid>-<random>".
func dirPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, dirPrefix)
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(num)
	return pid, err == nil && pid > 0
}

// processExists reports whether pid names a process that has not ended:
// one that signal 0 reaches (or would, with the rights; EPERM) and that
// is not a zombie waiting for its parent to reap it.
func processExists(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	// /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces
	// and parentheses, the state follows the last ')'.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

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
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(exe, "-test.run=^TestKilledRunHelper$", "-test.timeout=5m")
	c.Env = append(os.Environ(), killedEnv+"=1")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := startProc(c); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), killedPrefix); ok {
				line <- l
			}
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	var f []string
	select {
	case l, ok := <-line:
		f = strings.Fields(l)
		if !ok || len(f) != 4 {
			_ = c.Process.Kill()
			_ = c.Wait()
			t.Fatalf("helper said %q before exiting:\n%s", l, stderr.String())
		}
	case <-time.After(90 * time.Second):
		_ = c.Process.Kill()
		_ = c.Wait()
		t.Fatalf("helper did not start its subnet within 90s:\n%s", stderr.String())
	}
	dir := f[0]
	names := []string{"ibsim", "opensm", "child"}
	var pids []int
	for _, p := range f[1:] {
		pid, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("helper's PID %q: %v", p, err)
		}
		pids = append(pids, pid)
	}
	for i, pid := range pids {
		if !processExists(pid) {
			t.Fatalf("%s (PID %d) not running before the kill", names[i], pid)
		}
	}

	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = c.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for i, pid := range pids {
		for processExists(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (PID %d) still running 10s after its test process was killed", names[i], pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The killed process removed nothing; the sweep does.
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed run's directory: %v", err)
	}
	if err := sweepStale(filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed run's directory %s after the sweep: %v", dir, err)
	}
}

// TestSweepStale keeps the directories of live processes, this one's
// among them, and removes those of ended ones and nothing else.
func TestSweepStale(t *testing.T) {
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
		{fmt.Sprintf("%s%d-123", dirPrefix, os.Getpid()), true},
		{fmt.Sprintf("%s%d-456", dirPrefix, dead), false},
		{fmt.Sprintf("%s%d", dirPrefix, dead), true}, // not a harness name
		{dirPrefix + "x-1", true},
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
	if err := sweepStale(parent); err != nil {
		t.Fatal(err)
	}
}
