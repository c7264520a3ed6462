package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
		{[]string{"sim", "--hosts", "1"}, "--hosts 1: must be between 2 and 4096"},
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
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var rep simReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if !rep.OK || rep.Totals.Hosts != 6 || rep.Totals.OK != 6 || rep.Totals.Joined != 6 ||
		rep.Totals.PingsOK != 6 || rep.Totals.HeardB != 6 {
		t.Fatalf("totals %+v, want 6 hosts all joined, pinged and reached", rep.Totals)
	}
	lids, qpnOK, mlids := map[uint16]bool{}, true, map[uint16]bool{}
	for i, h := range rep.Hosts {
		if h.LID == 0 || lids[h.LID] {
			t.Errorf("host %s has LID %#x: zero or duplicate", h.Host, h.LID)
		}
		lids[h.LID] = true
		qpnOK = qpnOK && h.QPN > 1 && h.QPN <= 0xffffff
		mlids[h.MLID] = true
		if h.RTTMicros <= 0 || h.Error != "" {
			t.Errorf("host %s: rtt %v error %q", h.Host, h.RTTMicros, h.Error)
		}
		if h.QKey != "0x00000b1b" || h.GroupMTU != 2048 {
			t.Errorf("host %s joined with Q_Key %s MTU %d, want the 0x00000b1b and 2048 the join asked for", h.Host, h.QKey, h.GroupMTU)
		}
		// The path each host resolved must lead to its neighbour's LID.
		next := rep.Hosts[(i+1)%len(rep.Hosts)]
		if h.Neighbour != next.Host || h.PathDLID != next.LID {
			t.Errorf("host %s: path to %s has DLID %#x, neighbour's LID is %#x", h.Host, h.Neighbour, h.PathDLID, next.LID)
		}
	}
	if !qpnOK {
		t.Error("a QPN is outside 2..0xffffff")
	}
	if len(mlids) != 1 || mlids[0] {
		t.Errorf("hosts joined MLIDs %v, want one shared multicast LID", mlids)
	}
	if rep.Totals.RTTP50Micros <= 0 || rep.Totals.RTTP99Micros < rep.Totals.RTTP50Micros {
		t.Errorf("RTT p50 %v p99 %v", rep.Totals.RTTP50Micros, rep.Totals.RTTP99Micros)
	}
	if rep.Pcap != filepath.Join(dir, "fabric-ib.pcap") {
		t.Fatalf("pcap %q", rep.Pcap)
	}
	checkPcapWithTshark(t, rep.Pcap)
}

// checkPcapWithTshark asserts tshark opens the capture with no malformed
// packets and sees the SA exchanges and the datagrams.
func checkPcapWithTshark(t *testing.T, path string) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("tshark not installed; pcap not decoded")
		return
	}
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "_ws.col.Info", "-e", "_ws.malformed").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"SubnAdmSet(MCMemberRecord)", "SubnAdmGetResp(PathRecord)", "UD Send Only"} {
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
	if rep.Totals.OK != 12 {
		t.Fatalf("%d/12 hosts ok under faults", rep.Totals.OK)
	}
}

func TestSimManyHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	// 300 hosts do not fit on one switch: the demo builds a tree.
	code, stdout, stderr := runCLI(t, "sim", "--hosts", "300", "--json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var rep simReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Totals.OK != 300 || rep.Totals.PingsOK != 300 || rep.Totals.HeardB != 300 {
		t.Fatalf("totals %+v", rep.Totals)
	}
}

func TestDevicesWithNoDevices(t *testing.T) {
	// No fabric lives in this process between tests and no verbs driver is
	// registered yet, so devices must say so and fail rather than print an
	// empty list as success.
	code, stdout, stderr := runCLI(t, "devices", "--json")
	var got struct {
		Devices []deviceJSON `json:"devices"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if len(got.Devices) != 0 {
		t.Skipf("devices present: %+v", got.Devices)
	}
	if code != exitFailure || !strings.Contains(stderr, "no RDMA devices found") {
		t.Errorf("exit %d stderr %q, want failure saying no devices", code, stderr)
	}
}
