// Package hextest decodes the golden byte vectors tests write as hex: the
// one helper every codec's tests need, written once. It imports no package
// of the module, so any package's own tests can use it. It is test support
// only; nothing outside _test.go files imports it.
package hextest

import (
	"encoding/hex"
	"strings"
	"testing"
)

// Bytes decodes hex written for people to read: split across any number
// of strings, grouped by spaces, tabs or newlines, which are ignored. A
// vector that is not hex fails tb.
func Bytes(tb testing.TB, lines ...string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(strings.Join(lines, "")), ""))
	if err != nil {
		tb.Fatalf("bad golden hex: %v", err)
	}
	return b
}
