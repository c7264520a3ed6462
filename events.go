package ipoibd

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ipoibd/ipoibd/stack/dhcp"
)

// EventKind says what an Event reports.
type EventKind int

// The events of an Interface, in the order bringing it up meets them.
const (
	// EventJoining: the device and link are open and the broadcast
	// join has started (New).
	EventJoining EventKind = iota
	// EventStillJoining: the join has not finished yet; Text says why.
	EventStillJoining
	// EventLinkUp: the broadcast group is joined; Text gives the
	// hardware address, MTU and group.
	EventLinkUp
	// EventDHCPAsking: the DHCP client has started.
	EventDHCPAsking
	// EventAddress: the interface has its address (Addr, and Lease when
	// it came from DHCP).
	EventAddress
	// EventServing: the DHCP server is serving leases.
	EventServing
	// EventDHCP: a lease changed after Up (renewed, lost, declined,
	// released); DHCP holds the client's event.
	EventDHCP
)

// Event is one step of an Interface, for Config.OnEvent. Text is the line
// a program shows its user, without the interface name, which is in
// Interface.
type Event struct {
	Kind      EventKind
	Interface string
	Text      string
	// Addr is the address of EventAddress.
	Addr netip.Prefix
	// Lease is the lease of EventAddress under DHCP.
	Lease *dhcp.Lease
	// DHCP is the client's event of EventDHCP.
	DHCP *dhcp.Event
}

// String returns Text.
func (e Event) String() string { return e.Text }

// logDHCPEvent logs a lease change: bound and renewed at info level, a
// lease lost (expired, refused) at warning level.
func logDHCPEvent(log *slog.Logger, ev dhcp.Event) {
	l := ev.Lease
	args := []any{"event", ev.Kind.String(), "addr", l.Addr.String(), "server", l.ServerID.String(), "lease_s", l.Duration.Seconds()}
	switch ev.Kind {
	case dhcp.EventBound:
		log.Info("DHCP lease bound", args...)
	case dhcp.EventRenewed:
		log.Info("DHCP lease renewed", args...)
	case dhcp.EventExpired, dhcp.EventNak:
		log.Warn("DHCP lease lost", args...)
	case dhcp.EventDeclined:
		log.Warn("DHCP address declined: already in use", args...)
	case dhcp.EventReleased:
		log.Info("DHCP lease released", args...)
	}
}

// watchDHCPState logs the client's moves to RENEWING and REBINDING (RFC
// 2131 section 4.4.5), which it reports as states rather than events,
// until ctx ends.
func watchDHCPState(ctx context.Context, log *slog.Logger, c *dhcp.Client) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := c.State()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := c.State()
		if s == last {
			continue
		}
		last = s
		switch s {
		case dhcp.StateRenewing:
			log.Info("DHCP lease renewing", "state", s.String())
		case dhcp.StateRebinding:
			log.Warn("DHCP lease rebinding: the server did not answer the renewal", "state", s.String())
		}
	}
}
