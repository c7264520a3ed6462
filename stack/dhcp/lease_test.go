package dhcp

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// advanceUntil steps the manual clock until cond holds, letting c's
// goroutine work through what each step fired before judging; it fails
// after limit of clock time.
func advanceUntil(t *testing.T, c *Client, clock *ManualClock, step, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	settle := func() {
		// Timer functions post their events before Advance returns;
		// once the queue is empty the last one is being handled.
		for deadline := time.Now().Add(time.Second); len(c.events) > 0 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for moved := time.Duration(0); ; moved += step {
		settle()
		if cond() {
			return
		}
		if moved >= limit {
			t.Fatalf("%s: not within %v of clock time", what, limit)
		}
		clock.Advance(step)
	}
}

// TestRenewRebindExpire runs a lease through T1, T2 and expiry on a
// manual clock: renewal extends it; with the server gone, rebinding
// broadcasts and the address is removed when the lease runs out.
func TestRenewRebindExpire(t *testing.T) {
	clock := NewManualClock(testEpoch)
	w := newWire(t, 0)
	scfg := serverConfig(nil, clock)
	scfg.LeaseTime = time.Hour
	srv := startServer(t, w, scfg)
	events := newEventLog()
	c := startClient(t, w, ClientConfig{GUID: testGUID(7), Clock: clock, OnEvent: events.hook})
	bound := events.wait(t, EventBound, 5*time.Second).Lease
	if !bound.Start.Equal(testEpoch) || bound.Duration != time.Hour || bound.T1 != 30*time.Minute || bound.T2 != 52*time.Minute+30*time.Second {
		t.Fatalf("lease %v start %v T1 %v T2 %v", bound, bound.Start, bound.T1, bound.T2)
	}
	addr := bound.Addr.Addr()

	// T1: a unicast REQUEST, answered; the lease now runs from T1.
	advanceUntil(t, c, clock, time.Minute, 31*time.Minute, "renewal", func() bool { return len(events.ch) > 0 })
	renewed := events.wait(t, EventRenewed, 5*time.Second).Lease
	if want := testEpoch.Add(30 * time.Minute); !renewed.Start.Equal(want) || renewed.Addr != bound.Addr {
		t.Fatalf("renewed lease %v from %v, want %v from %v", renewed.Addr, renewed.Start, bound.Addr, want)
	}
	if st := srv.Stats(); st.Acks != 2 || st.Requests != 2 {
		t.Errorf("server after renewal: %+v", st)
	}
	if c.State() != StateBound {
		t.Errorf("state %v after renewal", c.State())
	}

	// The server goes away. The client renews at the new T1 in vain,
	// rebinds at T2 by broadcast, and at expiry lets the address go.
	srv.Stop()
	before := c.Stats().Requests
	expiry := renewed.Expiry()
	advanceUntil(t, c, clock, time.Minute, 2*time.Hour, "rebinding", func() bool { return c.State() == StateRebinding })
	if now := clock.Now(); now.Before(renewed.RebindAt()) {
		t.Errorf("rebinding at %v, before T2 %v", now, renewed.RebindAt())
	}
	advanceUntil(t, c, clock, time.Minute, 2*time.Hour, "expiry", func() bool { return len(events.ch) > 0 })
	ev := events.wait(t, EventExpired, 5*time.Second)
	if ev.At.Before(expiry) || ev.Lease.Addr != bound.Addr {
		t.Errorf("expired %v at %v, lease ran to %v", ev.Lease.Addr, ev.At, expiry)
	}
	if got := nicAddrs(c.cfg.Stack); slices.Contains(got, addr) {
		t.Errorf("address %v still on the NIC after expiry: %v", addr, got)
	}
	if _, ok := c.Lease(); ok {
		t.Error("client still reports a lease")
	}
	// Renewing retransmits at half the time to T2 (min 60 s) and
	// rebinding likewise to expiry: several REQUESTs, not one per step.
	if n := c.Stats().Requests - before; n < 4 || n > 20 {
		t.Errorf("%d REQUESTs between renewal and expiry", n)
	}
}

// TestRenewTimingDriven checks the exact retransmission schedule of RFC
// 2131 section 4.4.5 without sockets.
func TestRenewTimingDriven(t *testing.T) {
	d := newDriven(t, ClientConfig{})
	d.exchange(t)
	d.exchange(t)
	l := *d.c.lease
	n := len(d.rec.sent)
	d.advance(l.T1) // T1 = 30 min: first renewal REQUEST
	if len(d.rec.sent) != n+1 || d.c.state != StateRenewing {
		t.Fatalf("at T1: %d messages, state %v", len(d.rec.sent)-n, d.c.state)
	}
	// Next retransmission: half of the 22.5 min to T2.
	d.advance(11*time.Minute + 14*time.Second)
	if len(d.rec.sent) != n+1 {
		t.Fatalf("retransmitted before half-way to T2")
	}
	d.advance(time.Second)
	if len(d.rec.sent) != n+2 {
		t.Fatalf("no retransmission half-way to T2")
	}
	// Close to T2 the wait would fall below 60 s: the next one is at T2
	// itself, where rebinding takes over with a broadcast.
	d.advance(l.RebindAt().Sub(d.clock.Now()))
	m, dst := d.rec.last(t)
	if d.c.state != StateRebinding || dst != serverBroadcast || !m.ClientIPAddr.Equal(ip4(l.Addr.Addr())) {
		t.Fatalf("at T2: state %v, last REQUEST to %v ciaddr %v", d.c.state, dst, m.ClientIPAddr)
	}
	d.advance(l.Expiry().Sub(d.clock.Now()))
	if d.c.state != StateSelecting || len(d.rec.removed) != 1 || d.rec.removed[0].Addr != l.Addr {
		t.Fatalf("at expiry: state %v, removed %v", d.c.state, d.rec.removed)
	}
}

// TestLeaseFileRestart checks a restarted server hands the same
// addresses back, both to clients still holding leases and to clients
// that released them, whatever order they come back in.
func TestLeaseFileRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	const n = 6
	w1 := newWire(t, 0)
	cfg := serverConfig(nil, nil)
	cfg.LeaseFile = path
	srv1 := startServer(t, w1, cfg)
	clients, leases := leaseAll(t, w1, n, 10*time.Second)
	want := make(map[int]netip.Addr)
	for i, l := range leases {
		want[i] = l.Addr.Addr()
	}
	// Half the clients release; the other half keep their leases (their
	// machines "crash" with the server).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < n/2; i++ {
		if err := clients[i].Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "releases", func() bool { return srv1.Stats().Releases == n/2 })
	srv1.Stop()

	var lf leaseFile
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatalf("lease file: %v\n%s", err, data)
	}
	states := map[string]int{}
	for _, r := range lf.Leases {
		states[r.State]++
	}
	if len(lf.Leases) != n || states["bound"] != n-n/2 || states["released"] != n/2 {
		t.Fatalf("lease file holds %v:\n%s", states, data)
	}

	// A new server from the file on a new wire; the same ports come
	// back in reverse order, so first-come allocation would differ.
	w2 := newWire(t, 0)
	srv2 := startServer(t, w2, cfg)
	for i := n - 1; i >= 0; i-- {
		c := startClient(t, w2, ClientConfig{GUID: testGUID(i), Seed: uint64(100 + i)})
		l, err := c.WaitBound(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Addr.Addr() != want[i] {
			t.Errorf("client %d got %v after the restart, had %v", i, l.Addr.Addr(), want[i])
		}
	}
	if st := srv2.Stats(); st.Naks != 0 || st.Acks < n {
		t.Errorf("restarted server: %+v", st)
	}
}

// waitFor polls cond for up to 5 s of real time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLeaseFileRejects(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"missing is empty", "", true},
		{"wrong version", `{"version": 9, "leases": []}`, false},
		{"not JSON", `{"version": 1, "leases": [`, false},
		{"bad records dropped", `{"version": 1, "leases": [
			{"client_id": "zz", "addr": "10.7.0.9", "state": "bound", "expires": "2030-01-01T00:00:00Z"},
			{"client_id": "ff01", "addr": "192.168.0.9", "state": "bound", "expires": "2030-01-01T00:00:00Z"},
			{"client_id": "ff02", "hw_addr": "0102", "addr": "10.7.0.8", "state": "bound", "expires": "2030-01-01T00:00:00Z"},
			{"client_id": "ff03", "addr": "10.7.0.7", "state": "weird", "expires": "2030-01-01T00:00:00Z"}]}`, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "f"+string(rune('a'+i)))
			if tc.body != "" {
				if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := serverConfig(nil, nil)
			cfg.LeaseFile = path
			srv, err := NewServer(cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("NewServer: %v", err)
			}
			if err == nil && len(srv.Leases()) != 0 {
				t.Errorf("loaded %v", srv.Leases())
			}
		})
	}
}
