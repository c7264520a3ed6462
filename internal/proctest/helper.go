package proctest

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Helper is this test binary run again for one test of its own (the
// helper) that makes something, announces it on a line of its standard
// output and waits to be killed: how a harness proves what a killed run
// leaves behind.
type Helper struct {
	cmd *exec.Cmd
	// Fields are the words of the announced line after its prefix.
	Fields []string
}

// StartHelper runs the test named test in this binary with env set to
// "1" (the helper skips itself without it) and waits, at most within,
// for a line starting with prefix. It fails tb if the helper exits or
// says nothing in time. The helper is killed when the test ends, if
// Kill has not killed it before.
func StartHelper(tb testing.TB, test, env, prefix string, within time.Duration) *Helper {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	c := exec.Command(exe, "-test.run=^"+test+"$", "-test.timeout=5m")
	c.Env = append(os.Environ(), env+"=1")
	out, err := c.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := Start(c); err != nil {
		tb.Fatal(err)
	}
	h := &Helper{cmd: c}
	tb.Cleanup(h.kill)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				line <- l
			}
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			h.kill()
			tb.Fatalf("%s exited without announcing what it made:\n%s", test, stderr.String())
		}
		h.Fields = strings.Fields(l)
	case <-time.After(within):
		h.kill()
		tb.Fatalf("%s announced nothing within %v:\n%s", test, within, stderr.String())
	}
	return h
}

// Kill kills the helper, as a -timeout panic or a ^C ends a test binary:
// no cleanup of its runs.
func (h *Helper) Kill(tb testing.TB) {
	tb.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		tb.Fatal(err)
	}
	_ = h.cmd.Wait()
}

func (h *Helper) kill() {
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// WaitGone fails tb unless process pid (what says which) has ended
// within the given time.
func WaitGone(tb testing.TB, pid int, what string, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for ProcessExists(pid) {
		if time.Now().After(deadline) {
			tb.Fatalf("%s (PID %d) still running %v after its test process was killed", what, pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
