package dhcp

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client stages FuzzClientHandle prepares before feeding its input.
const (
	stageSelecting = iota
	stageRequesting
	stageBound
	stageRenewing
	stageRebinding
	numStages
)

// prepareStage brings a driven client (and its server) to stage through
// a real exchange.
func prepareStage(t testing.TB, stage uint8) *driven {
	d := newDriven(t, ClientConfig{})
	switch stage % numStages {
	case stageRequesting:
		d.exchange(t)
	case stageBound:
		d.exchange(t)
		d.exchange(t)
	case stageRenewing:
		d.exchange(t)
		d.exchange(t)
		d.advance(30 * time.Minute)
	case stageRebinding:
		d.exchange(t)
		d.exchange(t)
		d.advance(53 * time.Minute)
	}
	return d
}

// clientSeeds returns real server replies for each client stage: what
// the server core answers to what the client core sent.
func clientSeeds(t testing.TB) map[string]struct {
	stage uint8
	msg   []byte
} {
	out := make(map[string]struct {
		stage uint8
		msg   []byte
	})
	add := func(name string, stage uint8, b []byte) {
		out[name] = struct {
			stage uint8
			msg   []byte
		}{stage, b}
	}
	for stage := uint8(0); stage < numStages; stage++ {
		d := prepareStage(t, stage)
		last, _ := d.rec.last(t)
		if reply, _, ok := d.srv.handle(last.ToBytes(), netip.AddrPort{}); ok {
			m, _ := dhcpv4.FromBytes(reply)
			add(fmt.Sprintf("stage%d-%s", stage, m.MessageType()), stage, reply)
		}
		add(fmt.Sprintf("stage%d-nak", stage), stage, d.srv.nak(last, "no").ToBytes())
	}
	return out
}

// serverSeeds returns real client messages of every type the server
// handles, from the client core where it sends them.
func serverSeeds(t testing.TB) map[string][]byte {
	out := make(map[string][]byte)
	d := prepareStage(t, stageRenewing)
	for _, s := range d.rec.sent {
		m, _ := dhcpv4.FromBytes(s.b)
		name := "client-" + m.MessageType().String()
		if m.MessageType() == dhcpv4.MessageTypeRequest {
			if m.ClientIPAddr.IsUnspecified() {
				name += "-selecting"
			} else {
				name += "-renewing"
			}
		}
		out[name] = s.b
	}
	d.c.sendDecline(d.c.lease)
	m, _ := d.rec.last(t)
	out["client-DECLINE"] = m.ToBytes()
	d.c.shutdown()
	m, _ = d.rec.last(t)
	out["client-RELEASE"] = m.ToBytes()
	out["client-INFORM"] = clientMsg(dhcpv4.MessageTypeInform, idA, withCiaddr("10.7.0.77")).ToBytes()
	out["ethernet-DISCOVER-no-id"] = clientMsg(dhcpv4.MessageTypeDiscover, nil, func(m *dhcpv4.DHCPv4) {
		m.HWType = iana.HWTypeEthernet
		m.ClientHWAddr = []byte{2, 0, 0, 0, 0, 1}
	}).ToBytes()
	out["ipoib-DISCOVER-no-id"] = clientMsg(dhcpv4.MessageTypeDiscover, nil).ToBytes()
	return out
}

