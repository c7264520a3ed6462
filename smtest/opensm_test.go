package smtest

import (
	"strconv"
	"testing"

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
	// of this subnet is OpenSM's default, 1.
	recs, err := s.saquery(host, "MCMember Record dump:", "--smkey", "1", "MCMR")
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
