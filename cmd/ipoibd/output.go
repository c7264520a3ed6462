package main

// Output shared by every command: the --json convention and the one-line
// error. docs/operations.md ("JSON output") states the convention; this
// file is its only implementation, and json_test.go checks every command
// against it.
//
//   - Durations are numbers with the unit in the key: "_ms" for times
//     measured (milliseconds, to the microsecond), "_s" for lifetimes
//     (seconds).
//   - GIDs and MGIDs are IPv6-form strings; GUIDs 0x and 16 hex digits.
//   - LIDs and P_Keys are 0x and 4 hex digits, Q_Keys 0x and 8, QPNs 0x
//     and 6: the forms ibv_devinfo and the IBA tables use.
//   - A value that is absent is null; keys are never left out.
//   - An error is {"error": "..."} on stdout and a non-zero exit status.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/ib"
)

// msJSON is a measured duration in milliseconds, to the microsecond.
func msJSON(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// optMS is msJSON, or null when ok is false.
func optMS(d time.Duration, ok bool) *float64 {
	if !ok {
		return nil
	}
	v := msJSON(d)
	return &v
}

// optString is s, or null when it is empty.
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// The identifier forms.
func lidJSON(l ib.LID) string    { return fmt.Sprintf("0x%04x", uint16(l)) }
func pkeyJSON(k ib.PKey) string  { return fmt.Sprintf("0x%04x", uint16(k)) }
func qkeyJSON(k ib.QKey) string  { return fmt.Sprintf("0x%08x", uint32(k)) }
func qpnJSON(q ib.QPN) string    { return fmt.Sprintf("0x%06x", uint32(q)) }
func guidJSON(g ib.GUID) string  { return fmt.Sprintf("0x%016x", uint64(g)) }
func gidJSON(g ib.GID) string    { return g.String() }
func optLID(l ib.LID) *string    { s := lidJSON(l); return &s }
func rateJSON(r ib.Rate) *string { return optString(rateString(r)) }

// rateString is the rate as ibv_devinfo-style text, or "" when unknown.
func rateString(r ib.Rate) string {
	if r.Mbps() <= 0 {
		return ""
	}
	return r.String()
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// errorJSON is the --json form of a failure.
type errorJSON struct {
	Error string `json:"error"`
}

// fail reports err once and returns code: {"error": ...} on stdout with
// --json, "ipoibd CMD: ..." on stderr without.
func fail(stdout, stderr io.Writer, asJSON bool, cmd string, err error, code int) int {
	if asJSON {
		if werr := writeJSON(stdout, errorJSON{Error: err.Error()}); werr == nil {
			return code
		}
	}
	fmt.Fprintf(stderr, "ipoibd %s: %v\n", cmd, err)
	return code
}

// emit prints v as JSON and returns code, or reports why it could not.
func emit(stdout, stderr io.Writer, cmd string, v any, code int) int {
	if err := writeJSON(stdout, v); err != nil {
		fmt.Fprintf(stderr, "ipoibd %s: writing JSON: %v\n", cmd, err)
		return exitFailure
	}
	return code
}

// isTerminal says whether f is a terminal, for progress lines that only
// make sense to a person watching.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
