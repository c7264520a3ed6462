package stack

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestProbeAddr: a probe for an address a host on the link holds is
// answered (in use), one for a free address meets silence until its
// context ends (not in use, no error), and a non-IPv4 address is an
// error. The answer is fresh: the second probe of the held address,
// after the first filled the neighbour cache, still goes on the wire.
func TestProbeAddr(t *testing.T) {
	a, b := twoNodes(t)
	probe := func(addr string, within time.Duration) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		return ProbeAddr(ctx, a.S, a.NIC, netip.MustParseAddr(addr), a.Addr.Addr())
	}
	for i := range 2 {
		before := ARPProtocolOf(b.S).Stats().Requests
		if inUse, err := probe("10.0.0.2", 5*time.Second); !inUse || err != nil {
			t.Fatalf("probe %d of the address b holds: %v, %v; want in use", i+1, inUse, err)
		}
		if after := ARPProtocolOf(b.S).Stats().Requests; after == before {
			t.Errorf("probe %d of the address b holds: no request reached b", i+1)
		}
	}
	if inUse, err := probe("10.0.0.3", 300*time.Millisecond); inUse || err != nil {
		t.Errorf("probe of a free address: %v, %v; want free, no error", inUse, err)
	}
	if _, err := ProbeAddr(context.Background(), a.S, a.NIC, netip.MustParseAddr("::1"), a.Addr.Addr()); err == nil {
		t.Error("probe of an IPv6 address: no error")
	}
}
