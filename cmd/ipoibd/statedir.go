package main

// Where the daemon keeps what must outlive it: DHCP lease files.

import (
	"fmt"
	"os"
	"path/filepath"
)

// defaultStateDir is where lease files live unless --lease-file says:
// $XDG_STATE_HOME/ipoibd, /var/lib/ipoibd for root, and otherwise
// ~/.local/state/ipoibd (the XDG base directory default).
func defaultStateDir() string {
	if dir := os.Getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "ipoibd")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/ipoibd"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "ipoibd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ipoibd-state-%d", os.Geteuid()))
}

// leaseFilePath is the lease file of the daemon: --lease-file, or NAME.lease
// (a client's lease) or NAME.leases (a server's bindings) in the state
// directory, which it creates (mode 0700) if needed.
func leaseFilePath(opt upOptions) (string, error) {
	if opt.leaseFile != "" {
		return opt.leaseFile, nil
	}
	dir := defaultStateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state directory for the DHCP lease file: %w (pass --lease-file)", err)
	}
	name := opt.name + ".lease"
	if opt.dhcpServer != "" {
		name += "s"
	}
	return filepath.Join(dir, name), nil
}
