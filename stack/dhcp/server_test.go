package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// clientMsg builds a client message as an IPoIB client would, with
// modifiers for the case at hand.
func clientMsg(mt dhcpv4.MessageType, id []byte, mods ...func(*dhcpv4.DHCPv4)) *dhcpv4.DHCPv4 {
	m := newIPoIBMessage(dhcpv4.OpcodeBootRequest, dhcpv4.TransactionID{1, 2, 3, 4}, mt)
	if id != nil {
		m.UpdateOption(dhcpv4.OptClientIdentifier(id))
	}
	for _, f := range mods {
		f(m)
	}
	return m
}

func withOpt(o dhcpv4.Option) func(*dhcpv4.DHCPv4) {
	return func(m *dhcpv4.DHCPv4) { m.UpdateOption(o) }
}

func withCiaddr(a string) func(*dhcpv4.DHCPv4) {
	return func(m *dhcpv4.DHCPv4) { m.ClientIPAddr = ip4(netip.MustParseAddr(a)) }
}

func ipOpt(f func(net.IP) dhcpv4.Option, a string) dhcpv4.Option {
	return f(ip4(netip.MustParseAddr(a)))
}

// newTestServer returns a socketless server with a five-address pool on
// a manual clock, and client A bound to 10.7.0.10.
func newTestServer(t testing.TB) (*Server, *ManualClock) {
	t.Helper()
	srv, clock := newPoolServer(t)
	srv.pool.set(keyOf(idA), netip.MustParseAddr("10.7.0.10"), bindBound, testEpoch.Add(time.Hour))
	return srv, clock
}

var (
	idA = NewClientID(1, testGUID(10))
	idB = NewClientID(1, testGUID(11))
)

func keyOf(id []byte) clientKey { return clientKey(append([]byte{keyClientID}, id...)) }

