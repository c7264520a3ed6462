package smtest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
)

// num reads one of saquery's numbers (hex with 0x, or decimal).
func num(t *testing.T, rec map[string]string, key string) uint64 {
	t.Helper()
	v, ok := rec[key]
	if !ok {
		t.Fatalf("saquery record has no %q: %v", key, rec)
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		t.Fatalf("saquery %s = %q: %v", key, v, err)
	}
	return n
}

// saGroup is OpenSM's record of a group as saquery reports it, for
// comparing with what the control plane got.
type saGroup struct {
	MLID ib.LID
	QKey ib.QKey
	MTU  ib.MTU
	Rate ib.Rate
	SL   ib.SL
	PKey ib.PKey
	// Members are the port GIDs of the full members.
	Members []ib.GID
}

// group reads a group's records with saquery from host: the group
// parameters from its member records (saquery MCMR), which carry the
// Q_Key the group dump (-g) leaves out.
func (s *subnet) group(t *testing.T, host string, mgid ib.GID) (saGroup, bool) {
	t.Helper()
	// OpenSM shows member port GIDs only to a trusted query: the SM_Key
	// of the ibsim subnet is OpenSM's default, 1.
	recs, err := s.saquery(host, "MCMember Record dump:", "--smkey", s.smKey, "MCMR")
	if err != nil {
		t.Fatal(err)
	}
	var g saGroup
	found := false
	for _, r := range recs {
		gid, err := ib.ParseGID(r["mgid"])
		if err != nil || gid != mgid {
			continue
		}
		found = true
		// MTU and rate carry their selector in the top two bits (IBA
		// 15.2.5.17); saquery prints the byte.
		g = saGroup{
			MLID: ib.LID(num(t, r, "mlid")), QKey: ib.QKey(num(t, r, "qkey")),
			MTU: ib.MTU(num(t, r, "mtu") & 0x3f), Rate: ib.Rate(num(t, r, "rate") & 0x3f),
			SL: ib.SL(num(t, r, "sl")), PKey: ib.PKey(num(t, r, "pkey")), Members: g.Members,
		}
		if pg, err := ib.ParseGID(r["portgid"]); err == nil && num(t, r, "joinstate")&uint64(ib.JoinFullMember) != 0 {
			g.Members = append(g.Members, pg)
		}
	}
	return g, found
}

// checkGroup compares the link's broadcast group with OpenSM's.
func checkGroup(t *testing.T, got *ipoib.GroupInfo, want saGroup) {
	t.Helper()
	if !got.Joined {
		t.Fatalf("broadcast group not joined: %+v", got)
	}
	if got.MLID != want.MLID || got.QKey != want.QKey || got.MTU != want.MTU || got.Rate != want.Rate ||
		got.SL != want.SL || got.PKey != want.PKey {
		t.Errorf("joined MLID %v Q_Key %v MTU %v rate %v SL %d P_Key %v; OpenSM (saquery) says MLID %v Q_Key %v MTU %v rate %v SL %d P_Key %v",
			got.MLID, got.QKey, got.MTU, got.Rate, got.SL, got.PKey, want.MLID, want.QKey, want.MTU, want.Rate, want.SL, want.PKey)
	}
}

// isMember reports whether gid is among g's full members.
func isMember(g saGroup, gid ib.GID) bool {
	for _, m := range g.Members {
		if m == gid {
			return true
		}
	}
	return false
}

// started is a subnet with a master OpenSM on Hca1 and the control plane
// under test on Hca2.
func started(t *testing.T, partitions string) (*subnet, *child, ib.PortAttr) {
	s := newSubnet(t, partitions)
	s.startSM("Hca1", 1)
	s.waitMaster("Hca1")
	ch := s.startChild("Hca2")
	a := ch.do("attr").Attr
	return s, ch, *a
}

