package dhcp

import (
	"context"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// boundWithLeaseFile returns a client bound over a lease file in the
// test's directory, the file's path and the address it holds.
func boundWithLeaseFile(t *testing.T) (*driven, string, netip.Prefix) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ib0.lease")
	d := newDriven(t, ClientConfig{LeaseFile: path})
	d.exchange(t)
	d.exchange(t)
	if d.c.state != StateBound {
		t.Fatalf("state %v", d.c.state)
	}
	return d, path, d.c.lease.Addr
}

// TestClientLeaseFileReboot: a bound client keeps its lease in its lease
// file; a client started again over that file asks for the address in
// INIT-REBOOT (REQUEST, option 50, no server identifier, ciaddr zero,
// broadcast) and gets it back; release removes the file.
func TestClientLeaseFileReboot(t *testing.T) {
	d, path, held := boundWithLeaseFile(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no lease file after binding: %v", err)
	}

	// The process dies (no RELEASE); a new client starts over the file.
	rec := &recorder{}
	c2 := newClient(ClientConfig{GUID: testGUID(0), Seed: 7, Clock: d.clock, LeaseFile: path}, rec, rec)
	l, ok := c2.loadLease(d.clock.Now())
	if !ok || l.Addr != held {
		t.Fatalf("loadLease: %v, %v; want %v", l, ok, held)
	}
	c2.enterReboot(l)
	m, dst := rec.last(t)
	if m.MessageType() != dhcpv4.MessageTypeRequest || dst != serverBroadcast ||
		addrOf(m.RequestedIPAddress()) != held.Addr() || m.Options.Get(dhcpv4.OptionServerIdentifier) != nil ||
		!addrOf(m.ClientIPAddr).IsUnspecified() && addrOf(m.ClientIPAddr).IsValid() {
		t.Fatalf("INIT-REBOOT sent %v to %v: %v", m.MessageType(), dst, m.Summary())
	}
	if c2.state != StateRebooting {
		t.Errorf("state %v, want REBOOTING", c2.state)
	}
	reply, _, ok := d.srv.handle(rec.sent[len(rec.sent)-1].b, netip.AddrPortFrom(netip.IPv4Unspecified(), ClientPort))
	if !ok {
		t.Fatal("the server did not answer INIT-REBOOT")
	}
	c2.handleMessage(reply)
	if c2.state != StateBound || c2.lease.Addr != held {
		t.Fatalf("after the ACK: %v, %v; want BOUND with %v", c2.state, c2.lease, held)
	}

	// Stop releases the lease, and the file goes with it.
	c2.shutdown()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("lease file after release: %v", err)
	}
}

// TestClientAbandonKeepsLease: a client abandoned (its link died) sends
// no RELEASE, takes the address off the NIC and keeps its lease file, so
// a client started again over it asks for the same address.
func TestClientAbandonKeepsLease(t *testing.T) {
	d, path, held := boundWithLeaseFile(t)
	sent := len(d.rec.sent)
	d.c.keep.Store(true)
	d.c.shutdown()
	if len(d.rec.sent) != sent {
		m, _ := d.rec.last(t)
		t.Errorf("abandoning sent %v", m.MessageType())
	}
	if len(d.rec.removed) != 1 || d.rec.removed[0].Addr != held {
		t.Errorf("addresses removed from the NIC: %v; want %v", d.rec.removed, held)
	}
	rec := &recorder{}
	c2 := newClient(ClientConfig{GUID: testGUID(0), Seed: 7, Clock: d.clock, LeaseFile: path}, rec, rec)
	if l, ok := c2.loadLease(d.clock.Now()); !ok || l.Addr != held {
		t.Fatalf("the lease file after abandoning: %v, %v; want %v", l, ok, held)
	}
}

// TestClientRebootFallsBack: INIT-REBOOT that meets a server without a
// record (silent) falls back to INIT asking for the same address; one
// that meets a NAK starts over and forgets the file.
func TestClientRebootFallsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ib0.lease")
	d := newDriven(t, ClientConfig{LeaseFile: path})
	d.exchange(t)
	d.exchange(t)
	held := d.c.lease.Addr

	// A fresh server (no lease file) has no record: silence.
	fresh, err := NewServer(serverConfig(nil, d.clock))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c2 := newClient(ClientConfig{GUID: testGUID(0), Seed: 7, Clock: d.clock, LeaseFile: path}, rec, rec)
	l, _ := c2.loadLease(d.clock.Now())
	c2.enterReboot(l)
	if _, _, ok := fresh.handle(rec.sent[0].b, netip.AddrPortFrom(netip.IPv4Unspecified(), ClientPort)); ok {
		t.Fatal("a server without a record answered INIT-REBOOT")
	}
	d2 := &driven{c: c2, rec: rec, srv: fresh, clock: d.clock}
	d2.advance(10 * time.Second)
	d2.advance(20 * time.Second)
	m, _ := rec.last(t)
	if c2.state != StateSelecting || m.MessageType() != dhcpv4.MessageTypeDiscover || addrOf(m.RequestedIPAddress()) != held.Addr() {
		t.Fatalf("after silence: %v, sent %v asking for %v; want SELECTING, a DISCOVER for %v", c2.state, m.MessageType(), m.RequestedIPAddress(), held.Addr())
	}

	// Another client's file: ignored.
	rec3 := &recorder{}
	c3 := newClient(ClientConfig{GUID: testGUID(5), Clock: d.clock, LeaseFile: path}, rec3, rec3)
	if _, ok := c3.loadLease(d.clock.Now()); ok {
		t.Error("a client took another client's lease file")
	}

	// A NAK (the address is someone else's now) starts over.
	rec4 := &recorder{}
	c4 := newClient(ClientConfig{GUID: testGUID(0), Seed: 9, Clock: d.clock, LeaseFile: path}, rec4, rec4)
	c4.enterReboot(l)
	req, _ := rec4.last(t)
	c4.handleMessage(d.srv.nak(req, "not yours").ToBytes())
	if c4.state != StateSelecting {
		t.Errorf("after a NAK in REBOOTING: %v", c4.state)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("lease file kept after a NAK: %v", err)
	}
}

