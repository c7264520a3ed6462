package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildWithoutRDMA builds ipoibd the two ways a newcomer's machine may
// force (gcc without the rdma-core headers; no cgo at all), then runs it:
// the simulator demo must work and "devices" must list the verbs driver as
// unavailable with the reason. The headers are hidden honestly: the C
// compiler gets -nostdinc and its own search list, with every directory
// that holds infiniband/ replaced by a copy of links to everything else.
func TestBuildWithoutRDMA(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ipoibd twice (-short)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root := moduleRoot(t)
	tests := []struct {
		name string
		env  func(t *testing.T) []string
		why  string
	}{
		{"cgo-without-rdma-headers", headerlessEnv, "built without the rdma-core headers"},
		{"cgo-disabled", func(*testing.T) []string { return []string{"CGO_ENABLED=0"} }, "not built in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append(os.Environ(), tt.env(t)...)
			bin := filepath.Join(t.TempDir(), "ipoibd")
			for _, args := range [][]string{
				{"build", "-o", bin, "./cmd/ipoibd"},
				{"vet", "./ib/verbs", "./cmd/ipoibd"},
			} {
				cmd := exec.Command(goBin, args...)
				cmd.Dir, cmd.Env = root, env
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
			out, err := exec.Command(bin, "devices", "--json").Output()
			var devs devicesJSON
			if jerr := json.Unmarshal(out, &devs); jerr != nil {
				t.Fatalf("devices --json: %v (exit %v)\n%s", jerr, err, out)
			}
			found := false
			for _, d := range devs.Drivers {
				if d.Name == "verbs" {
					found = true
					if d.Unavailable == nil || !strings.Contains(*d.Unavailable, tt.why) {
						t.Errorf("verbs driver: unavailable = %v, want a reason containing %q", orDash(d.Unavailable), tt.why)
					}
				}
			}
			if !found {
				t.Errorf("devices --json lists no verbs driver: %s", out)
			}
			cmd := exec.Command(bin, "sim", "--hosts", "2")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("ipoibd sim --hosts 2: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), "3/3 hosts ok") {
				t.Errorf("ipoibd sim --hosts 2 printed:\n%s", stdout.String())
			}
		})
	}
}

// moduleRoot is the folder holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return dir
}

// headerlessEnv returns CGO_CFLAGS that give the C compiler its usual
// system include directories minus any infiniband/ folder in them.
func headerlessEnv(t *testing.T) []string {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s): the cgo-disabled case covers this machine", cc)
	}
	cmd := exec.Command(cc, "-xc", "-E", "-v", "-")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -E -v: %v\n%s", cc, err, out)
	}
	var dirs []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#include <...> search starts here"):
			in = true
		case strings.HasPrefix(line, "End of search list"):
			in = false
		case in:
			dirs = append(dirs, strings.TrimSpace(line))
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("no include search list in:\n%s", out)
	}
	flags := []string{"-O2", "-g", "-nostdinc"}
	for i, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "infiniband")); err == nil {
			dir = shadowWithout(t, dir, "infiniband", i)
		}
		flags = append(flags, "-isystem", dir)
	}
	return []string{"CGO_ENABLED=1", "CC=" + cc, "CGO_CFLAGS=" + strings.Join(flags, " ")}
}

// shadowWithout makes a folder of symlinks to every entry of dir but
// skip.
func shadowWithout(t *testing.T, dir, skip string, n int) string {
	t.Helper()
	shadow := filepath.Join(t.TempDir(), "include"+string(rune('0'+n)))
	if err := os.MkdirAll(shadow, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == skip {
			continue
		}
		if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(shadow, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return shadow
}

// TestVerbsWithoutLibibverbs runs ipoibd where libibverbs.so.1 cannot be
// loaded (in a private mount namespace, /dev/null is bound over it): the
// binary must start, run the demo, and list the verbs driver as
// unavailable, naming the library and the package that brings it. It
// needs root (or unprivileged mount namespaces) and a binary built with
// the rdma-core headers.
func TestVerbsWithoutLibibverbs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ipoibd (-short)")
	}
	lib := "/usr/lib/x86_64-linux-gnu/libibverbs.so.1"
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("%s not installed: nothing to hide", lib)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	bin := filepath.Join(t.TempDir(), "ipoibd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/ipoibd")
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	hidden := func(args ...string) (string, error) {
		script := `mount --bind /dev/null "$0" && exec "$@"`
		cmd := exec.Command(unshare, append([]string{"-m", "sh", "-c", script, lib, bin}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if strings.Contains(stderr.String(), "mount") || strings.Contains(stderr.String(), "unshare") {
			t.Skipf("cannot hide the library here: %s", stderr.String())
		}
		return stdout.String() + stderr.String(), err
	}
	out, _ := hidden("devices", "--json")
	var devs devicesJSON
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("devices --json: %v\n%s", err, out)
	}
	found := false
	for _, d := range devs.Drivers {
		if d.Name != "verbs" {
			continue
		}
		found = true
		if d.Unavailable != nil && (strings.Contains(*d.Unavailable, "not built in") || strings.Contains(*d.Unavailable, "built without")) {
			t.Skipf("this build has no verbs driver to load: %s", *d.Unavailable)
		}
		if d.Unavailable == nil || !strings.Contains(*d.Unavailable, "libibverbs.so.1") || !strings.Contains(*d.Unavailable, "apt-get install libibverbs1") {
			t.Errorf("verbs driver with libibverbs.so.1 unloadable: unavailable = %v", orDash(d.Unavailable))
		}
	}
	if !found {
		t.Errorf("devices --json lists no verbs driver:\n%s", out)
	}
	if out, err := hidden("sim", "--hosts", "2"); err != nil || !strings.Contains(out, "3/3 hosts ok") {
		t.Errorf("sim without libibverbs: %v\n%s", err, out)
	}
}