// TestBroadcastJoinMatchesOpenSM brings an IPoIB link up on the default
// partition: the broadcast group it joins is the one OpenSM created, with
// OpenSM's parameters, and OpenSM lists the port as a member.
func TestBroadcastJoinMatchesOpenSM(t *testing.T) {
	s, ch, attr := started(t, "")
	g := ch.do("up 0xffff").Group
	want, ok := s.group(t, "Hca4", ipoib.BroadcastGID(ib.PKeyDefault))
	if !ok {
		t.Fatal("saquery shows no broadcast group")
	}
	t.Logf("joined %v: MLID %v Q_Key %v MTU %v rate %v SL %d", g.MGID, g.MLID, g.QKey, g.MTU, g.Rate, g.SL)
	checkGroup(t, g, want)
	if !isMember(want, attr.GIDs[0]) {
		t.Errorf("OpenSM does not list port %v as a full member of the broadcast group: members %v", attr.GIDs[0], want.Members)
	}
}

// TestPathRecordsMatchSaquery asks OpenSM, through the control plane's
// SA client and the query ipoib sends for a peer, for the path to every
// other HCA, and compares each with the one saquery gets.
func TestPathRecordsMatchSaquery(t *testing.T) {
	s, ch, attr := started(t, "")
	self := attr.GIDs[0]
	ch.do("up 0xffff")
	checked := 0
	for _, host := range []string{"Hca1", "Hca3", "Hca4"} {
		dgid := s.portGID(t, host)
		paths, err := s.saquery("Hca2", "PathRecord dump:", "-p", "--sgid-to-dgid", self.String()+"-"+dgid.String())
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 1 {
			t.Fatalf("saquery -p %v -> %v: %d records, want 1", self, dgid, len(paths))
		}
		want := paths[0]
		// ipoib's own resolution, from a packet to the peer.
		peer := ch.do(fmt.Sprintf("resolve %v 0", dgid)).Peers[0]
		if peer.LID != ib.LID(num(t, want, "dlid")) || peer.SL != ib.SL(num(t, want, "sl")) ||
			peer.MTU != ib.MTU(num(t, want, "mtu")&0x3f).Bytes() || peer.Rate != ib.Rate(num(t, want, "rate")&0x3f) {
			t.Errorf("ipoib's path to %v: LID %v SL %d MTU %d rate %v; saquery says %v", dgid, peer.LID, peer.SL, peer.MTU, peer.Rate, want)
		}
		got := ch.do("path " + dgid.String()).Path
		t.Logf("%s (%v): DLID %v SLID %v SL %d MTU %v rate %v life %d", host, dgid, got.DLID, got.SLID, got.SL, got.MTU, got.Rate, got.PacketLifeTime)
		// saquery prints MTU, rate and packet lifetime with their
		// selectors in the top two bits, and Reversible in the top bit of
		// num_path_revers.
		if got.DLID != ib.LID(num(t, want, "dlid")) || got.SLID != ib.LID(num(t, want, "slid")) ||
			got.SL != ib.SL(num(t, want, "sl")) || got.MTU != ib.MTU(num(t, want, "mtu")&0x3f) ||
			got.Rate != ib.Rate(num(t, want, "rate")&0x3f) || got.PKey != ib.PKey(num(t, want, "pkey")) ||
			got.PacketLifeTime != uint8(num(t, want, "pkt_life")&0x3f) || got.TClass != uint8(num(t, want, "tclass")) ||
			got.Reversible != (num(t, want, "num_path_revers")&0x80 != 0) {
			t.Errorf("path to %v: got %+v; saquery says %v", dgid, got, want)
		}
		checked++
	}
	if checked != 3 {
		t.Errorf("checked the paths to %d HCAs, want the 3 others", checked)
	}
}

