package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/internal/svctest"
	"github.com/ipoibd/ipoibd/sim"
	"github.com/ipoibd/ipoibd/stack/dhcp"
)

// dhcpFabric brings up n hosts on one switch: host0 with a static
// address runs the DHCP server, the others have no address and run
// clients. It returns the server and the bound leases, in host order.
func dhcpFabric(t *testing.T, n int, loss float64, pcaps func(i int) *bytes.Buffer) (*env, *dhcp.Server, []dhcp.Lease) {
	t.Helper()
	e := newEnv(t, star(n))
	if pcaps != nil {
		e.pcaps = func(i int) io.Writer { return pcaps(i) }
	}
	server := serverPrefix
	e.upWith(defaults, func(i int) netip.Prefix {
		if i == 0 {
			return server
		}
		return netip.Prefix{}
	})
	if loss > 0 {
		e.onLoop(func() {
			if err := e.f.SetFaults(sim.Faults{Loss: loss}); err != nil {
				t.Fatal(err)
			}
		})
	}
	srv := startServer(t, e, "")
	leases := make([]dhcp.Lease, n)
	var mu sync.Mutex
	parallel(n-1, 64, func(k int) {
		h := e.hosts[k+1]
		_, l, err := lease(t, h, k+1, nil, nil)
		if err != nil {
			t.Errorf("host %d: %v", k+1, err)
			return
		}
		mu.Lock()
		leases[k+1] = l
		h.addr = l.Addr.Addr()
		mu.Unlock()
	})
	e.hosts[0].addr = server.Addr()
	return e, srv, leases
}

// serverPrefix is the DHCP server's static address in these tests.
var serverPrefix = netip.MustParsePrefix("10.50.0.1/16")

// startServer runs a DHCP server on host 0, keeping its leases in
// leaseFile when one is named.
func startServer(t *testing.T, e *env, leaseFile string) *dhcp.Server {
	t.Helper()
	srv, err := dhcp.NewServer(dhcp.ServerConfig{
		Stack: e.hosts[0].st.S, NIC: e.hosts[0].st.NIC, ServerID: serverPrefix.Addr(), Subnet: serverPrefix.Masked(),
		PoolStart: netip.MustParseAddr("10.50.1.1"), PoolEnd: netip.MustParseAddr("10.50.1.254"),
		Router: serverPrefix.Addr(), DNS: []netip.Addr{serverPrefix.Addr()}, LeaseTime: time.Hour,
		LeaseFile: leaseFile,
	})
	return svctest.Start(t, srv, err)
}

// lease runs a DHCP client on h (identified by its port GUID) until it is
// bound; clock and onEvent may be nil.
func lease(t *testing.T, h *host, seed int, clock dhcp.Clock, onEvent func(dhcp.Event)) (*dhcp.Client, dhcp.Lease, error) {
	attr, err := h.sim.Port(1)
	if err != nil {
		return nil, dhcp.Lease{}, err
	}
	c, err := dhcp.NewClient(dhcp.ClientConfig{
		Stack: h.st.S, NIC: h.st.NIC, GUID: attr.GUID(), Seed: uint64(seed), Clock: clock, OnEvent: onEvent,
		// A short first retry keeps a lossy run quick; the schedule
		// still doubles as RFC 2131 section 4.1 says.
		Backoff: dhcp.Backoff{Initial: 500 * time.Millisecond, Max: 4 * time.Second, Jitter: 100 * time.Millisecond},
	})
	if err != nil {
		return nil, dhcp.Lease{}, err
	}
	if err := c.Start(); err != nil {
		return nil, dhcp.Lease{}, err
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Stop(ctx)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := c.WaitBound(ctx)
	if err != nil {
		return c, l, fmt.Errorf("%w (client %+v)", err, c.Stats())
	}
	return c, l, nil
}

// TestDHCPRenewalOnManualClock: a client whose clock is moved past T1
// renews its lease with the server over the fabric.
func TestDHCPRenewalOnManualClock(t *testing.T) {
	e := newEnv(t, star(2))
	e.upWith(defaults, func(i int) netip.Prefix {
		if i == 0 {
			return serverPrefix
		}
		return netip.Prefix{}
	})
	srv := startServer(t, e, "")
	clock := dhcp.NewManualClock(time.Now())
	events := make(chan dhcp.Event, 8)
	_, l, err := lease(t, e.hosts[1], 1, clock, func(ev dhcp.Event) { events <- ev })
	if err != nil {
		t.Fatal(err)
	}
	acks := srv.Stats().Acks
	clock.Advance(l.T1 + time.Second)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Kind != dhcp.EventRenewed {
				continue
			}
			if !ev.Lease.Start.After(l.Start) || ev.Lease.Addr != l.Addr {
				t.Fatalf("renewed lease %+v, first %+v", ev.Lease, l)
			}
			if srv.Stats().Acks <= acks {
				t.Fatalf("server sent no ACK for the renewal: %+v", srv.Stats())
			}
			return
		case <-deadline:
			t.Fatalf("no renewal after moving the clock past T1 (%v)", l.T1)
		}
	}
}