// TestServerProbesBeforeOffer: an address some host answers for is not
// offered, even though no lease holds it; it is quarantined (and the
// quarantine persisted), and the next address is offered after its own
// probe.
func TestServerProbesBeforeOffer(t *testing.T) {
	w := newWire(t, 0)
	squatted := netip.MustParseAddr("10.7.0.10")
	var mu sync.Mutex
	var probed []netip.Addr
	cfg := serverConfig(nil, nil)
	cfg.PoolStart, cfg.PoolEnd = squatted, netip.MustParseAddr("10.7.0.20")
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	cfg.ProbeWait = 100 * time.Millisecond
	cfg.Probe = func(ctx context.Context, a netip.Addr) (bool, error) {
		mu.Lock()
		probed = append(probed, a)
		mu.Unlock()
		if a == squatted {
			return true, nil
		}
		<-ctx.Done() // silence until the wait runs out
		return false, nil
	}
	srv := startServer(t, w, cfg)
	c := startClient(t, w, ClientConfig{GUID: testGUID(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.WaitBound(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr.Addr() == squatted {
		t.Fatalf("offered %v, which a host answers for", squatted)
	}
	st := srv.Stats()
	if st.ProbeConflicts != 1 || st.Probes < 2 {
		t.Errorf("stats %+v; want 1 conflict in 2 or more probes", st)
	}
	mu.Lock()
	if len(probed) < 2 || probed[0] != squatted || probed[1] != l.Addr.Addr() {
		t.Errorf("probed %v", probed)
	}
	mu.Unlock()
	lf, err := readLeaseFile(cfg.LeaseFile)
	if err != nil || len(lf.Declined) != 1 || lf.Declined[0].Addr != squatted {
		t.Errorf("lease file: %+v, %v; want %v quarantined", lf, err, squatted)
	}
}

// TestServerRestartNoDuplicates: a server restarted over its lease file
// hands a new client none of the addresses live clients hold, and a
// server restarted without one (the file lost) still does not, thanks to
// its probe.
func TestServerRestartNoDuplicates(t *testing.T) {
	for _, keepFile := range []bool{true, false} {
		name := "lease file"
		if !keepFile {
			name = "probe only"
		}
		t.Run(name, func(t *testing.T) {
			w := newWire(t, 0)
			dir := t.TempDir()
			held := map[netip.Addr]string{}
			var mu sync.Mutex
			// The probe asks the live clients, as ARP would.
			var clients []*Client
			probe := func(ctx context.Context, a netip.Addr) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				for _, c := range clients {
					if l, ok := c.Lease(); ok && l.Addr.Addr() == a {
						return true, nil
					}
				}
				return false, nil
			}
			cfg := serverConfig(nil, nil)
			cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr("10.7.0.10"), netip.MustParseAddr("10.7.0.30")
			cfg.LeaseFile = filepath.Join(dir, "leases.json")
			cfg.Probe = probe
			cfg.Stack = w.addStack(netip.PrefixFrom(testServerID, testSubnet.Bits()))
			first, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			bound := func(c *Client) netip.Addr {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				l, err := c.WaitBound(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return l.Addr.Addr()
			}
			for i := range 3 {
				c := startClient(t, w, ClientConfig{GUID: testGUID(i)})
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
				held[bound(c)] = hex.EncodeToString(c.ClientID())
			}
			first.Stop()
			if !keepFile {
				os.Remove(cfg.LeaseFile)
			}
			second, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := second.Start(); err != nil {
				t.Fatal(err)
			}
			defer second.Stop()
			for i := 3; i < 6; i++ {
				c := startClient(t, w, ClientConfig{GUID: testGUID(i)})
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
				a := bound(c)
				if owner, dup := held[a]; dup {
					t.Fatalf("after the restart %v went to client %x, but client %s holds it", a, c.ClientID(), owner)
				}
				held[a] = hex.EncodeToString(c.ClientID())
			}
			if len(held) != 6 {
				t.Errorf("%d distinct addresses for 6 clients: %v", len(held), held)
			}
		})
	}
}
