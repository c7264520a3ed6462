package dhcp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// leaseAll starts n clients on w and waits until all are bound; it
// returns their clients and leases.
func leaseAll(t *testing.T, w *wire, n int, timeout time.Duration) ([]*Client, []Lease) {
	t.Helper()
	clients := make([]*Client, n)
	backoff := fastBackoff
	if n > 8 {
		// Every reply is a broadcast every client must look at; under
		// the race detector a round for 64 clients takes longer than
		// fastBackoff waits, and early retransmissions would feed a
		// storm no real client (4 s first wait) could cause.
		backoff = Backoff{Initial: 400 * time.Millisecond, Max: 2 * time.Second, Jitter: 100 * time.Millisecond}
	}
	for i := range clients {
		clients[i] = startClient(t, w, ClientConfig{GUID: testGUID(i), Seed: uint64(i + 1), Backoff: backoff})
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	leases := make([]Lease, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = c.WaitBound(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v (state %v, stats %+v)", i, err, clients[i].State(), clients[i].Stats())
		}
	}
	return clients, leases
}

// checkDistinct fails unless the leases hold distinct addresses of the
// test subnet, each configured on its client's NIC with the options the
// server hands out.
func checkDistinct(t *testing.T, clients []*Client, leases []Lease) {
	t.Helper()
	seen := make(map[netip.Addr]int)
	for i, l := range leases {
		a := l.Addr.Addr()
		if j, dup := seen[a]; dup {
			t.Errorf("clients %d and %d both hold %v", j, i, a)
		}
		seen[a] = i
		if l.Addr.Bits() != 24 || !testSubnet.Contains(a) || l.Router != testRouter || !slices.Equal(l.DNS, []netip.Addr{testDNS}) || l.ServerID != testServerID {
			t.Errorf("client %d lease %v", i, l)
		}
		if got := nicAddrs(clients[i].cfg.Stack); !slices.Equal(got, []netip.Addr{a}) {
			t.Errorf("client %d NIC addresses %v, want [%v]", i, got, a)
		}
	}
}

func TestManyClients(t *testing.T) {
	tests := []struct {
		name string
		loss float64
	}{
		{"lossless", 0},
		{"10% loss", 0.10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 64
			w := newWire(t, tc.loss)
			srv := startServer(t, w, serverConfig(nil, nil))
			clients, leases := leaseAll(t, w, n, 20*time.Second)
			checkDistinct(t, clients, leases)
			st := srv.Stats()
			if st.Acks < n || st.Malformed+st.NoClientID+st.PoolExhausted != 0 {
				t.Errorf("server stats %+v", st)
			}
			bound := 0
			for _, li := range srv.Leases() {
				if li.State == "bound" {
					bound++
				}
			}
			if bound != n {
				t.Errorf("server has %d bound leases, want %d", bound, n)
			}
			var retx uint64
			for _, c := range clients {
				retx += c.Stats().Retransmits
			}
			t.Logf("server %+v; client retransmissions %d", st, retx)
			if tc.loss > 0 && retx == 0 {
				t.Errorf("no retransmissions on a lossy wire")
			}
		})
	}
}

// TestDefaultRouteInstalled checks the lease reaches gVisor's route
// table, and leaves it on release.
func TestDefaultRouteInstalled(t *testing.T) {
	w := newWire(t, 0)
	startServer(t, w, serverConfig(nil, nil))
	clients, leases := leaseAll(t, w, 1, 10*time.Second)
	s := clients[0].cfg.Stack
	routes := fmt.Sprint(s.GetRouteTable())
	for _, want := range []string{"10.7.0.0/24", "10.7.0.254"} {
		if !strings.Contains(routes, want) {
			t.Errorf("route table %s lacks %s", routes, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := clients[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.GetRouteTable(); len(got) != 0 {
		t.Errorf("routes after release: %v", got)
	}
	if got := nicAddrs(s); len(got) != 0 {
		t.Errorf("addresses after release: %v (lease was %v)", got, leases[0].Addr)
	}
}
