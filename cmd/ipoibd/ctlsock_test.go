package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestIfNameChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"ib0", true},
		{"ib0.8001", true},
		{"a..b", true},
		{"abcdefghijklmno", true},
		{"", false},
		{".", false},
		{"..", false},
		{"...", false},
		{"../../x", false},
		{"a/b", false},
		{"ib:0", false},
		{"ib 0", false},
		{"ib\n0", false},
		{"abcdefghijklmnop", false},
	} {
		if err := checkIfName(tc.name); (err == nil) != tc.ok {
			t.Errorf("checkIfName(%q) = %v; want ok %v", tc.name, err, tc.ok)
		}
	}
	// The CLI refuses such names before touching any file.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, args := range [][]string{
		{"up", "--device", "sim:x/host0", "--addr", "10.0.0.1/24", "--name", "../../x"},
		{"down", "--name", "../../x"},
		{"stats", "--name", ".."},
		{"ping", "--name", "a/b", "10.0.0.1"},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage || !strings.Contains(stderr, "--name") {
			t.Errorf("%q: exit %d, %q; want a usage error naming --name", args, code, stderr)
		}
	}
}

func TestDefaultSocketDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := defaultSocketDir(); got != "/run/user/1000/ipoibd" {
		t.Errorf("with XDG_RUNTIME_DIR: %q", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	want := filepath.Join(os.TempDir(), "ipoibd-"+itoa(os.Geteuid()))
	if os.Geteuid() == 0 {
		want = "/run/ipoibd"
	}
	if got := defaultSocketDir(); got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestPrivateDir: the socket directory is created 0700; one that is
// open to others, owned by someone else or a symbolic link is refused
// with an error that says what to do.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "fresh")
	if err := privateDir(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("fresh directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if err := privateDir(fresh); err != nil {
		t.Errorf("our own directory a second time: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	if err := privateDir(open); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("mode 0777: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(fresh, link)
	if err := privateDir(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symbolic link: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("giving a directory to another user needs root")
	}
	squat := filepath.Join(base, "squat")
	os.Mkdir(squat, 0o700)
	if err := os.Chown(squat, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(squat); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("another user's directory: %v", err)
	}
	// Through up, with the default path: the daemon refuses to start.
	t.Setenv("XDG_RUNTIME_DIR", base)
	os.Rename(squat, filepath.Join(base, "ipoibd"))
	if code, _, stderr := runCLI(t, "up", "--device", "sim:nosuch/host0", "--addr", "10.0.0.1/24"); code != exitFailure {
		t.Errorf("up with a squatted directory: exit %d: %s", code, stderr)
	}
}

// TestSocketOwnership: the lock gives the path to one daemon; a stale
// socket is replaced, anything else at the path is left alone; the socket
// is 0600 from the start; a daemon removes only the socket it created.
func TestSocketOwnership(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ib0.sock")

	// A regular file in the way is not removed.
	os.WriteFile(path, []byte("precious"), 0o600)
	if _, err := listenSocket(path); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("regular file at the path: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("the file in the way was touched: %q, %v", b, err)
	}
	os.Remove(path)

	// A socket a dead daemon left is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	// The socket has its final mode from its bind on, whatever the
	// umask: a client cannot slip in while it is being set.
	oldMask := syscall.Umask(0)
	var boundMode fs.FileMode
	socketBound = func(tmp string) {
		if fi, err := os.Lstat(tmp); err == nil {
			boundMode = fi.Mode().Perm()
		}
	}
	a, err := listenSocket(path)
	socketBound = func(string) {}
	syscall.Umask(oldMask)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if boundMode != 0o600 {
		t.Errorf("socket mode %v at its bind with umask 0, want 0600", boundMode)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("dial the new socket: %v", err)
	} else {
		c.Close()
	}

	// A second daemon on the path is refused while the first lives.
	if _, err := listenSocket(path); err == nil || !strings.Contains(err.Error(), "another ipoibd is serving it") {
		t.Errorf("second daemon: %v", err)
	}
	if waitUnlocked(path, 50*time.Millisecond) {
		t.Error("waitUnlocked: free while a daemon holds the lock")
	}

	// The socket is replaced behind the first daemon's back (an operator
	// removed it and started another server): closing leaves it alone.
	os.Remove(path)
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	a.close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("closing removed a socket it did not create: %v", err)
	}
	if !waitUnlocked(path, time.Second) {
		t.Error("waitUnlocked: still locked after close")
	}
	other.Close()

	// The ordinary case: close removes its own socket.
	b, err := listenSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	b.close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after close: %v", err)
	}
}

// failingListener fails its first n Accepts as a full file table does.
type failingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestControlAcceptErrors: failed Accepts are retried with a growing
// pause, and the server answers once they stop.
func TestControlAcceptErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.n.Store(5)
	var logged atomic.Int32
	s := newCtlServer(ln, &daemon{finished: make(chan struct{})}, func() {}, func(string, ...any) { logged.Add(1) })
	s.wg.Add(1)
	go s.serve()
	defer s.close()
	rep, err := ctlCall(path, ctlRequest{Cmd: "nosuch"}, 5*time.Second)
	if err == nil || !strings.Contains(rep.Error, "unknown command") {
		t.Errorf("after 5 failed Accepts: %+v, %v; want an answer", rep, err)
	}
	if n := logged.Load(); n != 5 {
		t.Errorf("logged %d Accept failures, want 5", n)
	}
}

// TestControlPingLimits: as ping(8), only root may ask for an interval
// under 200 ms, and no one for less than a millisecond or for an
// unbounded count or size.
func TestControlPingLimits(t *testing.T) {
	for _, tc := range []struct {
		req        ctlRequest
		privileged bool
		want       string
	}{
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: 0}, true, "out of range"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: 0}, false, "out of range"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: 100 * time.Millisecond}, false, "cannot flood"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: 100 * time.Millisecond}, true, "not configured yet"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: 200 * time.Millisecond}, false, "not configured yet"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1e6, Interval: time.Second}, true, "out of range"},
		{ctlRequest{Cmd: "ping", Addr: "10.0.0.1", Count: 1, Interval: time.Second, Size: 1 << 20}, true, "out of range"},
	} {
		s := newCtlServer(nil, &daemon{finished: make(chan struct{})}, func() {}, nil)
		s.privileged = func(net.Conn) bool { return tc.privileged }
		client, server := socketPair(t)
		go func() { defer server.Close(); s.handle(server, func() {}) }()
		json.NewEncoder(client).Encode(tc.req)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		var rep ctlReply
		if err := json.NewDecoder(client).Decode(&rep); err != nil || !strings.Contains(rep.Error, tc.want) {
			t.Errorf("%+v (root %v): %+v, %v; want %q", tc.req, tc.privileged, rep, err, tc.want)
		}
		client.Close()
	}
}