// TestMulticastCreateLeave joins an IPv4 multicast group nobody has
// created (the join carries the create components), finds it in
// saquery, leaves it (MCMemberRecord Delete) and finds it gone.
func TestMulticastCreateLeave(t *testing.T) {
	s, ch, attr := started(t, "")
	bcast := ch.do("up 0xffff").Group
	group := netip.MustParseAddr("239.1.2.3")
	mgid, err := ipoib.IPv4MulticastGID(ib.PKeyDefault, group)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.group(t, "Hca4", mgid); ok {
		t.Fatalf("group %v exists before the join", mgid)
	}
	ch.do("join " + group.String())
	g, ok := s.group(t, "Hca4", mgid)
	if !ok {
		t.Fatalf("saquery does not show group %v after the join", mgid)
	}
	t.Logf("created %v: MLID %v Q_Key %v MTU %v rate %v", mgid, g.MLID, g.QKey, g.MTU, g.Rate)
	if !isMember(g, attr.GIDs[0]) {
		t.Errorf("OpenSM does not list port %v as a member of %v: %v", attr.GIDs[0], mgid, g.Members)
	}
	// An IPoIB group takes the broadcast group's Q_Key, MTU and rate
	// (RFC 4391 section 4; OpenSM checks IP groups against it).
	if g.QKey != bcast.QKey || g.MTU != bcast.MTU || g.Rate != bcast.Rate || g.MLID == bcast.MLID || !g.MLID.IsMulticast() {
		t.Errorf("group %v: MLID %v Q_Key %v MTU %v rate %v; broadcast group MLID %v Q_Key %v MTU %v rate %v",
			mgid, g.MLID, g.QKey, g.MTU, g.Rate, bcast.MLID, bcast.QKey, bcast.MTU, bcast.Rate)
	}
	ch.do("leave " + group.String())
	s.waitFor("OpenSM to delete "+mgid.String(), 10*time.Second, func() bool {
		_, ok := s.group(t, "Hca4", mgid)
		return !ok
	})
	if _, ok := s.group(t, "Hca4", ipoib.BroadcastGID(ib.PKeyDefault)); !ok {
		t.Error("the broadcast group went with the multicast group")
	}
}

// TestLeaveWithJoinInFlight leaves each of many new IPv4 groups in the
// same turn of the loop that joined it, so that every MCMemberRecord
// Delete leaves while its Join is still on its way. OpenSM must end with
// none of the groups: had it taken a Delete before its Join, it would
// keep the port as a member of a group nobody leaves again.
func TestLeaveWithJoinInFlight(t *testing.T) {
	s, ch, _ := started(t, "")
	ch.do("up 0xffff")
	const n = 32
	cmd := "joinleave"
	mgids := map[ib.GID]netip.Addr{}
	for i := range n {
		ip := netip.AddrFrom4([4]byte{239, 1, 4, byte(i)})
		mgid, err := ipoib.IPv4MulticastGID(ib.PKeyDefault, ip)
		if err != nil {
			t.Fatal(err)
		}
		mgids[mgid] = ip
		cmd += " " + ip.String()
	}
	ch.do(cmd)
	// left lists the groups OpenSM still has.
	left := func() []netip.Addr {
		recs, err := s.saquery("Hca4", "MCMember Record dump:", "--smkey", s.smKey, "MCMR")
		if err != nil {
			t.Fatal(err)
		}
		var ips []netip.Addr
		for _, r := range recs {
			if gid, err := ib.ParseGID(r["mgid"]); err == nil {
				if ip, ok := mgids[gid]; ok {
					ips = append(ips, ip)
				}
			}
		}
		return ips
	}
	s.waitFor("OpenSM to hold none of the groups joined and left", 10*time.Second, func() bool { return len(left()) == 0 })
	// The answers to all 64 requests come within milliseconds; a Join
	// OpenSM took after its Delete would show here.
	time.Sleep(time.Second)
	if ips := left(); len(ips) > 0 {
		t.Errorf("OpenSM still has %d of the %d groups left with their joins in flight: %v", len(ips), n, ips)
	}
}

// partitions defines, besides the default partition, P_Key 0x8001 with
// an IPoIB broadcast group of its own parameters for every HCA, and
// P_Key 0x8002 for OpenSM's own port only.
const partitions = `Default=0x7fff, ipoib : ALL=full ;
Lab=0x0001, ipoib, mtu=3, rate=2, sl=1, Q_Key=0x00001234 : ALL_CAS=full ;
Private=0x0002, ipoib : SELF=full ;
`

