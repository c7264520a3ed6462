// Receive filters: the endpoint's counterpart of a socket filter.
//
// The rule of this room: AddFilter and its remove function are control
// plane, safe from any goroutine; the filters themselves run on the
// device's loop, for every received frame, from receive in io.go.

package stack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
)

// A Filter says whether gVisor should see a received packet: proto is its
// network protocol (the IPoIB header's EtherType) and pkt the packet from
// its network header on. A packet any filter refuses is dropped before
// gVisor parses it, and counted (RxFiltered).
//
// It exists for what a host on a broadcast link receives in bulk and
// throws away one layer up: every DHCP reply on an IPoIB subnet is a
// broadcast (RFC 4390 section 2.2), so each client's socket would read
// every other client's OFFERs and ACKs. Real DHCP clients attach a
// kernel socket filter that matches their transaction ID for the same
// reason. A filter runs on the device's loop for every frame: it must be
// quick, must not block or allocate, and must not keep pkt.
type Filter func(proto tcpip.NetworkProtocolNumber, pkt []byte) bool

// AddFilter installs f in front of gVisor. The function it returns
// removes f; call it once f's owner stops. Safe from any goroutine: the
// set of filters is replaced whole, so the loop never sees it half
// changed.
func (e *Endpoint) AddFilter(f Filter) (remove func()) { return e.filters.Add(f) }

// admit runs the filters over a received packet. Loop.
func (e *Endpoint) admit(proto uint16, pkt []byte) bool {
	for _, f := range e.filters.Load() {
		if !f(tcpip.NetworkProtocolNumber(proto), pkt) {
			return false
		}
	}
	return true
}
