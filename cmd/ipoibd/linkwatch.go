package main

// What the daemon does when its link stays down: a port that went away
// (a cable pulled, a switch port disabled) comes back by itself and the
// link rejoins, but a device that reported a fatal error, or was reset or
// removed, never does: its context is dead, and only opening the device
// again helps. With --link-down-timeout the daemon gives up on a link that
// has been down that long and exits with a clear message and status 1, so
// that its service manager (systemd's Restart=on-failure, whose
// RestartSec and RestartSteps give the backoff) starts it again, which
// reopens the device; the DHCP server, which keeps its binding, gives it
// the same address back.

import (
	"context"
	"fmt"
	"time"
)

// linkState is what watchLink needs of the interface.
type linkState interface {
	LinkState() (up bool, reason error)
}

// watchLink returns once ctx ends (nil) or once the link of ifc has been
// down for timeout without a break (an error that says so and why).
func watchLink(ctx context.Context, ifc linkState, timeout time.Duration) error {
	tick := time.NewTicker(min(max(timeout/10, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	var downSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			up, reason := ifc.LinkState()
			switch {
			case up:
				downSince = time.Time{}
			case downSince.IsZero():
				downSince = now
			case now.Sub(downSince) >= timeout:
				return fmt.Errorf("the link has been down for %v (%v): exiting, so that the service manager restarts the daemon and the device is opened again", timeout, reason)
			}
		}
	}
}