// TestPartitionJoin brings the link up on P_Key 0x8001: it gets the
// broadcast group partitions.conf defines, as saquery shows it. A join
// for partition 0x8002, which the port is not in, is refused by OpenSM
// and the SA's status is reported in one line.
func TestPartitionJoin(t *testing.T) {
	s, ch, attr := started(t, partitions)
	if _, err := attr.PKeyIndex(0x8001); err != nil {
		t.Fatalf("OpenSM did not put P_Key 0x8001 in the port's table: %v", attr.PKeys)
	}
	g := ch.do("up 0x8001").Group
	mgid := ipoib.BroadcastGID(0x8001)
	want, ok := s.group(t, "Hca4", mgid)
	if !ok {
		t.Fatalf("saquery shows no group %v", mgid)
	}
	t.Logf("joined %v: MLID %v Q_Key %v MTU %v rate %v SL %d P_Key %v", g.MGID, g.MLID, g.QKey, g.MTU, g.Rate, g.SL, g.PKey)
	checkGroup(t, g, want)
	// partitions.conf's sl=1 is not checked: OpenSM 3.3.23 makes the
	// group with SL 0 all the same (saquery shows it; docs/protocol.md).
	if g.MGID != mgid || g.QKey != 0x1234 || g.MTU != ib.MTU1024 || g.Rate != ib.Rate2_5Gbps {
		t.Errorf("group %v Q_Key %v MTU %v rate %v; partitions.conf says %v Q_Key 0x1234 MTU 1024 rate 2.5 Gb/s",
			g.MGID, g.QKey, g.MTU, g.Rate, mgid)
	}
	if !isMember(want, attr.GIDs[0]) {
		t.Errorf("OpenSM does not list port %v in %v: %v", attr.GIDs[0], mgid, want.Members)
	}

	// The port is not in partition 0x8002: the SA refuses the join
	// (OpenSM logs "Port is not in partition of this MC group").
	r := ch.try("sajoin 0x8002")
	t.Logf("join for 0x8002: %s", r.Err)
	if r.Err == "" || strings.Contains(r.Err, "\n") || !strings.Contains(r.Err, "SA status ERR_REQ_INVALID") {
		t.Errorf("join for a partition the port is not in: error %q, want one line with the SA's status", r.Err)
	}
}

// portState reads host's port as its subnet management agent reports it:
// LID, SM LID and state (PortInfo, through smpquery).
func (s *subnet) portState(t *testing.T, host string) (lid, sm uint64, state ib.PortState) {
	t.Helper()
	p, err := s.portInfo(host)
	if err != nil {
		t.Fatal(err)
	}
	lid, _ = strconv.ParseUint(p["Lid"], 0, 16)
	sm, _ = strconv.ParseUint(p["SMLid"], 0, 16)
	// smpquery names PortInfo.PortState (IBA 14.2.5.6).
	for i, name := range []string{"NoChange", "Down", "Initialize", "Armed", "Active"} {
		if p["LinkState"] == name {
			state = ib.PortState(i)
		}
	}
	return lid, sm, state
}

// portEvent tells the child that its port changed the way smpquery sees
// it now, with the event the kernel raises for that change.
func (s *subnet) portEvent(t *testing.T, ch *child, host string, ev ib.EventType) {
	t.Helper()
	lid, sm, state := s.portState(t, host)
	t.Logf("port event %v: LID %d SM LID %d state %v", ev, lid, sm, state)
	ch.do(fmt.Sprintf("port %v %d %d %d", ev, lid, sm, uint8(state)))
}

