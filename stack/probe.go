package stack

import (
	"context"
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ProbeAddr asks the link whether some host already uses addr: it sends
// ARP requests for addr from from (0.0.0.0 makes them the address probes
// of RFC 5227 section 2.1.1, for a host that has no address yet; the NIC
// must carry from) and reports true when one is answered before ctx
// ends. Silence until ctx ends, or gVisor giving up on resolution, means
// no one answered: false. A cached answer is not trusted: the neighbour
// entry for addr is dropped first, so the answer is fresh. Safe from any
// goroutine; it blocks until the answer or ctx.
func ProbeAddr(ctx context.Context, s *gvstack.Stack, nic tcpip.NICID, addr, from netip.Addr) (bool, error) {
	if !addr.Is4() || !from.Is4() {
		return false, fmt.Errorf("stack: probe %v from %v: IPv4 addresses only", addr, from)
	}
	target, local := tcpip.AddrFrom4(addr.As4()), tcpip.AddrFrom4(from.As4())
	_ = s.RemoveNeighbor(nic, header.IPv4ProtocolNumber, target)
	done := make(chan bool, 1)
	err := s.GetLinkAddress(nic, target, local, header.IPv4ProtocolNumber, func(r gvstack.LinkResolutionResult) {
		done <- r.Err == nil
	})
	switch err.(type) {
	case nil:
		// Resolved at once: an entry appeared between the removal and
		// the request, so something answered.
		return true, nil
	case *tcpip.ErrWouldBlock:
	default:
		return false, fmt.Errorf("stack: probe %v from %v: %s", addr, from, err)
	}
	select {
	case inUse := <-done:
		return inUse, nil
	case <-ctx.Done():
		return false, nil
	}
}
