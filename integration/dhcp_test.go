package integration

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	server := netip.MustParsePrefix("10.50.0.1/16")
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
	srv, err := dhcp.NewServer(dhcp.ServerConfig{
		Stack: e.hosts[0].st.S, NIC: e.hosts[0].st.NIC, ServerID: server.Addr(), Subnet: server.Masked(),
		PoolStart: netip.MustParseAddr("10.50.1.1"), PoolEnd: netip.MustParseAddr("10.50.1.254"),
		Router: server.Addr(), DNS: []netip.Addr{server.Addr()}, LeaseTime: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	leases := make([]dhcp.Lease, n)
	var mu sync.Mutex
	parallel(n-1, 64, func(k int) {
		h := e.hosts[k+1]
		attr, err := h.sim.Port(1)
		if err != nil {
			t.Error(err)
			return
		}
		c, err := dhcp.NewClient(dhcp.ClientConfig{
			Stack: h.st.S, NIC: h.st.NIC, GUID: attr.GUID(), Seed: uint64(k + 1),
			// A short first retry keeps a lossy run quick; the schedule
			// still doubles as RFC 2131 section 4.1 says.
			Backoff: dhcp.Backoff{Initial: 500 * time.Millisecond, Max: 4 * time.Second, Jitter: 100 * time.Millisecond},
		})
		if err != nil {
			t.Error(err)
			return
		}
		if err := c.Start(); err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Stop(ctx)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l, err := c.WaitBound(ctx)
		if err != nil {
			t.Errorf("host %d: %v (client %+v)", k+1, err, c.Stats())
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
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	bufs := []*bytes.Buffer{{}, {}}
	dhcpFabric(t, 2, 0, func(i int) *bytes.Buffer { return bufs[i] })
	path := filepath.Join(t.TempDir(), "client.pcap")
	if err := os.WriteFile(path, bufs[1].Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tshark, "-r", path, "-Y", "dhcp", "-T", "fields",
		"-e", "dhcp.option.dhcp", "-e", "dhcp.hw.type", "-e", "dhcp.hw.len", "-e", "dhcp.flags.bc",
		"-e", "dhcp.client_id.duid_type", "-e", "_ws.malformed").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	types := map[string]bool{}
	for _, line := range lines {
		f := strings.Split(line, "\t")
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
