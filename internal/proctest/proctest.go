// Package proctest starts the processes and makes the directories of a
// test harness so that a test binary that dies without running its
// cleanups (killed, or panicking at -timeout) leaves nothing running and
// nothing that outlives the next run. smtest (ibsim, OpenSM, children)
// and nstest (daemons in network namespaces) use it.
//
// Every process Start starts gets SIGKILL as its parent-death signal.
// Linux sends that signal when the thread that forked the child ends,
// not the process (prctl(2), PR_SET_PDEATHSIG), and Go ends threads whose
// goroutine exits while locked to them; so every fork happens on one
// thread, locked by a goroutine that never returns. The signal survives
// execve of an ordinary binary, so `ip netns exec NS CMD`, which execs
// CMD in place, passes it on.
//
// Names a harness makes (directories, namespaces) carry the test
// process's PID (Tag); Stale tells the names of runs whose process is
// gone, so the first thing a run makes can sweep away what killed runs
// left.
//
// It is test support only; nothing outside _test.go files imports it.
package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
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

// Start starts c so that it is killed when this process dies.
func Start(c *exec.Cmd) error {
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	forker() <- func() { done <- c.Start() }
	return <-done
}

// CombinedOutput runs c to the end through Start and returns its
// standard output and error together, as exec.Cmd.CombinedOutput does.
func CombinedOutput(c *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := Start(c); err != nil {
		return nil, err
	}
	err := c.Wait()
	return out.Bytes(), err
}

// Tag is what names a harness makes start with: prefix, this process's
// PID and a dash.
func Tag(prefix string) string {
	return fmt.Sprintf("%s%d-", prefix, os.Getpid())
}

// Stale reports whether name was tagged (Tag) by a test process that no
// longer exists. Names that do not carry prefix and a PID are not stale:
// they are not the harness's.
func Stale(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	num, _, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(num)
	if err != nil || pid <= 0 {
		return false
	}
	return !ProcessExists(pid)
}

// ProcessExists reports whether pid names a process that has not ended:
// one that signal 0 reaches (or would, with the rights; EPERM) and that
// is not a zombie waiting for its parent to reap it.
func ProcessExists(pid int) bool {
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

// sweeps remembers, per prefix, that this process has swept once.
var sweeps sync.Map // prefix → *sync.Once

// TempDir makes a directory named Tag(prefix)+random in the system's
// temporary directory and removes it when the test ends. The first call
// for a prefix in a process removes the directories of earlier runs
// whose process is gone.
func TempDir(tb testing.TB, prefix string) string {
	tb.Helper()
	once, _ := sweeps.LoadOrStore(prefix, new(sync.Once))
	once.(*sync.Once).Do(func() {
		if err := SweepDirs(os.TempDir(), prefix); err != nil {
			tb.Logf("removing the directories of earlier, killed runs: %v", err)
		}
	})
	dir, err := os.MkdirTemp("", Tag(prefix))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("remove the test's directory: %v", err)
		}
	})
	return dir
}

// SweepDirs removes the directories in parent that prefix tagged for a
// test process that no longer exists.
func SweepDirs(parent, prefix string) error {
	dirs, err := filepath.Glob(filepath.Join(parent, prefix+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if Stale(prefix, filepath.Base(d)) {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
