package dhcp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// nakFor has the server core build a NAK answering the client's last
// message.
func nakFor(t *testing.T, d *driven) []byte {
	t.Helper()
	req, _ := d.rec.last(t)
	return d.srv.nak(req, "test says no").ToBytes()
}

func TestNakRestarts(t *testing.T) {
	tests := []struct {
		name string
		// prepare brings the client to the state where the NAK lands.
		prepare     func(d *driven)
		wantRemoved int
	}{
		{"requesting", func(d *driven) { d.exchange(t) }, 0},
		{"renewing", func(d *driven) { d.exchange(t); d.exchange(t); d.advance(30 * time.Minute) }, 1},
		{"rebinding", func(d *driven) { d.exchange(t); d.exchange(t); d.advance(53 * time.Minute) }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events := newEventLog()
			d := newDriven(t, ClientConfig{OnEvent: events.hook})
			tc.prepare(d)
			before, _ := d.rec.last(t)
			d.c.handleMessage(nakFor(t, d))
			if d.c.state != StateSelecting {
				t.Fatalf("state %v after NAK, want SELECTING", d.c.state)
			}
			m, dst := d.rec.last(t)
			if m.MessageType() != dhcpv4.MessageTypeDiscover || dst != serverBroadcast || m.TransactionID == before.TransactionID {
				t.Errorf("after NAK sent %v to %v with xid %v (was %v)", m.MessageType(), dst, m.TransactionID, before.TransactionID)
			}
			if len(d.rec.removed) != tc.wantRemoved {
				t.Errorf("removed %d leases, want %d", len(d.rec.removed), tc.wantRemoved)
			}
			if st := d.c.Stats(); st.Naks != 1 {
				t.Errorf("stats %+v", st)
			}
			events.wait(t, EventNak, time.Second)
			// The restarted exchange works.
			d.exchange(t)
			d.exchange(t)
			if d.c.state != StateBound {
				t.Errorf("state %v after a fresh exchange", d.c.state)
			}
		})
	}
}

// TestNakFromOtherServerIgnored: a NAK naming a server the client did not
// choose is not the chosen server's word.
func TestNakFromOtherServerIgnored(t *testing.T) {
	d := newDriven(t, ClientConfig{})
	d.exchange(t)
	req, _ := d.rec.last(t)
	nak := d.srv.nak(req, "not me")
	nak.UpdateOption(dhcpv4.OptServerIdentifier(ip4(netip.MustParseAddr("10.7.0.99"))))
	d.c.handleMessage(nak.ToBytes())
	if d.c.state != StateRequesting || d.c.Stats().Ignored != 1 {
		t.Fatalf("state %v, stats %+v", d.c.state, d.c.Stats())
	}
}

// TestRequestGivesUp: with no answer to its REQUESTs the client starts
// over after RequestTries (RFC 2131 section 4.4.1).
func TestRequestGivesUp(t *testing.T) {
	d := newDriven(t, ClientConfig{RequestTries: 3, Backoff: Backoff{Initial: time.Second, Max: 4 * time.Second, Jitter: -1}})
	d.exchange(t) // OFFER; REQUEST #1 sent
	d.advance(time.Second)
	d.advance(2 * time.Second) // REQUEST #2, #3
	if d.c.state != StateRequesting {
		t.Fatalf("state %v after 3 REQUESTs", d.c.state)
	}
	d.advance(4 * time.Second)
	m, _ := d.rec.last(t)
	if d.c.state != StateSelecting || m.MessageType() != dhcpv4.MessageTypeDiscover {
		t.Fatalf("state %v, last %v", d.c.state, m.MessageType())
	}
	if st := d.c.Stats(); st.Requests != 3 || st.Retransmits != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestBackoffSchedule(t *testing.T) {
	c := newClient(ClientConfig{GUID: 1, Seed: 9}, &recorder{}, &recorder{})
	// RFC 2131 section 4.1: 4, 8, 16, 32, 64, 64 s, each ±1 s.
	for attempt, base := range []time.Duration{4, 8, 16, 32, 64, 64, 64} {
		c.attempt = attempt
		for range 50 {
			d := c.backoff()
			if d < (base-1)*time.Second || d > (base+1)*time.Second {
				t.Fatalf("attempt %d: wait %v, want %v s ±1 s", attempt, d, int(base))
			}
		}
	}
}

// TestStartDelay: a client starting in INIT sends its first DISCOVER
// after a random wait below StartDelay (RFC 2131 section 4.4.1), drawn
// anew for each client, or at once without one.
func TestStartDelay(t *testing.T) {
	const step = 100 * time.Millisecond
	tests := []struct {
		name  string
		delay time.Duration
	}{
		{"none", 0},
		{"rfc", 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var waits []time.Duration
			for seed := uint64(1); seed <= 20; seed++ {
				clock := NewManualClock(testEpoch)
				rec := &recorder{}
				c := newClient(ClientConfig{GUID: testGUID(0), Seed: seed, Clock: clock, StartDelay: tc.delay}, rec, rec)
				d := &driven{c: c, rec: rec, clock: clock}
				c.begin()
				var waited time.Duration
				for len(rec.sent) == 0 && waited <= tc.delay {
					if c.state != StateInit {
						t.Fatalf("seed %d: state %v before the first DISCOVER, want INIT", seed, c.state)
					}
					d.advance(step)
					waited += step
				}
				if len(rec.sent) != 1 {
					t.Fatalf("seed %d: %d messages sent within %v, want one", seed, len(rec.sent), waited)
				}
				if m, dst := rec.last(t); m.MessageType() != dhcpv4.MessageTypeDiscover || dst != serverBroadcast || c.state != StateSelecting {
					t.Fatalf("seed %d: sent %v to %v, state %v; want a broadcast DISCOVER in SELECTING", seed, m.MessageType(), dst, c.state)
				}
				waits = append(waits, waited)
			}
			if tc.delay == 0 {
				for _, w := range waits {
					if w != 0 {
						t.Fatalf("DISCOVERs after %v, want all at once", waits)
					}
				}
				return
			}
			// Twenty uniform draws all in one half of the range would
			// be a one in half a million chance: the waits are spread.
			lo, hi := slices.Min(waits), slices.Max(waits)
			if lo >= tc.delay/2 || hi < tc.delay/2 {
				t.Errorf("first DISCOVERs after %v, want them spread over [0, %v)", waits, tc.delay)
			}
		})
	}
}