// TestFuzzSeedsCurrent checks the checked-in corpora are what the
// generators produce today, so the seeds stay real messages of this
// client and server. DHCP_WRITE_FUZZ_SEEDS=1 rewrites them.
func TestFuzzSeedsCurrent(t *testing.T) {
	files := make(map[string]string)
	for name, s := range clientSeeds(t) {
		files[filepath.Join("FuzzClientHandle", name)] = fmt.Sprintf("go test fuzz v1\nuint8(%d)\n[]byte(%q)\n", s.stage, s.msg)
	}
	for name, b := range serverSeeds(t) {
		files[filepath.Join("FuzzServerHandle", name)] = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	}
	write := os.Getenv("DHCP_WRITE_FUZZ_SEEDS") == "1"
	for name, body := range files {
		path := filepath.Join("testdata", "fuzz", name)
		if write {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != body {
			t.Errorf("%s is stale or missing (%v); rerun with DHCP_WRITE_FUZZ_SEEDS=1", path, err)
		}
	}
}

// clientCounted sums the counters one received message moves exactly one
// of.
func clientCounted(s ClientStats) uint64 {
	return s.Offers + s.Acks + s.Naks + s.Malformed + s.Ignored
}

func FuzzClientHandle(f *testing.F) {
	f.Add(uint8(stageSelecting), []byte{})
	f.Add(uint8(stageBound), make([]byte, 240))
	f.Fuzz(func(t *testing.T, stage uint8, b []byte) {
		d := prepareStage(t, stage)
		before := d.c.state
		n := clientCounted(d.c.Stats())
		d.c.handleMessage(b)
		if got := clientCounted(d.c.Stats()); got != n+1 {
			t.Fatalf("one message moved the counters by %d", got-n)
		}
		after := d.c.state
		switch {
		case after == before:
		case before == StateSelecting && after == StateRequesting:
			if d.c.offer == nil || !isUsableUnicast(addrOf(d.c.offer.YourIPAddr)) {
				t.Fatalf("REQUESTING without a usable offer")
			}
		case (before == StateRequesting || before == StateRenewing || before == StateRebinding) && after == StateBound:
		case after == StateSelecting && (before == StateRequesting || before == StateRenewing || before == StateRebinding):
			// A NAK restarts.
		default:
			t.Fatalf("message moved the client from %v to %v", before, after)
		}
		if after == StateBound {
			l := d.c.lease
			if l == nil || !isUsableUnicast(l.Addr.Addr()) || !isUsableUnicast(l.ServerID) || l.Duration <= 0 {
				t.Fatalf("bound with lease %+v", l)
			}
			if !l.Infinite() && !(0 < l.T1 && l.T1 < l.T2 && l.T2 < l.Duration) {
				t.Fatalf("timers out of order: %+v", l)
			}
			if l.Start.After(d.clock.Now()) {
				t.Fatalf("lease starts in the future: %v", l.Start)
			}
		}
		// Whatever it sent in response must be a well-formed IPoIB message.
		for _, s := range d.rec.sent {
			m, err := dhcpv4.FromBytes(s.b)
			if err != nil || m.HWType != iana.HWType(HTypeIPoIB) || len(m.ClientHWAddr) != 0 || !m.IsBroadcast() {
				t.Fatalf("client sent %v (%v)", m, err)
			}
		}
	})
}

// serverCounted sums the counters every message moves at least one of;
// rule-breaking messages of a known type move their type and Malformed.
func serverCounted(s ServerStats) (types, drops uint64) {
	return s.Discovers + s.Requests + s.Declines + s.Releases + s.Informs + s.NoClientID + s.Ignored, s.Malformed
}

func FuzzServerHandle(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 300))
	f.Fuzz(func(t *testing.T, b []byte) {
		srv, _ := newTestServer(t)
		t0, d0 := serverCounted(srv.Stats())
		reply, dst, ok := srv.handle(b, netip.MustParseAddrPort("0.0.0.0:68"))
		t1, d1 := serverCounted(srv.Stats())
		if t1-t0 > 1 || (t1 == t0 && d1 != d0+1) {
			t.Fatalf("counters moved by %d types and %d drops", t1-t0, d1-d0)
		}
		checkPool(t, srv.pool)
		if !ok {
			return
		}
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatalf("replied to a message that does not decode: %v", err)
		}
		m, err := dhcpv4.FromBytes(reply)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		// Our own encoding is canonical: decoding and re-encoding it
		// gives back the same bytes.
		if again := m.ToBytes(); !bytes.Equal(again, reply) {
			t.Fatalf("reply does not round-trip:\n% x\n% x", reply, again)
		}
		if m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != req.TransactionID || m.HWType != req.HWType {
			t.Fatalf("reply header %v for request %v", m, req)
		}
		switch mt := m.MessageType(); mt {
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			if y := addrOf(m.YourIPAddr); !y.IsUnspecified() && !srv.pool.contains(y) {
				t.Fatalf("%v of %v outside the pool", mt, y)
			}
		case dhcpv4.MessageTypeNak:
		default:
			t.Fatalf("replied %v", mt)
		}
		if dst.Port() != ClientPort && dst.Port() != ServerPort {
			t.Fatalf("reply to %v", dst)
		}
	})
}

// checkPool checks the two indexes of the pool agree.
func checkPool(t *testing.T, p *pool) {
	t.Helper()
	for k, b := range p.byKey {
		if b.key != k || p.byAddr[b.addr] != b || !p.contains(b.addr) {
			t.Fatalf("binding %+v under key %x disagrees with the address index", b, k)
		}
	}
	for a, b := range p.byAddr {
		if b.addr != a || p.byKey[b.key] != b {
			t.Fatalf("binding %+v under %v disagrees with the key index", b, a)
		}
	}
}
