package vmtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// vmKernel returns the kernel to boot, or skips the test with the reason
// when this machine cannot run VMs (qemu or the kernel package missing;
// .ci/run installs what is needed). IPOIBD_VMTEST=0 or -short skip too.
func vmKernel(t testing.TB) *Kernel {
	t.Helper()
	if testing.Short() || os.Getenv("IPOIBD_VMTEST") == "0" {
		t.Skip("VM tests skipped (-short or IPOIBD_VMTEST=0)")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("VM tests need linux/amd64, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	skipUnavailable := func(err error) {
		t.Helper()
		if errors.Is(err, ErrUnavailable) {
			t.Skipf("VM tests skipped: %v (install qemu-system-x86, busybox-static, iproute2, ibverbs-providers, kmod as .ci/run does)", err)
		}
		t.Fatal(err)
	}
	for _, tool := range []string{"qemu-system-x86_64", "busybox", "ip", "rdma", "ibv_devinfo", "ldd"} {
		if _, err := lookTool(tool); err != nil {
			skipUnavailable(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := KernelPackage(ctx)
	if err != nil {
		skipUnavailable(err)
	}
	k, err := FetchKernel(ctx, cache, pkg)
	if err != nil {
		skipUnavailable(err)
	}
	return k
}

// goTool finds the go command that runs these tests.
func goTool(t testing.TB) string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// buildTest compiles pkg's tests into dir with go test -c and returns the
// binary's path. cgo is required: the verbs driver links libibverbs.
func buildTest(t *testing.T, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg)+".test")
	cmd := exec.Command(goTool(t), "test", "-c", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s: %v\n%s", pkg, err, b)
	}
	return out
}

// verbsShare is a shared folder holding the ib/verbs test binary, built
// once for every VM test of this run.
var verbsShare struct {
	sync.Mutex
	dir, bin string
}

func verbsTestShare(t *testing.T) (share, bin string) {
	t.Helper()
	verbsShare.Lock()
	defer verbsShare.Unlock()
	if verbsShare.bin == "" {
		dir, err := os.MkdirTemp("", "vmtest-share-")
		if err != nil {
			t.Fatal(err)
		}
		verbsShare.dir = dir
		verbsShare.bin = buildTest(t, "github.com/ipoibd/ipoibd/ib/verbs", dir)
	}
	return verbsShare.dir, verbsShare.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if verbsShare.dir != "" {
		os.RemoveAll(verbsShare.dir)
	}
	os.Exit(code)
}

// runVMs runs vms and fails the test with each failed VM's log tail.
func runVMs(t testing.TB, cfg Config, vms []VM) []Result {
	t.Helper()
	start := time.Now()
	res, err := Run(context.Background(), cfg, vms)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		t.Logf("VM %s: exit %d after %v (serial log %s)", r.Name, r.ExitCode, r.Elapsed.Round(time.Millisecond), r.LogPath)
		if testing.Verbose() && r.Passed() {
			t.Logf("--- VM %s serial log ---\n%s", r.Name, r.Log)
		}
		if !r.Passed() {
			t.Errorf("VM %s failed: exit %d, timed out %v, qemu %v\n--- serial log tail ---\n%s",
				r.Name, r.ExitCode, r.TimedOut, r.QEMUErr, r.Tail(8000))
		}
	}
	t.Logf("%d VM(s) in %v", len(vms), time.Since(start).Round(time.Millisecond))
	return res
}

// requirePassed checks a test binary's -test.v output in a log for PASS
// lines of the named tests, so a test that skipped inside the VM (and so
// proved nothing) fails here.
func requirePassed(t *testing.T, r Result, tests ...string) {
	t.Helper()
	for _, name := range tests {
		if !strings.Contains(string(r.Log), "--- PASS: "+name+" ") {
			t.Errorf("VM %s: no \"--- PASS: %s\" in the log\n%s", r.Name, name, r.Tail(4000))
		}
	}
}

// TestVerbsOneVM runs the ib/verbs tests against soft-RoCE (rxe0) in one
// VM: probe, open, UD loopback with the GRH, multicast attach with the
// IP-level join, MAD port refusal on RoCE, send errors and flushes, zero
// allocations in steady state, async port events, and a CQ armed on
// demand.
func TestVerbsOneVM(t *testing.T) {
	k := vmKernel(t)
	share, bin := verbsTestShare(t)
	script := `ibv_devinfo
cd /tmp && IPOIBD_VERBS_DEVICE=rxe0 ` + GuestShare + `/` + filepath.Base(bin) + ` -test.v -test.count=1 -test.timeout=150s`
	res := runVMs(t, Config{Kernel: k, Share: share, Binaries: []string{bin}, WorkDir: t.TempDir()},
		[]VM{{Name: "vm0", Script: script}})
	requirePassed(t, res[0], "TestDeviceProbe", "TestDeviceOpen", "TestUDLoopback", "TestMulticast",
		"TestOpenMADPort", "TestMADPortPlumbing", "TestSendErrorsAndFlush", "TestSteadyStateAllocs", "TestAsyncEvents",
		"TestArmOnDemand")
}

// TestVerbsTwoVMs runs TestPeer in two VMs on one Ethernet: each finds
// the other through the IPoIB broadcast group and answers by unicast.
func TestVerbsTwoVMs(t *testing.T) {
	k := vmKernel(t)
	share, bin := verbsTestShare(t)
	script := `cd /tmp && IPOIBD_VERBS_DEVICE=rxe0 IPOIBD_VERBS_PEER=1 ` + GuestShare + `/` + filepath.Base(bin) +
		` -test.v -test.count=1 -test.run '^TestPeer$' -test.timeout=120s`
	res := runVMs(t, Config{Kernel: k, Share: share, Binaries: []string{bin}, WorkDir: t.TempDir()},
		[]VM{{Name: "vm0", Script: script}, {Name: "vm1", Script: script}})
	for _, r := range res {
		requirePassed(t, r, "TestPeer")
	}
}
