package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/syncbuf"
)

// TestDownBoundedWithClients: neither an idle control connection nor a
// running ping (a thousand requests a second apart) holds the daemon:
// 'down' returns within a few seconds, the daemon has exited, and its
// socket is gone.
func TestDownBoundedWithClients(t *testing.T) {
	startFabric(t, "bounded", 1, nil)
	d := spawnDaemon(t, "bounded", t.TempDir(), 0, "--addr", "10.6.0.1/24")
	d.waitReady(20 * time.Second)
	sock := d.sock

	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	pinger, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Close()
	json.NewEncoder(pinger).Encode(ctlRequest{Cmd: "ping", Addr: "10.6.0.99", Count: 1000, Interval: time.Second})
	time.Sleep(300 * time.Millisecond) // the ping is under way

	start := time.Now()
	code, _, stderr := runCLI(t, "down", "--socket", sock)
	took := time.Since(start)
	if code != exitOK {
		t.Fatalf("down: exit %d: %s", code, stderr)
	}
	if took > 5*time.Second {
		t.Errorf("down took %v with an idle connection and a running ping", took)
	}
	select {
	case code := <-d.exited:
		if code != exitOK {
			t.Errorf("up exited %d: %s", code, d.errOut.String())
		}
	case <-time.After(100 * time.Millisecond):
		t.Fatal("down returned before the daemon finished")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	// The pinger was told, or at least cut off; it is not left hanging.
	pinger.SetReadDeadline(time.Now().Add(time.Second))
	var rep ctlReply
	if err := json.NewDecoder(pinger).Decode(&rep); err == nil && rep.Error == "" {
		t.Errorf("the running ping's answer: %+v; want an error or a closed connection", rep)
	}
}

// signalChildEnv selects what TestSignalChild does in a child process.
const signalChildEnv = "IPOIBD_SIGNAL_CHILD"

// TestSignalChild is the daemon of TestSignals, run in a child process
// so that it can receive real signals; it skips in a normal run. Its
// teardown hangs except in mode "plain".
func TestSignalChild(t *testing.T) {
	mode := os.Getenv(signalChildEnv)
	if mode == "" {
		t.Skip("run by TestSignals")
	}
	startFabric(t, "signal", 1, nil)
	if mode != "plain" {
		teardownHook = func() { select {} }
	}
	if mode == "watchdog" {
		shutdownTimeout = 500 * time.Millisecond
	}
	os.Exit(run([]string{"up", "--device", "sim:signal/host0", "--addr", "10.5.0.1/24", "--socket", os.Getenv("IPOIBD_SIGNAL_SOCKET")}, os.Stdout, os.Stderr))
}

// TestSignals: SIGTERM tears the daemon down and exits 0; a second
// signal ends a teardown that hangs at once (exit 143); and a hung
// teardown with no second signal ends when shutdownTimeout runs out.
func TestSignals(t *testing.T) {
	if os.Getenv(signalChildEnv) != "" {
		t.Skip("in the child")
	}
	for _, tc := range []struct {
		mode    string
		signals int
		code    int
		within  time.Duration
		want    string
	}{
		{"plain", 1, exitOK, 10 * time.Second, ""},
		{"twice", 2, 128 + int(syscall.SIGTERM), 2 * time.Second, "second signal"},
		{"watchdog", 1, exitFailure, 5 * time.Second, "did not finish in time"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "ib0.sock")
			cmd := exec.Command(os.Args[0], "-test.run=^TestSignalChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), signalChildEnv+"="+tc.mode, "IPOIBD_SIGNAL_SOCKET="+sock)
			var stderr syncbuf.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := make(chan string, 64)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			waitLine := func(want string) {
				t.Helper()
				deadline := time.After(20 * time.Second)
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("child ended before %q: %s", want, stderr.String())
						}
						if strings.Contains(l, want) {
							return
						}
					case <-deadline:
						t.Fatalf("no %q from the child: %s", want, stderr.String())
					}
				}
			}
			waitLine("ready")
			cmd.Process.Signal(syscall.SIGTERM)
			waitLine("leaving")
			var start time.Time
			if tc.signals == 2 {
				time.Sleep(200 * time.Millisecond) // the teardown hangs
				start = time.Now()
				cmd.Process.Signal(syscall.SIGTERM)
			} else {
				start = time.Now()
			}
			go func() {
				for range lines {
				}
			}()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				}
				if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
					t.Errorf("exit %d after %v, want %d and %q in: %s", code, time.Since(start), tc.code, tc.want, stderr.String())
				}
			case <-time.After(tc.within):
				t.Fatalf("still running %v after the last signal: %s", tc.within, stderr.String())
			}
		})
	}
}
