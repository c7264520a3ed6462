package dhcp

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ipoibd/ipoibd/ib"
)

// Backoff shapes retransmission in SELECTING and REQUESTING: the n-th
// wait (from 0) is Initial<<n, capped at Max, plus a uniform random
// offset in [-Jitter, +Jitter]. Zero fields take the RFC 2131 defaults
// (a negative Jitter means none); tests shrink them to milliseconds.
type Backoff struct {
	Initial, Max, Jitter time.Duration
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Stack and NIC name the gVisor NIC to configure. Required. The NIC
	// must carry IPv4 and UDP; it need not have an address.
	Stack *gvstack.Stack
	NIC   tcpip.NICID
	// GUID is the port GUID the client identifier is derived from (see
	// NewClientID). Required.
	GUID ib.GUID
	// IAID goes into the client identifier; zero means DefaultIAID(GUID).
	IAID uint32
	// Hostname, if set, is sent as option 12.
	Hostname string
	// Clock drives every timer; nil means SystemClock.
	Clock Clock
	// Backoff shapes retransmission; see Backoff.
	Backoff Backoff
	// StartDelay, if positive, makes a client that starts without a
	// lease to ask for again wait a random time, uniform in [0,
	// StartDelay), before its first DISCOVER. RFC 2131 section 4.4.1
	// says a client SHOULD wait one to ten seconds there, so that
	// clients powered on together (a rack, a cluster after a power cut)
	// do not all broadcast at once and lose their answers in the burst
	// they cause. Zero, the default, sends at once, as most clients do
	// for a host that boots alone.
	StartDelay time.Duration
	// RequestTries is how many REQUESTs to send for one offer; zero
	// means DefaultRequestTries.
	RequestTries int
	// RenewMin is the shortest retransmission wait while renewing or
	// rebinding; zero means DefaultRenewMin.
	RenewMin time.Duration
	// DeclineWait is the pause after a DECLINE; zero means
	// DefaultDeclineWait.
	DeclineWait time.Duration
	// Probe, if set, is asked whether an acknowledged address is already
	// in use (an ARP probe, RFC 2131 section 4.4.1 and RFC 5227) before
	// the client configures it; true makes the client DECLINE it. It
	// runs on its own goroutine and must return soon after ctx ends. An
	// error counts as "not in use": a failed probe is no evidence of a
	// conflict.
	Probe func(ctx context.Context, addr netip.Addr) (inUse bool, err error)
	// LeaseFile, if set, keeps the lease across restarts: written on
	// every binding and renewal, removed when the lease ends (released,
	// expired, refused). A client that starts with a lease of its own
	// there, still running, asks for it back in INIT-REBOOT (RFC 2131
	// section 3.2) rather than starting over.
	LeaseFile string
	// AttachFilter, if set, installs a receive filter in front of the
	// NIC's stack (stack.Endpoint.AddFilter) and returns the function
	// that removes it. The client attaches one while it runs that refuses
	// other transactions' replies before gVisor reads them: on IPoIB
	// every reply is a broadcast (RFC 4390 section 2.2), so without it
	// each client's socket takes in every other client's OFFERs and ACKs.
	AttachFilter func(f func(proto tcpip.NetworkProtocolNumber, pkt []byte) bool) (remove func())
	// OnEvent, if set, is called on the client's goroutine for every
	// Event. It must not block or call Stop; reading Lease and State is
	// fine.
	OnEvent func(Event)
	// Seed, if non-zero, seeds transaction IDs and jitter, for tests
	// that replay exact messages. Zero draws a seed from crypto/rand.
	Seed uint64
	// Logf, if set, receives one line per notable step.
	Logf func(format string, args ...any)
}

// State is where the client is in the state machine of RFC 2131 section
// 4.4, figure 5, plus Probing (between ACK and BOUND while the Probe hook
// runs) and Stopped. Rebooting is figure 5's REBOOTING, numbered last.
type State int

// Client states.
const (
	StateInit State = iota
	StateSelecting
	StateRequesting
	StateProbing
	StateBound
	StateRenewing
	StateRebinding
	StateStopped
	StateRebooting
)

var stateNames = [...]string{"INIT", "SELECTING", "REQUESTING", "PROBING", "BOUND", "RENEWING", "REBINDING", "STOPPED", "REBOOTING"}

// String returns the RFC's name of the state.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// EventKind says what changed.
type EventKind int

// Event kinds.
const (
	// EventBound: a lease was acquired and configured.
	EventBound EventKind = iota
	// EventRenewed: the lease was extended by renewal or rebinding.
	EventRenewed
	// EventExpired: the lease ran out; the address is gone.
	EventExpired
	// EventNak: a server refused; the client starts over (any address
	// it held is gone).
	EventNak
	// EventDeclined: the Probe hook found the address in use; the client
	// declined it.
	EventDeclined
	// EventReleased: Stop released the lease; the address is gone.
	EventReleased
)

var eventNames = [...]string{"bound", "renewed", "expired", "nak", "declined", "released"}

// String names the kind.
func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change of the client's lease.
type Event struct {
	Kind EventKind
	// Lease is the lease concerned: the new one for Bound and Renewed,
	// the one lost or declined for the others (zero for a NAK in
	// REQUESTING).
	Lease Lease
	// At is the client clock's time of the change.
	At time.Time
}

// ClientStats counts a client's traffic.
type ClientStats struct {
	Discovers, Requests, Declines, Releases uint64
	Offers, Acks, Naks                      uint64
	// Retransmits counts DISCOVERs and REQUESTs sent again.
	Retransmits uint64
	// Malformed counts undecodable messages; Ignored counts decodable
	// ones not meant for this client or this state.
	Malformed, Ignored uint64
	// SendErrors counts messages gVisor would not send.
	SendErrors uint64
	// ConfigErrors counts failures to change the NIC.
	ConfigErrors uint64
}