// TestLinkDownUpRejoins takes the HCA's link down and up through ibsim's
// console. The port-down event runs the normal flush: the broadcast group
// is left and the paths forgotten. Once OpenSM has brought the port back,
// the port-active event rejoins the group, OpenSM lists the port as a
// member again, and a packet to a peer asks OpenSM for its path anew.
func TestLinkDownUpRejoins(t *testing.T) {
	s, ch, attr := started(t, "")
	first := ch.do("up 0xffff").Group
	mgid := ipoib.BroadcastGID(ib.PKeyDefault)
	if g, _ := s.group(t, "Hca4", mgid); !isMember(g, attr.GIDs[0]) {
		t.Fatalf("OpenSM does not list port %v after the join: %v", attr.GIDs[0], g.Members)
	}
	dgid := s.portGID(t, "Hca4")
	peer := ch.do(fmt.Sprintf("resolve %v 0", dgid)).Peers[0]

	s.consoleCmd(`Unlink "Hca2"[1]`)
	s.waitFor("Hca2's port to go down", 10*time.Second, func() bool {
		_, _, st := s.portState(t, "Hca2")
		return st == ib.PortDown
	})
	s.portEvent(t, ch, "Hca2", ib.EventPortDown)
	if g := ch.do("group").Group; g.Joined {
		t.Errorf("broadcast group still joined after port-down: %+v", g)
	}
	for _, p := range ch.do("peers").Peers {
		if p.Addr == peer.Addr && (p.State == "resolved" || p.State == "stale") {
			t.Errorf("the path to %v survived the port-down flush: %+v", dgid, p)
		}
	}
	// OpenSM forgets the memberships of a port that left the subnet.
	s.waitFor("OpenSM to drop the port from the broadcast group", 20*time.Second, func() bool {
		g, _ := s.group(t, "Hca4", mgid)
		return !isMember(g, attr.GIDs[0])
	})

	s.consoleCmd(`ReLink "Hca2"[1]`)
	s.waitFor("OpenSM to bring Hca2's port back", 30*time.Second, func() bool {
		_, _, st := s.portState(t, "Hca2")
		return st == ib.PortActive
	})
	active := time.Now()
	s.portEvent(t, ch, "Hca2", ib.EventPortActive)
	g := ch.do(fmt.Sprintf("wait-rejoin %d", first.JoinedAt.UnixNano())).Group
	want, ok := s.group(t, "Hca4", mgid)
	if !ok {
		t.Fatal("saquery shows no broadcast group")
	}
	checkGroup(t, g, want)
	if !isMember(want, attr.GIDs[0]) {
		t.Errorf("after the rejoin OpenSM does not list port %v: %v", attr.GIDs[0], want.Members)
	}
	again := ch.do(fmt.Sprintf("resolve %v %d", dgid, active.UnixNano())).Peers[0]
	if again.LID != peer.LID || again.SL != peer.SL || again.MTU != peer.MTU {
		t.Errorf("path to %v after the link came back: LID %v SL %d MTU %d; before LID %v SL %d MTU %d",
			dgid, again.LID, again.SL, again.MTU, peer.LID, peer.SL, peer.MTU)
	}
}

// TestSMFailover runs a master and a standby OpenSM. The master is
// killed; the standby takes over, and the control plane, told of the SM
// change and the client reregistration the new master asks for, rejoins
// the broadcast group at the new SM and resolves its paths again there,
// with no restart.
func TestSMFailover(t *testing.T) {
	s := newSubnet(t, "")
	s.startSM("Hca1", 10)
	s.waitMaster("Hca1")
	s.startSM("Hca3", 5)
	oldLID, _, _ := s.portState(t, "Hca1")
	standbyLID, _, _ := s.portState(t, "Hca3")
	// SMInfo state 2 is STANDBY (IBA 14.2.5.13).
	s.waitFor("the OpenSM on Hca3 to stand by", 30*time.Second, func() bool {
		out, err := s.run("Hca2", s.tl.sminfo, strconv.FormatUint(standbyLID, 10))
		return err == nil && strings.Contains(out, "state 2")
	})
	ch := s.startChild("Hca2")
	attr := *ch.do("attr").Attr
	if uint64(attr.SMLID) != oldLID {
		t.Fatalf("port's SM LID %v, want the master's %d", attr.SMLID, oldLID)
	}
	first := ch.do("up 0xffff").Group
	dgid := s.portGID(t, "Hca4")
	before := ch.do("path " + dgid.String()).Path
	oldPeer := ch.do(fmt.Sprintf("resolve %v 0", dgid)).Peers[0]

	s.killSM("Hca1")
	s.waitFor("the standby to take over", 60*time.Second, func() bool {
		_, sm, st := s.portState(t, "Hca2")
		return sm == standbyLID && st == ib.PortActive
	})
	s.waitMaster("Hca3")
	changed := s.rejoin(t, ch, attr.GIDs[0], first.JoinedAt, "the new master", ib.EventSMChange)
	// ipoib's path to the peer is asked again, of the new master.
	newPeer := ch.do(fmt.Sprintf("resolve %v %d", dgid, changed.UnixNano())).Peers[0]
	if newPeer.LID != oldPeer.LID || newPeer.SL != oldPeer.SL {
		t.Errorf("ipoib's path to %v after the failover: LID %v SL %d; before %v %d", dgid, newPeer.LID, newPeer.SL, oldPeer.LID, oldPeer.SL)
	}
	after := ch.do("path " + dgid.String()).Path
	if after.DLID != before.DLID || after.SLID != before.SLID {
		t.Errorf("path to %v from the new master: DLID %v SLID %v; before %v %v", dgid, after.DLID, after.SLID, before.DLID, before.SLID)
	}
	if st := ch.do("sastats").SA; st == nil {
		t.Error("no SA client counters")
	} else {
		t.Logf("SA client: %+v", *st)
	}
}

