package sim

// Multicast groups as the SM keeps them, and the spanning trees it
// programs into the switches' multicast forwarding tables. Fabric loop
// only.

import (
	"encoding/binary"
	"sort"

	"github.com/ipoibd/ipoibd/ib"
)

// mgidSignatureSA is the signature in bytes 2-3 of MGIDs the SA allocates
// for a join with a zero MGID; OpenSM allocates from the same 0xA01B space,
// which keeps them apart from IPoIB's 0x401B and 0x601B groups.
const mgidSignatureSA = 0xA01B

// fullMember is the set of join states that keep a group alive.
const fullMember = ib.JoinFullMember | ib.JoinSendOnlyFullMember

// group is a multicast group: its parameters, fixed at creation, and its
// members.
type group struct {
	mgid      ib.GID
	mlid      ib.LID
	qkey      ib.QKey
	pkey      ib.PKey
	mtu       ib.MTU
	rate      ib.Rate
	sl        ib.SL
	flowLabel uint32
	tclass    uint8
	hopLimit  uint8
	scope     uint8
	plt       uint8
	// bySM marks an IPoIB broadcast group the SM made at start
	// (Config.IPoIBPartitions): it outlives its members.
	bySM bool

	members  []member
	switches []*node // switches with a forwarding entry for mlid
}

// member is one port's membership.
type member struct {
	port  *port
	state ib.JoinState
	proxy bool
}

func (g *group) member(p *port) int {
	for i := range g.members {
		if g.members[i].port == p {
			return i
		}
	}
	return -1
}

func (g *group) hasFullMember() bool {
	for _, m := range g.members {
		if m.state&fullMember != 0 {
			return true
		}
	}
	return false
}

// record fills an MCMemberRecord with the group's parameters, the form
// the SA answers with (selectors say "exactly").
func (g *group) record(r *ib.MCMemberRecord) {
	r.MGID = g.mgid
	r.QKey = g.qkey
	r.MLID = g.mlid
	r.MTUSelector, r.MTU = ib.SelectorExactly, g.mtu
	r.TClass = g.tclass
	r.PKey = g.pkey
	r.RateSelector, r.Rate = ib.SelectorExactly, g.rate
	r.PacketLifeTimeSelector, r.PacketLifeTime = ib.SelectorExactly, g.plt
	r.SL = g.sl
	r.FlowLabel = g.flowLabel
	r.HopLimit = g.hopLimit
	r.Scope = g.scope
}

// allocMLID returns the lowest free multicast LID, or 0 when all are
// taken.
func (f *Fabric) allocMLID() ib.LID {
	for l := ib.LIDMulticastMin; l <= ib.LIDMulticastMax; l++ {
		if f.sm.byMLID[l] == nil {
			return l
		}
	}
	return 0
}

// allocMGID makes an MGID for a join that left it to the SA.
func (f *Fabric) allocMGID(scope uint8, pkey ib.PKey) ib.GID {
	for {
		f.sm.mgidSeq++
		var g ib.GID
		g[0] = 0xff
		g[1] = 0x10 | scope // T flag: a transient group (IBA 4.1.1)
		binary.BigEndian.PutUint16(g[2:], mgidSignatureSA)
		binary.BigEndian.PutUint16(g[4:], uint16(pkey|ib.PKeyFullMember))
		binary.BigEndian.PutUint32(g[12:], f.sm.mgidSeq)
		if f.sm.groups[g] == nil {
			return g
		}
	}
}

// deleteGroup forgets a group and its forwarding entries.
func (f *Fabric) deleteGroup(g *group) {
	f.clearTree(g)
	if g.bySM {
		return // OpenSM keeps its partitions' broadcast groups
	}
	delete(f.sm.groups, g.mgid)
	delete(f.sm.byMLID, g.mlid)
}

// pruneDownMembers removes the memberships of ports that went DOWN, and
// the groups left without a full member, as an SM does when a port drops
// out of the subnet.
func (f *Fabric) pruneDownMembers() {
	for _, g := range f.sm.groups {
		kept := g.members[:0]
		for _, m := range g.members {
			if m.port.state != ib.PortDown {
				kept = append(kept, m)
			}
		}
		clear(g.members[len(kept):])
		g.members = kept
		if !g.hasFullMember() {
			f.deleteGroup(g)
		}
	}
}

func (f *Fabric) clearTree(g *group) {
	for _, s := range g.switches {
		delete(s.mft, g.mlid)
	}
	g.switches = g.switches[:0]
}

