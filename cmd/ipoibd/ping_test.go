package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// checkPing runs ping the ways ping(8) users do against two running
// daemons (10.9.0.1 static on sock0, 10.9.0.100 leased on sock1).
func checkPing(t *testing.T, sock0, sock1 string) {
	t.Helper()
	replyRE := regexp.MustCompile(`^64 bytes from 10\.9\.0\.100: icmp_seq=(\d) ttl=64 time=\d+(\.\d+)? ms$`)
	summaryRE := regexp.MustCompile(`^3 packets transmitted, 3 received, 0% packet loss, time \d+ms$`)
	rttRE := regexp.MustCompile(`^rtt min/avg/max/mdev = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms$`)

	// Flags after the address, -i in fractional seconds.
	code, stdout, stderr := runCLI(t, "ping", "--socket", sock0, "10.9.0.100", "-c", "3", "-i", "0.02")
	if code != exitOK {
		t.Fatalf("ping: exit %d: %s %s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	if len(lines) != 8 {
		t.Fatalf("ping printed %d lines, want 8 (header, 3 replies, blank, 3 summary):\n%s", len(lines), stdout)
	}
	if lines[0] != "PING 10.9.0.100 (10.9.0.100) 56(84) bytes of data." {
		t.Errorf("header %q", lines[0])
	}
	for i, l := range lines[1:4] {
		m := replyRE.FindStringSubmatch(l)
		if m == nil || m[1] != string(rune('1'+i)) {
			t.Errorf("reply line %q, want icmp_seq=%d in ping(8)'s form", l, i+1)
		}
	}
	if lines[4] != "" || lines[5] != "--- 10.9.0.100 ping statistics ---" || !summaryRE.MatchString(lines[6]) || !rttRE.MatchString(lines[7]) {
		t.Errorf("summary not in ping(8)'s form:\n%s", strings.Join(lines[4:], "\n"))
	}

	// -q: header and summary only.
	code, stdout, _ = runCLI(t, "ping", "-q", "-c", "2", "-i", "0.01", "--socket", sock1, "10.9.0.1")
	if code != exitOK || strings.Contains(stdout, "icmp_seq") || !strings.Contains(stdout, "2 packets transmitted, 2 received") {
		t.Errorf("ping -q: exit %d:\n%s", code, stdout)
	}

	// --json: the convention, every reply, nothing else on stdout.
	code, stdout, stderr = runCLI(t, "ping", "-c", "3", "-i", "0.02", "--json", "--socket", sock0, "10.9.0.100")
	if code != exitOK {
		t.Fatalf("ping --json: exit %d: %s %s", code, stdout, stderr)
	}
	var p pingJSON
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("ping --json: %v\n%s", err, stdout)
	}
	if p.Transmitted != 3 || p.Received != 3 || len(p.Replies) != 3 || p.P50Ms == nil || *p.P50Ms <= 0 || p.Replies[2].Seq != 3 || p.Replies[0].TTL != 64 {
		t.Errorf("ping --json: %+v", p)
	}
	checkJSONConvention(t, "ping", stdout)

	// Nobody at the address: exit 1, 100% loss, no RTT line, no 0 s RTTs.
	code, stdout, _ = runCLI(t, "ping", "-c", "2", "-i", "0.01", "-W", "0.2", "--socket", sock0, "10.9.0.77")
	if code != exitFailure || !strings.Contains(stdout, "2 packets transmitted, 0 received, 100% packet loss") || strings.Contains(stdout, "rtt") {
		t.Errorf("ping to nobody: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(t, "ping", "-c", "1", "-W", "0.2", "--json", "--socket", sock0, "10.9.0.77")
	if code != exitFailure || !strings.Contains(stdout, `"rtt_avg_ms": null`) {
		t.Errorf("ping --json to nobody: exit %d:\n%s", code, stdout)
	}

	// -w: a deadline ends the run however many were asked for.
	code, stdout, _ = runCLI(t, "ping", "-w", "0.5", "-i", "0.1", "--socket", sock0, "10.9.0.100")
	if code != exitOK || !strings.Contains(stdout, "packets transmitted") {
		t.Errorf("ping -w: exit %d:\n%s", code, stdout)
	}
}