// TestCLIOddAnswers: whatever the daemon answers, the client commands
// report an error or print, and never panic.
func TestCLIOddAnswers(t *testing.T) {
	for _, answer := range []string{`{}`, `{"ping":{"received":3}}`, `{"reply":{}}`, `null`, `[]`, `{"error":""}`, ``} {
		for _, args := range cliCommandsForFuzz {
			code, _, stderr := runWithAnswer(t, []byte(answer), args)
			if args[0] == "down" {
				continue // an empty answer is down's success
			}
			if code == exitOK {
				t.Errorf("%q answered %q: exit 0", args, answer)
			}
			if stderr == "" && !strings.Contains(strings.Join(args, " "), "--json") {
				t.Errorf("%q answered %q: exit %d and no message", args, answer, code)
			}
		}
	}
}

// cliCommandsForFuzz are the client commands whose answers are decoded.
var cliCommandsForFuzz = [][]string{
	{"ping", "-c", "1", "10.0.0.1"},
	{"ping", "-c", "1", "--json", "10.0.0.1"},
	{"peers"},
	{"peers", "--json"},
	{"stats"},
	{"stats", "--json"},
	{"down"},
}

// runWithAnswer runs the client command args against a fake daemon that
// reads the request and answers with answer.
func runWithAnswer(t testing.TB, answer []byte, args []string) (int, string, string) {
	old := ctlDial
	defer func() { ctlDial = old }()
	ctlDial = func(string) (net.Conn, error) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		conn := func(fd int) net.Conn {
			f := os.NewFile(uintptr(fd), "ctl")
			defer f.Close()
			c, _ := net.FileConn(f)
			return c
		}
		client, daemon := conn(fds[0]), conn(fds[1])
		go func() {
			defer daemon.Close()
			var req ctlRequest
			json.NewDecoder(daemon).Decode(&req)
			daemon.Write(answer)
		}()
		return client, nil
	}
	var stdout, stderr strings.Builder
	sock := filepath.Join(os.TempDir(), "ipoibd-fuzz-nonexistent.sock")
	code := run(append(append([]string{}, args...), "--socket", sock), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// FuzzControlReply feeds arbitrary bytes to the client commands as the
// daemon's answer: they must exit with a code and never panic.
func FuzzControlReply(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"error":"boom"}`,
		`{"reply":{"seq":1,"bytes":64,"ttl":64,"time_ms":0.1}}{"ping":{"addr":"10.0.0.1","transmitted":1,"received":1,"rtt_min_ms":0.1,"rtt_avg_ms":0.1,"rtt_max_ms":0.1,"rtt_mdev_ms":0,"replies":[]}}`,
		`{"ping":{"received":5}}`,
		`{"peers":{"neighbours":[{"addr":"10.0.0.1"}],"peers":[{"key":1,"lid":null,"mtu":null}],"group":{}}}`,
		`{"stats":{"netdev":{"tx_ok":1},"endpoint":{},"arp":{}}}`,
		`{"stats":{"netdev":null}}`,
		`{"reply":null}`,
		`null`,
		`[1,2`,
	} {
		for i := range cliCommandsForFuzz {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, answer []byte) {
		args := cliCommandsForFuzz[int(which)%len(cliCommandsForFuzz)]
		code, _, _ := runWithAnswer(t, answer, args)
		if code != exitOK && code != exitFailure && code != exitUsage {
			t.Errorf("%q answered %q: exit %d", args, answer, code)
		}
	})
}
