package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// runCLI runs the command line in-process and returns its exit code and
// output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{nil, "usage: ipoibd"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"sim", "--hosts", "0"}, "--hosts 0: must be between 1 and 4000"},
		{[]string{"sim", "--hosts", "x"}, "invalid value"},
		{[]string{"sim", "--pkey", "0x10000"}, "not a 16-bit number"},
		{[]string{"sim", "--pkey", "0x8000"}, "partition 0 is the invalid P_Key"},
		{[]string{"sim", "--mtu", "1500"}, "--mtu 1500: must be 2048 or 4096"},
		{[]string{"sim", "--loss", "1.5"}, "--loss 1.5: must be a probability"},
		{[]string{"sim", "--delay", "-1s"}, "--delay -1s"},
		{[]string{"sim", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"sim", "extra"}, `unexpected argument "extra"`},
		{[]string{"devices", "--json=maybe"}, "invalid boolean value"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d (usage)", code, exitUsage)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.want)
			}
		})
	}
}

func TestHelpOnEverySubcommand(t *testing.T) {
	for name := range commands {
		code, stdout, stderr := runCLI(t, name, "--help")
		if code != exitOK {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, stderr)
		}
		if !strings.Contains(stdout, "usage: ipoibd "+name) {
			t.Errorf("%s --help: stdout %q lacks the synopsis", name, stdout)
		}
		if stderr != "" {
			t.Errorf("%s --help wrote to stderr: %q", name, stderr)
		}
	}
}

// TestSimJSON runs the demo the way a script would and checks what it
// reports against what the fabric must have done.
func TestSimJSON(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, "sim", "--hosts", "6", "--json", "--pcap", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s\n%s", code, stderr, stdout)
	}
	var rep simReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	tot := rep.Totals
	if !rep.OK || tot.Hosts != 7 || tot.OK != 7 || tot.Joined != 7 || tot.Leased != 6 ||
		tot.PingsOK != 12 || tot.PingsWanted != 12 || tot.AllLeasedMs == nil || *tot.AllLeasedMs <= 0 {
		t.Fatalf("totals %+v, want a server and 6 clients all joined, leased and pinging", tot)
	}
	checkJSONConvention(t, "sim", stdout)
	lids, ips := map[string]bool{}, map[string]bool{}
	for i, h := range rep.Hosts {
		if h.LID == "0x0000" || lids[h.LID] {
			t.Errorf("host %s has LID %s: zero or duplicate", h.Host, h.LID)
		}
		lids[h.LID] = true
		if h.QPN == nil || *h.QPN == "0x000000" || *h.QPN == "0x000001" {
			t.Errorf("host %s has QPN %v", h.Host, orDash(h.QPN))
		}
		ip := orDash(h.IP)
		if ips[ip] {
			t.Errorf("address %s given twice", ip)
		}
		ips[ip] = true
		if i == 0 {
			if h.Host != "server" || ip != "10.77.0.1/16" || !h.Static || h.LeaseS != nil {
				t.Errorf("server row %+v", h)
			}
			continue
		}
		if !strings.HasPrefix(ip, "10.77.") || !strings.HasSuffix(ip, "/16") || h.LeaseS == nil || *h.LeaseS != 3600 {
			t.Errorf("host %s leased %q for %v s", h.Host, ip, orDash(h.LeaseS))
		}
		if h.RTTServer == nil || *h.RTTServer <= 0 || h.RTTNext == nil || *h.RTTNext <= 0 || h.Status != "ok" || h.Error != nil {
			t.Errorf("host %s: rtt %v/%v status %s error %v", h.Host, orDash(h.RTTServer), orDash(h.RTTNext), h.Status, orDash(h.Error))
		}
	}
	if tot.RTTP50Ms == nil || tot.RTTP99Ms == nil || *tot.RTTP50Ms <= 0 || *tot.RTTP99Ms < *tot.RTTP50Ms {
		t.Errorf("RTT p50 %v p99 %v", orDash(tot.RTTP50Ms), orDash(tot.RTTP99Ms))
	}
	if rep.Fabric.Sent == 0 || rep.Fabric.Delivered == 0 {
		t.Errorf("fabric %+v", rep.Fabric)
	}
	checkPcapWithTshark(t, filepath.Join(dir, "fabric-ib.pcap"), "SubnAdmSet(MCMemberRecord)", "SubnAdmGetResp(PathRecord)", "UD Send Only")
	checkPcapWithTshark(t, filepath.Join(dir, "host1.pcap"), "DHCP Discover", "DHCP ACK", "Echo (ping) request", "Echo (ping) reply", "Who has")
}

// checkPcapWithTshark asserts tshark opens the capture with no malformed
// packets and sees the SA exchanges and the datagrams.
func checkPcapWithTshark(t *testing.T, path string, wants ...string) {
	t.Helper()
	if !pcaptest.HaveTshark() {
		t.Log("tshark not installed; pcap not decoded")
		return
	}
	text := strings.Join(pcaptest.Fields(t, path, "", "_ws.col.Info", "_ws.malformed"), "\n")
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(strings.ToLower(text), "malformed") {
		t.Errorf("tshark flags malformed packets:\n%s", text)
	}
}