// buildTree programs the group's multicast tree. The root is the switch of
// the first member; every other member's switch is joined to the tree
// along its unicast next hops towards the root, stopping where it meets
// the tree. The result is a tree (no switch forwards back to where a packet
// came from), and the cost is O(members × depth).
func (f *Fabric) buildTree(g *group) {
	f.clearTree(g)
	n, next := f.sm.nsw, f.sm.next
	f.sm.gen++
	gen := f.sm.gen
	var root *node
	for _, m := range g.members {
		at, pn := attachment(m.port)
		if at == nil || m.port.node.isSwitch {
			continue
		}
		f.mftAdd(g, at, pn)
		if root == nil {
			root = at
			root.mark = gen
		}
		for t := at; t.mark != gen; {
			t.mark = gen
			hop := next[t.swIdx*n+root.swIdx]
			if hop == noPort || hop == 0 {
				break
			}
			f.mftAdd(g, t, hop)
			u := t.ports[hop].peer()
			f.mftAdd(g, u.node, uint8(u.num))
			t = u.node
		}
	}
}

// mftAdd adds port pn of switch s to the group's tree.
func (f *Fabric) mftAdd(g *group, s *node, pn uint8) {
	ports, ok := s.mft[g.mlid]
	if !ok {
		g.switches = append(g.switches, s)
	}
	for _, p := range ports {
		if p == pn {
			return
		}
	}
	s.mft[g.mlid] = append(ports, pn)
}

// GroupInfo describes a multicast group as the SM holds it.
type GroupInfo struct {
	MGID      ib.GID
	MLID      ib.LID
	QKey      ib.QKey
	PKey      ib.PKey
	MTU       ib.MTU
	Rate      ib.Rate
	SL        ib.SL
	FlowLabel uint32
	TClass    uint8
	// Members lists the member ports by GID with their join states, in
	// join order.
	Members []MemberInfo
}

// MemberInfo is one member of a group.
type MemberInfo struct {
	PortGID   ib.GID
	JoinState ib.JoinState
}

// Groups returns the SM's multicast groups sorted by MLID. Fabric loop.
func (f *Fabric) Groups() []GroupInfo {
	out := make([]GroupInfo, 0, len(f.sm.groups))
	for _, g := range f.sm.groups {
		gi := GroupInfo{
			MGID: g.mgid, MLID: g.mlid, QKey: g.qkey, PKey: g.pkey, MTU: g.mtu,
			Rate: g.rate, SL: g.sl, FlowLabel: g.flowLabel, TClass: g.tclass,
		}
		for _, m := range g.members {
			gi.Members = append(gi.Members, MemberInfo{PortGID: m.port.gids[0], JoinState: m.state})
		}
		out = append(out, gi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MLID < out[j].MLID })
	return out
}

// IPoIB broadcast-group MGID layout (RFC 4391 section 4): ff1<scope>,
// the IPv4 signature 0x401B, the full-member P_Key, then ffff:ffff in
// the last four bytes.
const ipoibSignature = 0x401B

// makeIPoIBGroups creates the broadcast groups of Config.IPoIBPartitions
// that do not exist yet, with the Group defaults, as OpenSM does when it
// starts.
func (f *Fabric) makeIPoIBGroups() {
	for _, k := range f.cfg.IPoIBPartitions {
		pkey := k | ib.PKeyFullMember
		var mgid ib.GID
		mgid[0], mgid[1] = 0xFF, 0x10|ib.MGIDScopeLinkLocal
		mgid[2], mgid[3] = ipoibSignature>>8, ipoibSignature&0xFF
		mgid[4], mgid[5] = byte(pkey>>8), byte(pkey)
		mgid[12], mgid[13], mgid[14], mgid[15] = 0xFF, 0xFF, 0xFF, 0xFF
		if f.sm.groups[mgid] != nil {
			continue
		}
		g := &group{
			mgid: mgid, qkey: f.cfg.Group.QKey, pkey: pkey, mtu: f.cfg.Group.MTU, rate: f.cfg.Group.Rate,
			sl: f.cfg.Group.SL, scope: ib.MGIDScopeLinkLocal, plt: f.cfg.PacketLifeTime, bySM: true,
		}
		if g.mlid = f.allocMLID(); g.mlid == 0 {
			return
		}
		f.sm.groups[mgid] = g
		f.sm.byMLID[g.mlid] = g
	}
}