// TestServerHandle walks RFC 2131 section 4.3 for IPoIB clients.
func TestServerHandle(t *testing.T) {
	bcast := clientBroadcast
	tests := []struct {
		name    string
		msg     *dhcpv4.DHCPv4
		raw     []byte // instead of msg
		want    dhcpv4.MessageType
		yiaddr  string
		dst     netip.AddrPort
		counter func(ServerStats) uint64
	}{
		{name: "discover, known client gets its address", msg: clientMsg(dhcpv4.MessageTypeDiscover, idA),
			want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.10", dst: bcast, counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "discover, new client gets a free one", msg: clientMsg(dhcpv4.MessageTypeDiscover, idB),
			want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.11", dst: bcast, counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "discover asking for a taken address", msg: clientMsg(dhcpv4.MessageTypeDiscover, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.10"))),
			want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.11", dst: bcast, counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "discover asking for a free address", msg: clientMsg(dhcpv4.MessageTypeDiscover, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.13"))),
			want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.13", dst: bcast, counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "selecting, ours", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.12")), withOpt(ipOpt(dhcpv4.OptServerIdentifier, "10.7.0.1"))),
			want: dhcpv4.MessageTypeAck, yiaddr: "10.7.0.12", dst: bcast, counter: func(s ServerStats) uint64 { return s.Acks }},
		{name: "selecting, taken", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.10")), withOpt(ipOpt(dhcpv4.OptServerIdentifier, "10.7.0.1"))),
			want: dhcpv4.MessageTypeNak, dst: bcast, counter: func(s ServerStats) uint64 { return s.Naks }},
		{name: "selecting, other server", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.12")), withOpt(ipOpt(dhcpv4.OptServerIdentifier, "10.7.0.2"))),
			counter: func(s ServerStats) uint64 { return s.Requests }},
		{name: "selecting without option 50", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptServerIdentifier, "10.7.0.1"))),
			counter: func(s ServerStats) uint64 { return s.Malformed }},
		{name: "init-reboot, right address", msg: clientMsg(dhcpv4.MessageTypeRequest, idA, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.10"))),
			want: dhcpv4.MessageTypeAck, yiaddr: "10.7.0.10", dst: bcast, counter: func(s ServerStats) uint64 { return s.Acks }},
		{name: "init-reboot, wrong address", msg: clientMsg(dhcpv4.MessageTypeRequest, idA, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.12"))),
			want: dhcpv4.MessageTypeNak, dst: bcast, counter: func(s ServerStats) uint64 { return s.Naks }},
		{name: "init-reboot, wrong network", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "192.168.1.5"))),
			want: dhcpv4.MessageTypeNak, dst: bcast, counter: func(s ServerStats) uint64 { return s.Naks }},
		{name: "init-reboot, unknown client", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.12"))),
			counter: func(s ServerStats) uint64 { return s.Requests }},
		{name: "renewing", msg: clientMsg(dhcpv4.MessageTypeRequest, idA, withCiaddr("10.7.0.10")),
			want: dhcpv4.MessageTypeAck, yiaddr: "10.7.0.10", dst: netip.MustParseAddrPort("10.7.0.10:68"), counter: func(s ServerStats) uint64 { return s.Acks }},
		{name: "renewing someone else's address", msg: clientMsg(dhcpv4.MessageTypeRequest, idB, withCiaddr("10.7.0.10")),
			want: dhcpv4.MessageTypeNak, dst: bcast, counter: func(s ServerStats) uint64 { return s.Naks }},
		{name: "relayed discover goes to the relay", msg: clientMsg(dhcpv4.MessageTypeDiscover, idB, func(m *dhcpv4.DHCPv4) { m.GatewayIPAddr = ip4(netip.MustParseAddr("10.7.0.200")) }),
			want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.11", dst: netip.MustParseAddrPort("10.7.0.200:67"), counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "inform", msg: clientMsg(dhcpv4.MessageTypeInform, idB, withCiaddr("10.7.0.77")),
			want: dhcpv4.MessageTypeAck, yiaddr: "0.0.0.0", dst: netip.MustParseAddrPort("10.7.0.77:68"), counter: func(s ServerStats) uint64 { return s.Informs }},
		{name: "inform without ciaddr", msg: clientMsg(dhcpv4.MessageTypeInform, idB),
			counter: func(s ServerStats) uint64 { return s.Malformed }},
		{name: "release", msg: clientMsg(dhcpv4.MessageTypeRelease, idA, withCiaddr("10.7.0.10"), withOpt(ipOpt(dhcpv4.OptServerIdentifier, "10.7.0.1"))),
			counter: func(s ServerStats) uint64 { return s.Releases }},
		{name: "decline", msg: clientMsg(dhcpv4.MessageTypeDecline, idA, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, "10.7.0.10"))),
			counter: func(s ServerStats) uint64 { return s.Declines }},
		{name: "IPoIB without client id is refused", msg: clientMsg(dhcpv4.MessageTypeDiscover, nil),
			counter: func(s ServerStats) uint64 { return s.NoClientID }},
		{name: "IPoIB request without client id is refused", msg: clientMsg(dhcpv4.MessageTypeRequest, nil, withCiaddr("10.7.0.10")),
			counter: func(s ServerStats) uint64 { return s.NoClientID }},
		{name: "Ethernet without client id keyed by chaddr", msg: clientMsg(dhcpv4.MessageTypeDiscover, nil, func(m *dhcpv4.DHCPv4) {
			m.HWType = iana.HWTypeEthernet
			m.ClientHWAddr = net.HardwareAddr{2, 0, 0, 0, 0, 1}
		}), want: dhcpv4.MessageTypeOffer, yiaddr: "10.7.0.11", dst: bcast, counter: func(s ServerStats) uint64 { return s.Offers }},
		{name: "one-byte client id", msg: clientMsg(dhcpv4.MessageTypeDiscover, []byte{0xff}),
			counter: func(s ServerStats) uint64 { return s.Malformed }},
		{name: "a reply arriving at the server", msg: func() *dhcpv4.DHCPv4 {
			m := clientMsg(dhcpv4.MessageTypeOffer, idA)
			m.OpCode = dhcpv4.OpcodeBootReply
			return m
		}(), counter: func(s ServerStats) uint64 { return s.Ignored }},
		{name: "truncated", raw: make([]byte, 100), counter: func(s ServerStats) uint64 { return s.Malformed }},
		{name: "no message type", raw: func() []byte {
			m := clientMsg(dhcpv4.MessageTypeDiscover, idA)
			m.Options.Del(dhcpv4.OptionDHCPMessageType)
			return m.ToBytes()
		}(), counter: func(s ServerStats) uint64 { return s.Malformed }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newTestServer(t)
			b := tc.raw
			if b == nil {
				b = tc.msg.ToBytes()
			}
			before := tc.counter(srv.Stats())
			reply, dst, ok := srv.handle(b, netip.MustParseAddrPort("0.0.0.0:68"))
			if got := tc.counter(srv.Stats()); got != before+1 {
				t.Errorf("counter moved by %d, want 1 (stats %+v)", got-before, srv.Stats())
			}
			if tc.want == dhcpv4.MessageTypeNone {
				if ok {
					t.Fatalf("unexpected reply")
				}
				return
			}
			if !ok {
				t.Fatalf("no reply (stats %+v)", srv.Stats())
			}
			m, err := dhcpv4.FromBytes(reply)
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageType() != tc.want || dst != tc.dst || m.OpCode != dhcpv4.OpcodeBootReply {
				t.Fatalf("reply %v %v to %v, want %v to %v", m.OpCode, m.MessageType(), dst, tc.want, tc.dst)
			}
			if tc.yiaddr != "" && !m.YourIPAddr.Equal(net.ParseIP(tc.yiaddr)) {
				t.Errorf("yiaddr %v, want %s", m.YourIPAddr, tc.yiaddr)
			}
			req, _ := dhcpv4.FromBytes(b)
			if m.TransactionID != req.TransactionID || m.HWType != req.HWType || !bytes.Equal(m.ClientHWAddr, req.ClientHWAddr) || m.Flags != req.Flags {
				t.Errorf("reply does not echo xid/htype/chaddr/flags: %v", m)
			}
			if id := req.Options.Get(dhcpv4.OptionClientIdentifier); !bytes.Equal(m.Options.Get(dhcpv4.OptionClientIdentifier), id) {
				t.Errorf("client identifier not echoed")
			}
			if sid := m.ServerIdentifier(); !sid.Equal(ip4(testServerID)) {
				t.Errorf("server identifier %v", sid)
			}
			if tc.want == dhcpv4.MessageTypeNak {
				return
			}
			if mask := m.SubnetMask(); mask.String() != "ffffff00" || len(m.Router()) != 1 || len(m.DNS()) != 1 {
				t.Errorf("options %v", m.Options)
			}
			_, hasLease := m.Options[dhcpv4.OptionIPAddressLeaseTime.Code()]
			if hasLease == (req.MessageType() == dhcpv4.MessageTypeInform) {
				t.Errorf("lease time present %v in answer to %v", hasLease, req.MessageType())
			}
		})
	}
}