// TestRealFabricSM runs the broadcast-join, multicast and path checks
// against the SM of a real fabric, with the kernel's umad devices in
// place of ibsim, when IPOIBD_SMTEST_CA names an HCA of this host (and
// optionally IPOIBD_SMTEST_PORT, IPOIBD_SMTEST_PKEY, IPOIBD_SMTEST_SMKEY
// and IPOIBD_SMTEST_PEERS, a comma-separated list of GIDs to resolve
// paths to). It needs root (umad devices) and leaves nothing behind: the
// multicast group it creates is left again, and the broadcast membership
// ends with the process. See docs/hardware.md.
func TestRealFabricSM(t *testing.T) {
	s := realSubnet(t)
	ch := s.startChild("")
	attr := *ch.do("attr").Attr
	pkey := ib.PKeyDefault
	if v := os.Getenv(realPKeyEnv); v != "" {
		p, err := parsePKey(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", realPKeyEnv, v, err)
		}
		pkey = p
	}
	t.Logf("%s port %s: LID %v, SM LID %v, GID %v", s.realCA, s.realPort, attr.LID, attr.SMLID, attr.GIDs[0])
	g := ch.do(fmt.Sprintf("up %#x", uint16(pkey))).Group
	want, ok := s.group(t, "", ipoib.BroadcastGID(pkey))
	if !ok {
		t.Fatalf("saquery shows no group %v", ipoib.BroadcastGID(pkey))
	}
	checkGroup(t, g, want)
	if !isMember(want, attr.GIDs[0]) {
		t.Logf("saquery (SM_Key %s) does not list our port among the members; set %s to the SM's SM_Key to check membership", s.smKey, realSMKeyEnv)
	}

	group := netip.AddrFrom4([4]byte{239, 255, byte(os.Getpid() >> 8), byte(os.Getpid())})
	mgid, err := ipoib.IPv4MulticastGID(pkey, group)
	if err != nil {
		t.Fatal(err)
	}
	ch.do("join " + group.String())
	if _, ok := s.group(t, "", mgid); !ok {
		t.Errorf("saquery does not show %v after the join", mgid)
	}
	ch.do("leave " + group.String())
	s.waitFor("the SM to delete "+mgid.String(), 10*time.Second, func() bool {
		_, ok := s.group(t, "", mgid)
		return !ok
	})

	for _, peer := range strings.Split(os.Getenv(realPeersEnv), ",") {
		if peer == "" {
			continue
		}
		dgid, err := ib.ParseGID(strings.TrimSpace(peer))
		if err != nil {
			t.Fatalf("%s: %v", realPeersEnv, err)
		}
		got := ch.do("path " + dgid.String()).Path
		paths, err := s.saquery("", "PathRecord dump:", "-p", "--sgid-to-dgid", attr.GIDs[0].String()+"-"+dgid.String())
		if err != nil || len(paths) != 1 {
			t.Fatalf("saquery path to %v: %d records, %v", dgid, len(paths), err)
		}
		w := paths[0]
		// ipoib's own resolution, from a packet to the p.
		p := ch.do(fmt.Sprintf("resolve %v 0", dgid)).Peers[0]
		if p.LID != ib.LID(num(t, w, "dlid")) || p.SL != ib.SL(num(t, w, "sl")) ||
			p.MTU != ib.MTU(num(t, w, "mtu")&0x3f).Bytes() || p.Rate != ib.Rate(num(t, w, "rate")&0x3f) {
			t.Errorf("ipoib's path to %v: LID %v SL %d MTU %d rate %v; saquery says %v", dgid, p.LID, p.SL, p.MTU, p.Rate, w)
		}
		if got.DLID != ib.LID(num(t, w, "dlid")) || got.SL != ib.SL(num(t, w, "sl")) ||
			got.MTU != ib.MTU(num(t, w, "mtu")&0x3f) || got.Rate != ib.Rate(num(t, w, "rate")&0x3f) {
			t.Errorf("path to %v: got %+v; saquery says %v", dgid, got, w)
		}
	}
}

