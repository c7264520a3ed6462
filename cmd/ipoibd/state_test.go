package main

import (
	"os"
	"testing"
)

// TestMain keeps the daemons the tests start from writing lease files
// into the real state directory (/var/lib/ipoibd for root): the test
// binary gets a state directory of its own, which the child processes
// of TestSignals share.
func TestMain(m *testing.M) {
	if os.Getenv(signalChildEnv) != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ipoibd-test-state")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_STATE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
