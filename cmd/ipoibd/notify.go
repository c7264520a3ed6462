package main

import (
	"log/slog"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
)

// notify sends state to systemd's notification socket when systemd
// started us with Type=notify (NOTIFY_SOCKET is set): READY=1 once the
// interface is configured, STOPPING=1 when it leaves. Without
// NOTIFY_SOCKET it does nothing. See docs/operations.md for a unit.
func notify(log *slog.Logger, state string) {
	if _, err := sdaemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notification failed", "state", state, "err", err)
	}
}
