package main

// What the daemon does when its link goes down. A port that went away (a
// cable pulled, a switch port disabled) comes back by itself and the link
// rejoins. A device that failed as a whole (a fatal error, a reset, hot
// removal: ib.EventDeviceFatal) never does: everything made from it is
// dead, so the daemon closes the interface and opens the device again,
// retrying with a pause that doubles (reopen); the DHCP client keeps its
// lease file and asks for the same address. With --link-down-timeout the
// daemon gives up on a link that has been down that long, whether waiting
// for the port or reopening the device, and exits with a clear message
// and status 1, for its service manager to start it again.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/ib"
)

// linkState is what watchLink needs of the interface.
type linkState interface {
	LinkState() (up bool, reason error)
}

// watchLinkTick bounds how often watchLink looks at the link: a device
// failure is noticed within it.
const watchLinkTick = 100 * time.Millisecond

// watchLink returns nil once ctx ends; the link's reason, which wraps
// ib.ErrDeviceFatal, once the device has failed; and, with a timeout,
// an error once the link has been down that long without a break.
func watchLink(ctx context.Context, ifc linkState, timeout time.Duration) error {
	every := watchLinkTick
	if timeout > 0 {
		every = min(max(timeout/10, 10*time.Millisecond), watchLinkTick)
	}
	tick := time.NewTicker(every)
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
			case errors.Is(reason, ib.ErrDeviceFatal):
				return reason
			case timeout <= 0:
			case downSince.IsZero():
				downSince = now
			case now.Sub(downSince) >= timeout:
				return fmt.Errorf("the link has been down for %v (%v): exiting, so that the service manager restarts the daemon and the device is opened again", timeout, reason)
			}
		}
	}
}

// Pauses between attempts to open a failed device again: the first, and
// the cap the pause doubles up to.
var (
	reopenBackoff    = 250 * time.Millisecond
	reopenBackoffMax = 30 * time.Second
)

// reopen opens the interface again after its device failed at since, as
// start-up does (New, then Up), retrying with a pause that doubles from
// reopenBackoff up to reopenBackoffMax. It returns the interface, up; nil
// and no error once ctx ends; and, with --link-down-timeout, an error
// once the link has been down that long since since.
func (d *daemon) reopen(ctx context.Context, since time.Time) (*ipoibd.Interface, error) {
	pause := reopenBackoff
	for attempt := 1; ; attempt++ {
		ifc, err := d.openOnce(ctx, since)
		if err == nil {
			d.opt.log.Info("device opened again", "device", ifc.Device(), "attempt", attempt, "after", time.Since(since).Round(time.Millisecond))
			return ifc, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		wait := pause
		if t := d.opt.linkDownTimeout; t > 0 {
			left := t - time.Since(since)
			if left <= 0 {
				return nil, fmt.Errorf("the device failed and could not be opened again within %v (%v): exiting, so that the service manager restarts the daemon", t, err)
			}
			wait = min(wait, left)
		}
		d.opt.log.Warn("opening the failed device again did not work; retrying", "attempt", attempt, "err", err, "pause", wait)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
		pause = min(2*pause, reopenBackoffMax)
	}
}

// openOnce opens the interface and brings it up. Up waits for the link,
// so it is bounded: by ctx, by what is left of --link-down-timeout, and by
// the device failing again meanwhile.
func (d *daemon) openOnce(ctx context.Context, since time.Time) (*ipoibd.Interface, error) {
	ifc, err := ipoibd.New(d.opt.config(d.out))
	if err != nil {
		return nil, upError(err)
	}
	uctx, cancel := context.WithCancel(ctx)
	if t := d.opt.linkDownTimeout; t > 0 {
		uctx, cancel = context.WithDeadline(ctx, since.Add(t))
	}
	defer cancel()
	failed := make(chan error, 1)
	go func() { failed <- watchLink(uctx, ifc, 0); cancel() }()
	err = ifc.Up(uctx)
	cancel()
	if ferr := <-failed; ferr != nil {
		err = ferr
	}
	if err != nil {
		ifc.Close()
		return nil, upError(err)
	}
	return ifc, nil
}