// TestDHCPServerRestartWithLeaseFile: a server restarted with its lease
// file hands every client the address it had before.
func TestDHCPServerRestartWithLeaseFile(t *testing.T) {
	const n = 5
	e := newEnv(t, star(n))
	e.upWith(defaults, func(i int) netip.Prefix {
		if i == 0 {
			return serverPrefix
		}
		return netip.Prefix{}
	})
	file := filepath.Join(t.TempDir(), "leases.json")
	srv := startServer(t, e, file)
	first := map[int]netip.Prefix{}
	var clients []*dhcp.Client
	for i := 1; i < n; i++ {
		c, l, err := lease(t, e.hosts[i], i, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		first[i] = l.Addr
		clients = append(clients, c)
	}
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.Stop(ctx) // releases the lease; the server still remembers the binding
		cancel()
	}
	srv.Stop()
	startServer(t, e, file)
	// Come back in reverse order so a fresh pool would hand out other
	// addresses.
	for i := n - 1; i >= 1; i-- {
		_, l, err := lease(t, e.hosts[i], 100+i, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.Addr != first[i] {
			t.Errorf("host %d got %v after the restart, had %v", i, l.Addr, first[i])
		}
	}
}

// TestDHCPManyHosts: 64 hosts lease distinct addresses from a server on
// the same IPoIB link, then reach the server and each other with them.
func TestDHCPManyHosts(t *testing.T) {
	const n = 65
	e, srv, leases := dhcpFabric(t, n, 0, nil)
	seen := map[netip.Addr]int{}
	for i, l := range leases[1:] {
		if !l.Addr.IsValid() {
			t.Fatalf("host %d has no lease", i+1)
		}
		if j, dup := seen[l.Addr.Addr()]; dup {
			t.Fatalf("hosts %d and %d both leased %v", j, i+1, l.Addr)
		}
		seen[l.Addr.Addr()] = i + 1
		if l.Addr.Bits() != 16 || l.Router != netip.MustParseAddr("10.50.0.1") || l.Duration != time.Hour {
			t.Errorf("host %d lease %+v", i+1, l)
		}
	}
	if st := srv.Stats(); st.Acks < n-1 || st.NoClientID != 0 {
		t.Errorf("server stats %+v", st)
	}
	for _, k := range []int{1, 17, 64} {
		if !pingUntil(t, e.hosts[k], e.hosts[0], 30*time.Second) {
			t.Errorf("host %d (%v) cannot reach the server", k, e.hosts[k].addr)
		}
	}
	if !pingUntil(t, e.hosts[5], e.hosts[6], 30*time.Second) {
		t.Errorf("leased hosts cannot reach each other")
	}
}

// TestDHCPUnderLoss: with 10% of packets lost in the fabric every client
// still gets a lease.
func TestDHCPUnderLoss(t *testing.T) {
	_, _, leases := dhcpFabric(t, 17, 0.10, nil)
	for i, l := range leases[1:] {
		if !l.Addr.IsValid() {
			t.Errorf("host %d has no lease under loss", i+1)
		}
	}
}

// TestDHCPPcapInTshark opens a client's IPoIB capture in tshark: the
// DHCP messages carry hardware type 32, hlen 0, the broadcast flag and a
// client identifier (RFC 4390).
func TestDHCPPcapInTshark(t *testing.T) {
	pcaptest.NeedTshark(t)
	bufs := []*bytes.Buffer{{}, {}}
	dhcpFabric(t, 2, 0, func(i int) *bytes.Buffer { return bufs[i] })
	path := pcaptest.WriteTemp(t, "client.pcap", bufs[1].Bytes())
	lines := pcaptest.Fields(t, path, "dhcp", "dhcp.option.dhcp", "dhcp.hw.type", "dhcp.hw.len", "dhcp.flags.bc",
		"dhcp.client_id.duid_type", "_ws.malformed")
	types := map[string]bool{}
	for _, line := range lines {
		f := strings.Split(line, "|")
		if len(f) < 6 {
			t.Fatalf("tshark line %q", line)
		}
		types[f[0]] = true
		if f[1] != "0x20" || f[2] != "0" || (f[3] != "1" && f[3] != "True") || f[4] == "" || f[5] != "" {
			t.Errorf("DHCP message %q: want htype 0x20, hlen 0, broadcast flag, a client id, not malformed", line)
		}
	}
	// 1 DISCOVER, 2 OFFER, 3 REQUEST, 5 ACK.
	for _, want := range []string{"1", "2", "3", "5"} {
		if !types[want] {
			t.Errorf("no DHCP message type %s in the capture: %q", want, lines)
		}
	}
}
