package stack

import (
	"context"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestFilterKeepsPacketsFromGVisor installs a filter that refuses ICMP on
// one host: pings go unanswered and every refused packet is counted;
// once the filter is removed, pings are answered again. A second filter
// that accepts everything shows that one refusal is enough.
func TestFilterKeepsPacketsFromGVisor(t *testing.T) {
	a, b := twoNodes(t)
	// Resolve first, so that ARP (which the filter lets through) is done.
	if st := ping(t, a, b.Addr.Addr(), 1); st.Received != 1 {
		t.Fatalf("ping before the filter: %v", st)
	}
	seen := 0
	keepAll := b.Endpoint.AddFilter(func(tcpip.NetworkProtocolNumber, []byte) bool { seen++; return true })
	defer keepAll()
	noICMP := b.Endpoint.AddFilter(func(proto tcpip.NetworkProtocolNumber, pkt []byte) bool {
		return proto != header.IPv4ProtocolNumber || len(pkt) < header.IPv4MinimumSize ||
			header.IPv4(pkt).Protocol() != uint8(header.ICMPv4ProtocolNumber)
	})
	before := b.Endpoint.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := Ping(ctx, a.S, b.Addr.Addr(), 3, time.Millisecond, 56)
	if err != nil {
		t.Fatal(err)
	}
	after := b.Endpoint.Stats()
	if st.Received != 0 {
		t.Errorf("%d echoes answered through a filter that refuses ICMP", st.Received)
	}
	if got := after.RxFiltered - before.RxFiltered; got != 3 {
		t.Errorf("rx_filtered went up by %d, want 3 (one per echo request)", got)
	}
	if seen < 3 {
		t.Errorf("the accepting filter saw %d packets, want at least 3", seen)
	}
	noICMP()
	noICMP() // a second call changes nothing
	if st := ping(t, a, b.Addr.Addr(), 3); st.Received != 3 {
		t.Errorf("ping after the filter is removed: %v", st)
	}
	if got := b.Endpoint.Stats().RxFiltered; got != after.RxFiltered {
		t.Errorf("rx_filtered moved to %d after removal, was %d", got, after.RxFiltered)
	}
}
