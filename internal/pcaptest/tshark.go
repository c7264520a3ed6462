package pcaptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The captures ipoibd writes must open in Wireshark with no settings; the
// tests check that with tshark, its command-line form, when it is
// installed.

// HaveTshark reports whether tshark is installed.
func HaveTshark() bool {
	_, err := exec.LookPath("tshark")
	return err == nil
}

// NeedTshark skips tb when tshark is not installed. A test calls it
// before building the capture, so a skip costs nothing.
func NeedTshark(tb testing.TB) {
	tb.Helper()
	if !HaveTshark() {
		tb.Skip("tshark not installed")
	}
}

// WriteTemp writes a capture held in memory to a file called name in a
// directory of tb's that is removed with it, and returns the file's path.
func WriteTemp(tb testing.TB, name string, capture []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, capture, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Tshark runs tshark -r path with args and returns its standard output
// without the final newline; it skips tb without tshark and fails it,
// with tshark's standard error, when tshark fails.
func Tshark(tb testing.TB, path string, args ...string) string {
	tb.Helper()
	NeedTshark(tb)
	var stderr strings.Builder
	cmd := exec.Command("tshark", append([]string{"-r", path}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimRight(string(out), "\n")
}

// Fields returns, for each frame of path that matches filter (every
// frame for ""), the named fields as tshark prints them, joined by "|".
func Fields(tb testing.TB, path, filter string, fields ...string) []string {
	tb.Helper()
	args := []string{"-T", "fields", "-E", "separator=|"}
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out := Tshark(tb, path, args...)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// CheckClean fails tb when tshark finds a malformed frame in path, or one
// with expert information of error severity.
func CheckClean(tb testing.TB, path string) {
	tb.Helper()
	if bad := Tshark(tb, path, "-Y", "_ws.malformed || _ws.expert.severity >= error"); bad != "" {
		tb.Errorf("tshark finds malformed or erroneous frames in %s:\n%s", filepath.Base(path), bad)
	}
}

// expertWarning is Wireshark's expert-info severity "warning"; chat is
// 0x00200000, note 0x00400000 and error 0x00800000.
const expertWarning = 0x00600000

// ExpertWarning returns the first severity of warning or worse in a
// frame's _ws.expert.severity field as tshark prints it (a comma-separated
// list, empty when the frame has no expert information), or "".
func ExpertWarning(field string) string {
	for sev := range strings.SplitSeq(field, ",") {
		if sev == "" {
			continue
		}
		if v, err := strconv.ParseUint(sev, 0, 32); err != nil || v >= expertWarning {
			return sev
		}
	}
	return ""
}