// TestServerPoolExhausted fills a five-address pool.
func TestServerPoolExhausted(t *testing.T) {
	srv, clock := newTestServer(t)
	for i := range 4 {
		id := NewClientID(uint32(i), testGUID(20+i))
		if _, _, ok := srv.handle(clientMsg(dhcpv4.MessageTypeDiscover, id).ToBytes(), netip.AddrPort{}); !ok {
			t.Fatalf("client %d got no offer", i)
		}
	}
	if _, _, ok := srv.handle(clientMsg(dhcpv4.MessageTypeDiscover, idB).ToBytes(), netip.AddrPort{}); ok {
		t.Fatal("offer from an exhausted pool")
	}
	if st := srv.Stats(); st.PoolExhausted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Offers lapse after OfferHold; the pool has room again.
	clock.Advance(DefaultOfferHold)
	if _, _, ok := srv.handle(clientMsg(dhcpv4.MessageTypeDiscover, idB).ToBytes(), netip.AddrPort{}); !ok {
		t.Fatal("no offer after the others lapsed")
	}
}

// TestServerDeclineQuarantine: a declined address stays out of the pool
// for DeclineHold, then comes back.
func TestServerDeclineQuarantine(t *testing.T) {
	srv, clock := newTestServer(t)
	a := "10.7.0.10"
	srv.handle(clientMsg(dhcpv4.MessageTypeDecline, idA, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, a))).ToBytes(), netip.AddrPort{})
	ask := clientMsg(dhcpv4.MessageTypeDiscover, idA, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, a))).ToBytes()
	reply, _, _ := srv.handle(ask, netip.AddrPort{})
	if m, _ := dhcpv4.FromBytes(reply); m.YourIPAddr.Equal(net.ParseIP(a)) {
		t.Fatalf("offered declined %s", a)
	}
	clock.Advance(DefaultDeclineHold)
	// idA now has its own binding, which it would be offered first; a
	// new client asks for the address by name.
	ask = clientMsg(dhcpv4.MessageTypeDiscover, idB, withOpt(ipOpt(dhcpv4.OptRequestedIPAddress, a))).ToBytes()
	reply, _, _ = srv.handle(ask, netip.AddrPort{})
	if m, _ := dhcpv4.FromBytes(reply); !m.YourIPAddr.Equal(net.ParseIP(a)) {
		t.Fatalf("after the quarantine offered %v, want %s", m.YourIPAddr, a)
	}
}

func TestNewServerRejects(t *testing.T) {
	ok := serverConfig(nil, nil)
	tests := []struct {
		name string
		mod  func(c *ServerConfig)
	}{
		{"no subnet", func(c *ServerConfig) { c.Subnet = netip.Prefix{} }},
		{"IPv6 subnet", func(c *ServerConfig) { c.Subnet = netip.MustParsePrefix("fd00::/64") }},
		{"/31", func(c *ServerConfig) { c.Subnet = netip.MustParsePrefix("10.7.0.0/31") }},
		{"server outside", func(c *ServerConfig) { c.ServerID = netip.MustParseAddr("10.8.0.1") }},
		{"router outside", func(c *ServerConfig) { c.Router = netip.MustParseAddr("10.8.0.1") }},
		{"pool reversed", func(c *ServerConfig) {
			c.PoolStart, c.PoolEnd = netip.MustParseAddr("10.7.0.20"), netip.MustParseAddr("10.7.0.10")
		}},
		{"pool outside", func(c *ServerConfig) {
			c.PoolStart, c.PoolEnd = netip.MustParseAddr("10.7.0.20"), netip.MustParseAddr("10.7.1.10")
		}},
		{"lease of 1 s", func(c *ServerConfig) { c.LeaseTime = time.Second }},
		{"IPv6 DNS", func(c *ServerConfig) { c.DNS = []netip.Addr{netip.MustParseAddr("::1")} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			if _, err := NewServer(cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}