// TestDeclineAndRelease: the Probe hook finds the first address taken,
// the client declines it, the server quarantines it and the client ends
// up with another; on Stop it releases that one.
func TestDeclineAndRelease(t *testing.T) {
	w := newWire(t, 0)
	srv := startServer(t, w, serverConfig(nil, nil))
	var mu sync.Mutex
	var probed []netip.Addr
	probe := func(ctx context.Context, a netip.Addr) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		probed = append(probed, a)
		return len(probed) == 1, nil
	}
	events := newEventLog()
	c := startClient(t, w, ClientConfig{GUID: testGUID(3), Probe: probe, DeclineWait: 20 * time.Millisecond, OnEvent: events.hook})
	declined := events.wait(t, EventDeclined, 5*time.Second).Lease.Addr.Addr()
	l := events.wait(t, EventBound, 5*time.Second).Lease
	if l.Addr.Addr() == declined {
		t.Fatalf("bound the declined address %v", declined)
	}
	if st := srv.Stats(); st.Declines != 1 {
		t.Errorf("server stats %+v", st)
	}
	for _, li := range srv.Leases() {
		if li.Addr == declined {
			t.Errorf("server still binds declined %v: %+v", declined, li)
		}
	}
	// The quarantine holds against a client asking for it by name.
	srv.mu.Lock()
	free := srv.pool.freeFor(declined, "other", srv.clock.Now())
	srv.mu.Unlock()
	if free {
		t.Errorf("declined %v is free again at once", declined)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	events.wait(t, EventReleased, time.Second)
	waitFor(t, "RELEASE at the server", func() bool { return srv.Stats().Releases == 1 })
	for _, li := range srv.Leases() {
		if li.Addr == l.Addr.Addr() && li.State != "released" {
			t.Errorf("after RELEASE the server holds %+v", li)
		}
	}
	if got := nicAddrs(c.cfg.Stack); len(got) != 0 {
		t.Errorf("NIC addresses after Stop: %v", got)
	}
	if c.State() != StateStopped {
		t.Errorf("state %v after Stop", c.State())
	}
	if _, err := c.WaitBound(ctx); err == nil {
		t.Error("WaitBound succeeded on a stopped client")
	}
}

func TestClientIgnoresOthersReplies(t *testing.T) {
	d := newDriven(t, ClientConfig{})
	req, _ := d.rec.last(t)
	offer, _, _ := d.srv.handle(req.ToBytes(), netip.AddrPort{})
	tests := []struct {
		name   string
		mutate func(m *dhcpv4.DHCPv4)
	}{
		{"other xid", func(m *dhcpv4.DHCPv4) { m.TransactionID[0] ^= 1 }},
		{"other client id", func(m *dhcpv4.DHCPv4) {
			m.UpdateOption(dhcpv4.OptClientIdentifier(NewClientID(1, testGUID(9))))
		}},
		{"request op", func(m *dhcpv4.DHCPv4) { m.OpCode = dhcpv4.OpcodeBootRequest }},
		{"ack while selecting", func(m *dhcpv4.DHCPv4) {
			m.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := dhcpv4.FromBytes(offer)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			before := d.c.Stats().Ignored
			d.c.handleMessage(m.ToBytes())
			if d.c.state != StateSelecting || d.c.Stats().Ignored != before+1 {
				t.Errorf("state %v, ignored %d", d.c.state, d.c.Stats().Ignored-before)
			}
		})
	}
}

func TestNewClientRejects(t *testing.T) {
	w := newWire(t, 0)
	s := w.addStack(netip.Prefix{})
	for _, cfg := range []ClientConfig{
		{},
		{Stack: s, NIC: 9, GUID: 1},
		{Stack: s, NIC: testNIC},
	} {
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v) accepted", cfg)
		}
	}
}