func TestSimWithFaults(t *testing.T) {
	code, stdout, stderr := runCLI(t, "sim", "--hosts", "12", "--loss", "0.05", "--dup", "0.05", "--reorder", "0.05", "--seed", "7", "--json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s\n%s", code, stderr, stdout)
	}
	var rep simReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Totals.OK != 13 || rep.Totals.Leased != 12 {
		t.Fatalf("totals %+v under faults", rep.Totals)
	}
}

// TestSimCannotSucceed: with most packets lost, the run ends when the
// first host runs out of time for a step, not at --timeout, and names
// the host and the step, once.
func TestSimCannotSucceed(t *testing.T) {
	start := time.Now()
	code, stdout, stderr := runCLI(t, "sim", "--hosts", "2", "--loss", "0.95", "--step-timeout", "1s", "--timeout", "60s")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitFailure, stdout, stderr)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("a run that could not succeed took %v", took)
	}
	re := regexp.MustCompile(`^ipoibd sim: \d of 3 hosts failed.*: (server|host\d) at (join|dhcp|ping): .+\n$`)
	if !re.MatchString(stderr) {
		t.Errorf("stderr %q, want one line naming the failed hosts and steps", stderr)
	}
	if strings.Contains(stderr, "context deadline exceeded") {
		t.Errorf("stderr %q: a raw context error", stderr)
	}
	if !regexp.MustCompile(`failed at (join|dhcp|ping)`).MatchString(stdout) {
		t.Errorf("table does not show where hosts failed:\n%s", stdout)
	}
}

// TestSimTableAligned: every row of the table has its columns where the
// header has them, whatever the hosts got to.
func TestSimTableAligned(t *testing.T) {
	_, stdout, _ := runCLI(t, "sim", "--hosts", "3")
	lines := strings.Split(stdout, "\n")
	header := lines[0]
	for _, unit := range []string{"JOIN (ms)", "RTT-SRV (ms)", "LEASE (s)"} {
		if !strings.Contains(header, unit) {
			t.Errorf("header %q lacks %q", header, unit)
		}
	}
	// Numbers are right-aligned under their heading: each ends where the
	// heading ends, with a space after it.
	for _, col := range []string{"LID", "QPN", "JOIN (ms)", "RTT-SRV (ms)"} {
		end := strings.Index(header, col) + len(col)
		for _, l := range lines[1:5] {
			if len(l) <= end || l[end-1] == ' ' || l[end] != ' ' {
				t.Errorf("column %q: row %q is not aligned with the header %q", col, l, header)
			}
		}
	}
}

func TestSimManyHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	// 256 clients and the server, the size the suite must show working.
	// It runs the real command, built without the race detector: under
	// -race, 66,000 broadcast deliveries per DHCP round take minutes, and
	// what this test is about is the binary a user runs.
	bin := filepath.Join(t.TempDir(), "ipoibd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "sim", "--hosts", "256", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("ipoibd sim --hosts 256: %v\n%s", err, stderr.String())
	}
	var rep simReport
	if err := json.Unmarshal(stdout, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Totals.OK != 257 || rep.Totals.Leased != 256 || rep.Totals.PingsOK != 512 {
		t.Fatalf("totals %+v", rep.Totals)
	}
	t.Logf("256 clients joined, leased and pinged in %.0f ms", rep.ElapsedMs)
}

func TestDevicesWithNoDevices(t *testing.T) {
	// No fabric lives in this process between tests, so devices lists
	// only what the verbs driver sees; where that is nothing it must say
	// why, once, and fail rather than print an empty list as success.
	code, stdout, stderr := runCLI(t, "devices", "--json")
	var got devicesJSON
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if len(got.Devices) != 0 {
		t.Skipf("devices present: %+v", got.Devices)
	}
	if code != exitFailure {
		t.Errorf("devices --json with no devices: exit %d, want %d", code, exitFailure)
	}
	var why string
	for _, d := range got.Drivers {
		if d.Name == "verbs" && d.Unavailable != nil {
			why = *d.Unavailable
		}
	}
	code, _, stderr = runCLI(t, "devices")
	if code != exitFailure {
		t.Errorf("devices with no devices: exit %d, want %d", code, exitFailure)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	switch {
	case why != "":
		// The cause, once, on one line, with what to do.
		if len(lines) != 1 || !strings.Contains(lines[0], why) || strings.Count(stderr, "verbs:") != 1 {
			t.Errorf("stderr %q, want the one line %q", stderr, why)
		}
	case len(lines) != 1 || !strings.Contains(lines[0], "no RDMA devices found"):
		t.Errorf("stderr %q, want one line saying no RDMA devices were found", stderr)
	}
}

// TestSimSameSeedSameOutcome: under faults, two runs with one seed end
// the same way: the same hosts fail at the same steps, and the same
// addresses go to the same hosts.
func TestSimSameSeedSameOutcome(t *testing.T) {
	if testing.Short() {
		t.Skip("two faulty runs (-short)")
	}
	outcome := func() []string {
		_, stdout, stderr := runCLI(t, "sim", "--hosts", "3", "--loss", "0.2", "--seed", "3", "--step-timeout", "5s", "--json")
		var rep simReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s%s", err, stdout, stderr)
		}
		var out []string
		for _, h := range rep.Hosts {
			out = append(out, fmt.Sprintf("%s %s %s %s", h.Host, h.Status, orDash(h.Step), orDash(h.IP)))
		}
		return out
	}
	a, b := outcome(), outcome()
	if !slices.Equal(a, b) {
		t.Errorf("seed 3, two outcomes:\n%v\n%v", a, b)
	}
}
