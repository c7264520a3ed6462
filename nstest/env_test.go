package nstest

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/proctest"
	"golang.org/x/sys/unix"
)

// What the harness leaves behind when the test binary dies without
// running its cleanups (killed, or panicking at -timeout): the processes
// it started in namespaces die with it (internal/proctest), and the
// namespaces and the folder of built binaries, both named after the test
// process's PID, are removed by the next run.

// nsPrefix starts every namespace name the harness makes; the PID of the
// test process and a sequence number follow.
const nsPrefix = "ipoibd-nst-"

// binPrefix starts the name of the folder the binaries are built in.
const binPrefix = "ipoibd-nstest-bin-"

// dirPrefix starts the name of a test's own folder (sockets, logs).
const dirPrefix = "ipoibd-nstest-dir-"

// topoSeq keeps namespace names unique within the process; the process
// ID keeps them apart from other runs.
var topoSeq atomic.Int32

// sweepNetnsOnce removes dead runs' namespaces once per process.
var sweepNetnsOnce sync.Once

// sweepNetns deletes the namespaces that nsPrefix tagged for a test
// process that no longer exists.
func sweepNetns(ip string) error {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !proctest.Stale(nsPrefix, e.Name()) {
			continue
		}
		if out, err := exec.Command(ip, "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", e.Name(), err, bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// topo is a bridge in its own namespace and hosts joined to it.
type topo struct {
	t     testing.TB
	sw    string   // the switch namespace
	hosts []string // host namespaces; each has eth0
	addrs []netip.Prefix
}

// requireNetns skips the test where namespaces cannot be made.
func requireNetns(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: network-namespace tests do not run under -short")
	}
	if os.Getuid() != 0 {
		t.Skip("SKIP: network namespaces and raw sockets need root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("SKIP: iproute2's ip is not installed")
	}
	return ip
}

// run runs a command and fails the test with its output if it fails.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newTopo builds n hosts, host i at 10.88.0.(i+1)/24, on links of the
// given MTU (0: the veth default).
func newTopo(t testing.TB, n, mtu int) *topo {
	t.Helper()
	ip := requireNetns(t)
	sweepNetnsOnce.Do(func() {
		if err := sweepNetns(ip); err != nil {
			t.Logf("removing the namespaces of earlier, killed runs: %v", err)
		}
	})
	p := fmt.Sprintf("%s%d-", proctest.Tag(nsPrefix), topoSeq.Add(1))
	tp := &topo{t: t, sw: p + "sw"}
	if out, err := exec.Command(ip, "netns", "add", tp.sw).CombinedOutput(); err != nil {
		t.Skipf("SKIP: cannot create a network namespace here: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		for _, ns := range append(tp.hosts, tp.sw) {
			_ = exec.Command(ip, "netns", "del", ns).Run()
		}
	})
	run(t, ip, "-n", tp.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	run(t, ip, "-n", tp.sw, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%sh%d", p, i)
		run(t, ip, "netns", "add", ns)
		tp.hosts = append(tp.hosts, ns)
		run(t, ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
		port := fmt.Sprintf("p%d", i)
		run(t, ip, "-n", tp.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		if mtu > 0 {
			run(t, ip, "-n", tp.sw, "link", "set", port, "mtu", fmt.Sprint(mtu))
			run(t, ip, "-n", ns, "link", "set", "eth0", "mtu", fmt.Sprint(mtu))
		}
		run(t, ip, "-n", tp.sw, "link", "set", port, "master", "br0", "up")
		run(t, ip, "-n", ns, "link", "set", "lo", "up")
		a := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 88, 0, byte(i + 1)}), 24)
		tp.addrs = append(tp.addrs, a)
		run(t, ip, "-n", ns, "addr", "add", a.String(), "dev", "eth0")
		run(t, ip, "-n", ns, "link", "set", "eth0", "up")
	}
	// The link-local addresses appear once the links are up.
	for _, ns := range tp.hosts {
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, _ := exec.Command(ip, "-n", ns, "-6", "addr", "show", "dev", "eth0", "scope", "link").Output()
			if bytes.Contains(out, []byte("fe80")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no IPv6 link-local address on eth0", ns)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return tp
}

// inNetns runs fn on a thread that has entered namespace ns; sockets fn
// creates stay in ns. The thread is discarded afterwards.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		errc <- func() error {
			if err := enterNetns(ns); err != nil {
				return err
			}
			return fn()
		}()
	}()
	return <-errc
}

// enterNetns moves the calling (locked) thread into namespace ns.
func enterNetns(ns string) error {
	fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	return nil
}

// binaries builds ipoibd and vmxfer once per test process.
var binaries struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the built binaries once every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

// buildBinaries returns the folder holding ipoibd and vmxfer.
func buildBinaries(t testing.TB) string {
	t.Helper()
	binaries.once.Do(func() {
		if err := proctest.SweepDirs(os.TempDir(), binPrefix); err != nil {
			t.Logf("removing the binaries of earlier, killed runs: %v", err)
		}
		binaries.dir, binaries.err = os.MkdirTemp("", proctest.Tag(binPrefix))
		if binaries.err != nil {
			return
		}
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		for _, pkg := range []string{"github.com/ipoibd/ipoibd/cmd/ipoibd", "github.com/ipoibd/ipoibd/vmtest/cmd/vmxfer"} {
			cmd := exec.Command(gobin, "build", "-o", filepath.Join(binaries.dir, filepath.Base(pkg)), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				binaries.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return binaries.dir
}

// proc is a process started in a namespace, with its output in a file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

// start runs name with args in namespace ns; it is killed when the test
// ends if still running, and when the test process dies.
func (tp *topo) start(ns, logPath, name string, args ...string) *proc {
	tp.t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		tp.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := proctest.Start(cmd); err != nil {
		f.Close()
		tp.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	tp.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLog waits until the process's log contains want and returns the
// log; it fails the test if the process exits first or time runs out.
func (p *proc) waitLog(t testing.TB, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(want)) {
			return string(b)
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v) before logging %q:\n%s", p.cmd.Args, err, want, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q after %v:\n%s", p.cmd.Args, want, timeout, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		return errors.New("timed out")
	}
}
