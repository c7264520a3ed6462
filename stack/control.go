// Control plane of the endpoint: attaching to a stack, closing, multicast
// membership.
//
// The rule of this room: nothing here touches loop-owned state directly.
// gVisor calls Attach and Close from its own goroutines, and the helpers
// (Stack.JoinGroup and friends) from the application's, so every change
// to the device (its receiver, its groups) is handed to the device's loop
// as a bottom half, and the loop side asserts that it is home before it
// acts. What the two sides share (the dispatcher, the closed flag, the
// group counts) is atomic or under a mutex.

package stack

import (
	"context"
	"fmt"
	"net/netip"

	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/netdev"
)

// Attach implements stack.LinkEndpoint. gVisor calls it when the NIC is
// created, and with nil when it is removed; from then on frames are
// dropped and counted (RxDropped). Safe from any goroutine.
func (e *Endpoint) Attach(d gvstack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&dispatcherRef{d: d})
}

// Close implements stack.LinkEndpoint. It runs the close action, stops
// delivery and transmission at once (later packets are counted as
// dropped), and has the loop detach the receiver and free what is still
// queued. Safe from any goroutine; later calls do nothing.
func (e *Endpoint) Close() {
	if e.closed.Swap(true) {
		return
	}
	if fn := e.onClose.Swap(nil); fn != nil {
		(*fn)()
	}
	e.dispatcher.Store(nil)
	e.onLoop("stack.Endpoint.Close", func() {
		e.dev.SetReceiver(nil)
		e.drainTx() // releases what is queued: closed is set
		e.txBH.Delete()
		if e.groBH != nil {
			e.dropGRO()
		}
	})
}

// onLoop runs fn on the device's loop: now, when the caller is home, or
// else from a one-shot bottom half. It does not wait.
func (e *Endpoint) onLoop(name string, fn func()) {
	if e.loop.InHome() {
		fn()
		return
	}
	e.loop.ScheduleOneshot(name, func() {
		e.loop.AssertHome(name)
		fn()
	})
}

// JoinGroup records a membership of IP multicast group and, for the
// first one, has the device's loop tell the link driver (LinkGroups) to
// join the group's link address. It waits for the driver's answer or for
// ctx. The stack's own membership (gVisor's JoinGroup, IGMP) is the
// caller's; Stack.JoinGroup does both.
func (e *Endpoint) JoinGroup(ctx context.Context, group netip.Addr) error {
	return e.changeGroup(ctx, group, +1)
}

// LeaveGroup undoes one JoinGroup; the last one makes the driver leave.
func (e *Endpoint) LeaveGroup(ctx context.Context, group netip.Addr) error {
	return e.changeGroup(ctx, group, -1)
}

// joinGroupAsync is JoinGroup without the wait, for groups the stack
// joins by itself; a failure is only counted (GroupErrors).
func (e *Endpoint) joinGroupAsync(group netip.Addr) {
	_ = e.changeGroupMode(nil, group, +1)
}

// changeGroup adjusts group's count by delta and calls the driver on a
// 0->1 or 1->0 transition, waiting for it.
func (e *Endpoint) changeGroup(ctx context.Context, group netip.Addr, delta int) error {
	return e.changeGroupMode(ctx, group, delta)
}

// changeGroupMode is changeGroup; a nil ctx means do not wait.
func (e *Endpoint) changeGroupMode(ctx context.Context, group netip.Addr, delta int) error {
	if e.closed.Load() {
		return fmt.Errorf("stack: group %v on %s: endpoint closed: %w", group, e.dev.Name(), netdev.ErrClosed)
	}
	addr, err := e.link.Multicast(group, nil)
	if err != nil {
		return fmt.Errorf("stack: group %v on %s: %w", group, e.dev.Name(), err)
	}
	e.gmu.Lock()
	n := e.gcount[group]
	if delta < 0 && n == 0 {
		e.gmu.Unlock()
		return fmt.Errorf("stack: leave group %v on %s: not a member: %w", group, e.dev.Name(), ErrNotMember)
	}
	n += delta
	if n == 0 {
		delete(e.gcount, group)
	} else {
		e.gcount[group] = n
	}
	e.gmu.Unlock()
	if e.groups == nil || (delta > 0 && n != 1) || (delta < 0 && n != 0) {
		return nil
	}
	op := "join"
	call := e.groups.JoinLinkGroup
	if delta < 0 {
		op, call = "leave", e.groups.LeaveLinkGroup
	}
	name := "stack.Endpoint." + op + "Group"
	if ctx == nil {
		e.onLoop(name, func() {
			if call(group, addr) != nil {
				counter.Inc(&e.stats.V.GroupErrors)
			}
		})
		return nil
	}
	err = e.runOnLoop(ctx, name, func() error { return call(group, addr) })
	if err != nil {
		counter.Inc(&e.stats.V.GroupErrors)
		return fmt.Errorf("stack: %s group %v (%s) on %s: %w", op, group, e.link.AddrString(addr), e.dev.Name(), err)
	}
	return nil
}

// Groups returns the IP multicast groups the endpoint holds memberships
// of, for status output.
func (e *Endpoint) Groups() []netip.Addr {
	e.gmu.Lock()
	defer e.gmu.Unlock()
	out := make([]netip.Addr, 0, len(e.gcount))
	for g := range e.gcount {
		out = append(out, g)
	}
	return out
}

// runOnLoop runs fn on the device's loop and waits for its result or for
// ctx; on ctx's end fn may still run later.
func (e *Endpoint) runOnLoop(ctx context.Context, name string, fn func() error) error {
	return e.loop.CallContext(ctx, name, func() error {
		e.loop.AssertHome(name)
		return fn()
	})
}
