package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The --json convention of docs/operations.md, as a checker every
// command's output goes through.
var (
	snakeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// hexForms are the identifier keys and the one form each takes.
	hexForms = map[string]*regexp.Regexp{
		"lid": regexp.MustCompile(`^0x[0-9a-f]{4}$`), "sm_lid": regexp.MustCompile(`^0x[0-9a-f]{4}$`),
		"mlid": regexp.MustCompile(`^0x[0-9a-f]{4}$`), "pkey": regexp.MustCompile(`^0x[0-9a-f]{4}$`),
		"pkeys": regexp.MustCompile(`^0x[0-9a-f]{4}$`), "qkey": regexp.MustCompile(`^0x[0-9a-f]{8}$`),
		"qpn": regexp.MustCompile(`^0x[0-9a-f]{6}$`), "node_guid": regexp.MustCompile(`^0x[0-9a-f]{16}$`),
	}
	gidKeys = map[string]bool{"gid": true, "gids": true, "mgid": true}
)

// checkJSONConvention decodes out and checks every key and value.
func checkJSONConvention(t *testing.T, what, out string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Errorf("%s: not JSON: %v\n%s", what, err, out)
		return
	}
	for _, p := range conventionProblems("", "", v) {
		t.Errorf("%s: %s", what, p)
	}
}

// conventionProblems walks v, the value of key at path.
func conventionProblems(path, key string, v any) []string {
	var bad []string
	add := func(format string, args ...any) {
		bad = append(bad, path+": "+strings.TrimSpace(sprintf(format, args...)))
	}
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			if !snakeRE.MatchString(k) {
				add("key %q is not snake_case", k)
			}
			bad = append(bad, conventionProblems(path+"."+k, k, sub)...)
		}
		return bad
	case []any:
		if len(x) == 16 && allNumbers(x) {
			add("an array of 16 numbers: a GID must be an IPv6-form string")
		}
		for _, sub := range x {
			bad = append(bad, conventionProblems(path+"[]", key, sub)...)
		}
		return bad
	case nil:
		return nil
	}
	unit := strings.HasSuffix(key, "_ms") || strings.HasSuffix(key, "_s")
	switch x := v.(type) {
	case string:
		if unit {
			add("duration %q as a string; want a number", x)
		}
		if _, err := time.ParseDuration(x); err == nil && x != "0" {
			add("%q looks like a Go duration; want a number with the unit in the key", x)
		}
		if re, ok := hexForms[key]; ok && !re.MatchString(x) {
			add("%q is not in the form %s", x, re)
		}
		if gidKeys[key] {
			if a, err := netip.ParseAddr(x); err != nil || !a.Is6() {
				add("%q is not an IPv6-form GID", x)
			}
		}
	case float64:
		if _, ok := hexForms[key]; ok {
			add("%v is a number; want the hex string form", x)
		}
		if gidKeys[key] {
			add("GID as a number")
		}
	}
	return bad
}

func allNumbers(x []any) bool {
	for _, e := range x {
		if _, ok := e.(float64); !ok {
			return false
		}
	}
	return true
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestJSONCheckerCatches makes sure the checker fails what the
// convention forbids.
func TestJSONCheckerCatches(t *testing.T) {
	tests := []struct {
		name, in string
		bad      bool
	}{
		{"good", `{"lid":"0x0003","rtt_ms":0.3,"mgid":"ff12:401b:ffff::1","pkeys":["0xffff"],"netdev":null}`, false},
		{"decimal lid", `{"lid":3}`, true},
		{"short hex lid", `{"lid":"0x3"}`, true},
		{"byte-array gid", `{"gid":[254,128,0,0,0,0,0,0,0,0,0,0,0,0,0,1]}`, true},
		{"go duration", `{"lease":"1h0m0s"}`, true},
		{"duration string with unit", `{"rtt_ms":"0.3"}`, true},
		{"camel key", `{"rttMs":1}`, true},
		{"qkey width", `{"qkey":"0x0b1b"}`, true},
	}
	for _, tt := range tests {
		var v any
		if err := json.Unmarshal([]byte(tt.in), &v); err != nil {
			t.Fatal(err)
		}
		if got := len(conventionProblems("", "", v)) > 0; got != tt.bad {
			t.Errorf("%s: problems found %v, want %v", tt.name, got, tt.bad)
		}
	}
}

// TestJSONEveryCommand runs each command that needs no daemon with
// --json (the daemon's commands are checked in TestUpPingPeersStatsDown)
// and an error case of each kind.
func TestJSONEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"devices", "--json"},
		{"--version", "--json"},
		{"sim", "--hosts", "2", "--json"},
	} {
		_, stdout, _ := runCLI(t, args...)
		checkJSONConvention(t, strings.Join(args, " "), stdout)
	}
	for _, args := range [][]string{
		{"ping", "--json", "--socket", "/nonexistent/sock", "10.0.0.1"},
		{"peers", "--json", "--socket", "/nonexistent/sock"},
		{"stats", "--json", "--socket", "/nonexistent/sock"},
		{"down", "--json", "--socket", "/nonexistent/sock"},
	} {
		code, stdout, stderr := runCLI(t, args...)
		var e map[string]any
		if err := json.Unmarshal([]byte(stdout), &e); err != nil || len(e) != 1 || e["error"] == nil {
			t.Errorf("%v: stdout %q, want {\"error\": ...}", args, stdout)
		}
		if code == exitOK || stderr != "" {
			t.Errorf("%v: exit %d, stderr %q; want non-zero and the error only in the JSON", args, code, stderr)
		}
	}
}