// TestLIDChange restarts OpenSM with a GUID-to-LID file that gives the
// port another LID. Told of the LID change and of the reregistration a
// new SM asks for, the control plane rejoins the broadcast group and its
// paths start from the new LID.
func TestLIDChange(t *testing.T) {
	s, ch, attr := started(t, "")
	first := ch.do("up 0xffff").Group
	dgid := s.portGID(t, "Hca4")
	ch.do(fmt.Sprintf("resolve %v 0", dgid))

	// OpenSM keeps the LIDs it gave in its cache's guid2lid file, one
	// "GUID first-LID last-LID" line per port; honoured on start, it
	// decides the port's LID.
	const newLID = 0x20
	s.killSM("Hca1")
	g2l := filepath.Join(s.dir, "cache-Hca1", "guid2lid")
	b, err := os.ReadFile(g2l)
	if err != nil {
		t.Fatalf("OpenSM's LID cache: %v", err)
	}
	guid := attr.GUID()
	var lines []string
	found := false
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 {
			if g, err := strconv.ParseUint(f[0], 0, 64); err == nil && ib.GUID(g) == guid {
				l = fmt.Sprintf("%s %#x %#x", f[0], newLID, newLID)
				found = true
			}
		}
		lines = append(lines, l)
	}
	if !found {
		t.Fatalf("guid2lid has no line for %v:\n%s", guid, b)
	}
	if err := os.WriteFile(g2l, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startSM("Hca1", 1, "honor_guid2lid_file TRUE")
	s.waitFor("OpenSM to give Hca2 its new LID", 60*time.Second, func() bool {
		lid, _, st := s.portState(t, "Hca2")
		return lid == newLID && st == ib.PortActive
	})
	s.waitMaster("Hca1")
	// The restarted SM knows no memberships: the port must rejoin.
	changed := s.rejoin(t, ch, attr.GIDs[0], first.JoinedAt, "the restarted OpenSM", ib.EventLIDChange)
	if p := ch.do("path " + dgid.String()).Path; p.SLID != newLID {
		t.Errorf("path to %v after the LID change: SLID %v, want %#x", dgid, p.SLID, newLID)
	}
	ch.do(fmt.Sprintf("resolve %v %d", dgid, changed.UnixNano()))
}

// rejoin checks that the SM, new or restarted (who), knows nothing of the
// port's membership, raises ev and a client reregister on Hca2, as the
// kernel would, waits for the link to rejoin (after joinedAt) and checks
// the group the link holds against saquery's, with the port a member
// again. It returns when the events were raised.
func (s *subnet) rejoin(t *testing.T, ch *child, port ib.GID, joinedAt time.Time, who string, ev ib.EventType) time.Time {
	t.Helper()
	bcast := ipoib.BroadcastGID(ib.PKeyDefault)
	if g, _ := s.group(t, "Hca4", bcast); isMember(g, port) {
		t.Errorf("%s lists port %v before it rejoined", who, port)
	}
	changed := time.Now()
	s.portEvent(t, ch, "Hca2", ev)
	s.portEvent(t, ch, "Hca2", ib.EventClientReregister)
	g := ch.do(fmt.Sprintf("wait-rejoin %d", joinedAt.UnixNano())).Group
	want, ok := s.group(t, "Hca4", bcast)
	if !ok {
		t.Fatalf("%s shows no broadcast group", who)
	}
	checkGroup(t, g, want)
	if !isMember(want, port) {
		t.Errorf("%s does not list port %v in the broadcast group: %v", who, port, want.Members)
	}
	return changed
}
