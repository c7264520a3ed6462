package main

import (
	"os"
	"path/filepath"
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

// TestDefaultStateDir: lease files go to $XDG_STATE_HOME/ipoibd, else
// /var/lib/ipoibd for root and ~/.local/state/ipoibd for others; a
// daemon's file there is named after its interface and role.
func TestDefaultStateDir(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	if got := defaultStateDir(); got != "/state/ipoibd" {
		t.Errorf("with XDG_STATE_HOME: %q", got)
	}
	t.Setenv("XDG_STATE_HOME", "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	want := filepath.Join(home, ".local", "state", "ipoibd")
	if os.Geteuid() == 0 {
		want = "/var/lib/ipoibd"
	}
	if got := defaultStateDir(); got != want {
		t.Errorf("without XDG_STATE_HOME: %q, want %q", got, want)
	}
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	for _, tc := range []struct {
		opt  upOptions
		want string
	}{
		{upOptions{name: "ib3", dhcp: true}, "ib3.lease"},
		{upOptions{name: "ib3", dhcpServer: "10.0.0.10-10.0.0.20"}, "ib3.leases"},
		{upOptions{name: "ib3", dhcp: true, leaseFile: "/x/y.lease"}, "/x/y.lease"},
	} {
		got, err := leaseFilePath(tc.opt)
		if err != nil || (got != tc.want && got != filepath.Join(defaultStateDir(), tc.want)) {
			t.Errorf("%+v: %q, %v; want %s", tc.opt, got, err, tc.want)
		}
	}
	if fi, err := os.Stat(defaultStateDir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v, %v; want mode 0700", fi, err)
	}
}

// TestPeerIsRoot: the control server tells root from others by the
// peer's credentials (SO_PEERCRED); here the peer is this process.
func TestPeerIsRoot(t *testing.T) {
	client, server := socketPair(t)
	defer client.Close()
	defer server.Close()
	if got, want := peerIsRoot(server), os.Geteuid() == 0; got != want {
		t.Errorf("peerIsRoot = %v, want %v (euid %d)", got, want, os.Geteuid())
	}
}
