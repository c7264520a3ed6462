package main

import (
	"flag"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/syncbuf"
)

func TestInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("c", 0, "")
	fs.Bool("q", false, "")
	fs.String("socket", "", "")
	tests := []struct{ in, want []string }{
		{[]string{"10.0.0.1"}, []string{"--", "10.0.0.1"}},
		{[]string{"-c", "3", "10.0.0.1"}, []string{"-c", "3", "--", "10.0.0.1"}},
		{[]string{"10.0.0.1", "-c", "3", "-q"}, []string{"-c", "3", "-q", "--", "10.0.0.1"}},
		{[]string{"-q", "10.0.0.1", "--socket=/s"}, []string{"-q", "--socket=/s", "--", "10.0.0.1"}},
		{[]string{"--socket", "/s", "10.0.0.1", "-c"}, []string{"--socket", "/s", "-c", "--", "10.0.0.1"}},
		{[]string{"-c", "3", "--", "-x"}, []string{"-c", "3", "--", "-x"}},
		{[]string{"-nosuch", "10.0.0.1"}, []string{"-nosuch", "--", "10.0.0.1"}},
	}
	for _, tt := range tests {
		if got := interspersed(fs, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("interspersed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--version")
	if code != exitOK || stderr != "" {
		t.Fatalf("--version: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ipoibd ") || !strings.Contains(lines[0], runtime.Version()) ||
		!strings.Contains(lines[0], "github.com/ipoibd/ipoibd") {
		t.Errorf("--version first line %q, want the version, module and Go version", lines[0])
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "drivers: ") || !strings.Contains(lines[1], "sim") || !strings.Contains(lines[1], "verbs") {
		t.Errorf("--version drivers line: %q", stdout)
	}
}

// TestPrintDevicesUnavailable: a device seen only in sysfs is shown with
// what sysfs knows and marked unavailable, without invented LIDs or MTUs.
func TestPrintDevicesUnavailable(t *testing.T) {
	netdev := "eth0"
	guid := "0x505400fffe123456"
	devs := []deviceJSON{{Driver: "verbs", Name: "rxe0", Usable: false, NodeGUID: &guid, NetDev: &netdev,
		Ports: []portJSON{{Port: 1, State: "ACTIVE", LinkLayer: "Ethernet", GIDs: []string{}, PKeys: []string{}}}}}
	var b strings.Builder
	printDevices(&b, devs)
	want := "verbs:rxe0 (unavailable) node GUID 0x505400fffe123456 netdev eth0\n  port 1: ACTIVE, link layer Ethernet\n"
	if b.String() != want {
		t.Errorf("printDevices:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestUpNamesTheCause: up on a device no driver can open says why, with
// the drivers' own reasons, in one line.
func TestUpNamesTheCause(t *testing.T) {
	var why string
	for _, d := range driverStatus(ib.ProbeAll()) {
		if d.Name == "verbs" && d.Unavailable != nil {
			why = *d.Unavailable
		}
	}
	if why == "" {
		t.Skip("the verbs driver can run here")
	}
	code, _, stderr := runCLI(t, "up", "--device", "rxe0", "--addr", "10.0.0.1/24")
	if code != exitFailure || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, why) || strings.Count(stderr, "verbs:") != 1 {
		t.Errorf("up --device rxe0: exit %d, stderr %q; want one line with %q", code, stderr, why)
	}
}

// TestSimProgress: the progress line counts joins, leases and pings out
// of what the run needs; it is only drawn on a terminal.
func TestSimProgress(t *testing.T) {
	d := &demo{hosts: make([]*demoHost, 5)}
	d.nJoined.Store(5)
	d.nLeased.Store(3)
	d.nPinged.Store(2)
	var b syncbuf.Buffer
	done := d.progress(&b)
	done()
	if got, want := b.String(), "\rjoined 5/5, leased 3/4, pinged 2/8 \n"; !strings.HasSuffix(got, want) {
		t.Errorf("progress wrote %q, want it to end with %q", got, want)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe taken for a terminal: the progress line would go into logs")
	}
}
