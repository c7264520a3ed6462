package sim

// The subnet manager. It does in one call what a real SM spreads over many
// SMPs: it discovers the ports it can reach, gives them LIDs, programs the
// switches' unicast and multicast forwarding tables and moves ports to
// ACTIVE. Everything here runs on the fabric loop.

import (
	"errors"
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
)

// ErrSMDown says the operation needs a running subnet manager.
var ErrSMDown = errors.New("sim: subnet manager is down")

// maxHops bounds a packet's walk through switches, so a forwarding loop
// (which the SM never programs, but a test might) cannot hang the fabric.
// IBA directed routes allow 64 hops; no LID-routed path is longer.
const maxHops = 64

// smState is the SM's and SA's view of the subnet.
type smState struct {
	node *node // where the SM runs, chosen at Start
	port *port // the port the SA answers on
	up   bool

	lids  map[ib.LID]*port // unicast LID owners
	byGID map[ib.GID]*port // ports by default GID
	// next[t*n+s] is the port of switch t that leads towards switch s
	// (0 when t == s, noPort when unreachable).
	next []uint8
	nsw  int

	groups  map[ib.GID]*group
	byMLID  map[ib.LID]*group
	mgidSeq uint32

	// wanted caches the LIDs configs ask for; nil after a node is added.
	wanted map[ib.LID]bool
	// gen numbers sweeps, for marking visited nodes and ports.
	gen uint32

	// Scratch reused across sweeps.
	queue   []*node
	managed []*port
}

func (s *smState) init() {
	s.up = true
	s.lids = make(map[ib.LID]*port)
	s.byGID = make(map[ib.GID]*port)
	s.groups = make(map[ib.GID]*group)
	s.byMLID = make(map[ib.LID]*group)
}

// Start runs the SM's first sweep: the SM node is chosen, ports that can
// reach it get LIDs and go from INIT to ACTIVE (raising
// ib.EventPortActive), and the switches are programmed. Later topology
// changes re-sweep by themselves while the SM is up.
func (f *Fabric) Start() error {
	f.assertHome("Start")
	if f.closed.Load() {
		return fmt.Errorf("sim: start %q: %w", f.name, ib.ErrClosed)
	}
	if f.started {
		return nil
	}
	n, err := f.pickSMNode()
	if err != nil {
		return fmt.Errorf("sim: start %q: %w", f.name, err)
	}
	f.sm.node = n
	if n.isSwitch {
		f.sm.port = n.ports[0]
	} else {
		f.sm.port = n.ports[1]
	}
	f.started = true
	f.sweep()
	return nil
}

func (f *Fabric) pickSMNode() (*node, error) {
	if name := f.cfg.SMNode; name != "" {
		n, ok := f.nodes[name]
		if !ok {
			return nil, fmt.Errorf("SM node %q: %w", name, ErrNotFound)
		}
		return n.base(), nil
	}
	if len(f.switches) > 0 {
		return &f.switches[0].node, nil
	}
	if len(f.hosts) > 0 {
		return &f.hosts[0].node, nil
	}
	return nil, fmt.Errorf("no node to run the SM on: %w", ErrNotFound)
}

// SMLID returns the LID SA queries go to (0 before Start). Fabric loop.
func (f *Fabric) SMLID() ib.LID {
	if f.sm.port == nil {
		return 0
	}
	return f.sm.port.lid
}

// SMUp reports whether the subnet manager is running. Fabric loop.
func (f *Fabric) SMUp() bool { return f.sm.up }

// SetSMUp stops or restarts the subnet manager. While it is down the SA
// answers nothing (requests are counted as DropSMDown), no sweeps happen,
// and the switches keep forwarding with the tables they have, so existing
// paths and groups keep working; ports whose link comes up stay in INIT.
//
// A restart behaves like a new SM taking over: unless
// Config.KeepGroupsOnSMRestart is set it has forgotten every multicast
// group (their forwarding entries go too), it sweeps, and it raises
// ib.EventSMChange and ib.EventClientReregister on every ACTIVE host port
// so clients re-join their groups and refresh their paths. LIDs are kept,
// as an SM with a GUID-to-LID cache keeps them.
func (f *Fabric) SetSMUp(up bool) error {
	f.assertHome("SetSMUp")
	if f.closed.Load() {
		return fmt.Errorf("sim: set SM up=%v: %w", up, ib.ErrClosed)
	}
	if up == f.sm.up {
		return nil
	}
	f.sm.up = up
	if !up || !f.started {
		return nil
	}
	if !f.cfg.KeepGroupsOnSMRestart {
		for _, g := range f.sm.groups {
			f.clearTree(g)
		}
		clear(f.sm.groups)
		clear(f.sm.byMLID)
	}
	f.sweep()
	for _, h := range f.hosts {
		for _, p := range h.ports[1:] {
			if p.state == ib.PortActive {
				h.raise(p.num, ib.EventSMChange)
				h.raise(p.num, ib.EventClientReregister)
			}
		}
	}
	return nil
}

// resweep sweeps if the SM is in a position to notice a change.
func (f *Fabric) resweep() {
	if f.started && f.sm.up && !f.closed.Load() {
		f.sweep()
	}
}

// sweep discovers, assigns LIDs, routes, rebuilds multicast trees and
// activates ports.
func (f *Fabric) sweep() {
	managed := f.discover()
	f.assignLIDs(managed)
	f.computeRoutes()
	f.pruneDownMembers()
	for _, g := range f.sm.groups {
		f.buildTree(g)
	}
	smLID := f.sm.port.lid
	for _, p := range managed {
		n := p.node
		n.mu.Lock()
		was, wasSM := p.state, p.smLID
		p.smLID = smLID
		if p.state == ib.PortInit {
			p.state = ib.PortActive
		}
		n.mu.Unlock()
		if n.isSwitch {
			continue
		}
		if was == ib.PortInit {
			f.hostOf(n).raise(p.num, ib.EventPortActive)
		} else if was == ib.PortActive && wasSM != 0 && wasSM != smLID {
			f.hostOf(n).raise(p.num, ib.EventSMChange)
		}
	}
}

// discover returns the ports the SM can reach, SM port first, then in
// breadth-first order from the SM node: switch management ports and host
// ports whose link is up. Hosts do not forward, so the search passes
// through switches (and the SM's own host) only.
func (f *Fabric) discover() []*port {
	f.sm.gen++
	gen := f.sm.gen
	sm := f.sm.node
	managed := f.sm.managed[:0]
	mark := func(p *port) {
		if p.mark != gen {
			p.mark = gen
			managed = append(managed, p)
		}
	}
	mark(f.sm.port)
	sm.mark = gen
	queue := append(f.sm.queue[:0], sm)
	for qi := 0; qi < len(queue); qi++ {
		n := queue[qi]
		if n.isSwitch {
			mark(n.ports[0])
		}
		for _, p := range n.ports {
			if p == nil || p.num == 0 || p.link == nil || !p.link.up {
				continue
			}
			if !n.isSwitch {
				mark(p) // only the SM's own host is ever queued
			}
			q := p.peer()
			if !q.node.isSwitch {
				mark(q)
			} else if q.node.mark != gen {
				q.node.mark = gen
				queue = append(queue, q.node)
			}
		}
	}
	// Switch external ports follow their link; they carry no LID.
	for _, s := range f.switches {
		for _, p := range s.ports[1:] {
			switch {
			case p.link != nil && p.link.up && s.mark == gen:
				p.state = ib.PortActive
			case p.link != nil && p.link.up:
				p.state = ib.PortInit
			default:
				p.state = ib.PortDown
			}
		}
	}
	f.sm.queue, f.sm.managed = queue, managed
	return managed
}

// assignLIDs gives every managed port without a LID one: the LID its
// config asks for when free, else the lowest free unicast LID.
func (f *Fabric) assignLIDs(managed []*port) {
	for _, p := range managed {
		if p.lid == 0 && p.wantLID != 0 && f.sm.lids[p.wantLID] == nil {
			f.setLID(p, p.wantLID)
		}
	}
	next := ib.LID(1)
	for _, p := range managed {
		if p.lid != 0 {
			continue
		}
		for f.sm.lids[next] != nil || f.lidWanted(next) {
			next++
		}
		if next > ib.LIDUnicastMax {
			return // out of LIDs: the port stays without one
		}
		f.setLID(p, next)
	}
}

// lidWanted reports whether some port's config asks for lid, so automatic
// assignment leaves it free.
func (f *Fabric) lidWanted(lid ib.LID) bool {
	if f.sm.wanted == nil {
		f.sm.wanted = make(map[ib.LID]bool)
		for _, h := range f.hosts {
			for _, p := range h.ports[1:] {
				if p.wantLID != 0 {
					f.sm.wanted[p.wantLID] = true
				}
			}
		}
		for _, s := range f.switches {
			if l := s.ports[0].wantLID; l != 0 {
				f.sm.wanted[l] = true
			}
		}
	}
	return f.sm.wanted[lid]
}

func (f *Fabric) setLID(p *port, lid ib.LID) {
	if p.lid != 0 && f.sm.lids[p.lid] == p {
		delete(f.sm.lids, p.lid)
	}
	p.node.mu.Lock()
	p.lid = lid
	p.node.mu.Unlock()
	if lid != 0 {
		f.sm.lids[lid] = p
	}
}

// computeRoutes fills every switch's linear forwarding table with
// shortest-path routes. It runs a breadth-first search over the switch
// graph from each switch, which gives each switch its next hop towards
// every other switch, then points each LID at the switch its port hangs
// off. The cost is O(switches × (switches + links) + LIDs × switches); it
// never looks at pairs of hosts.
func (f *Fabric) computeRoutes() {
	n := len(f.switches)
	for _, s := range f.switches {
		s.adj = s.adj[:0]
		for _, p := range s.ports[1:] {
			if p.link == nil || !p.link.up {
				continue
			}
			if q := p.peer(); q.node.isSwitch {
				s.adj = append(s.adj, swEdge{local: uint8(p.num), remote: uint8(q.num), peer: q.node})
			}
		}
	}
	if cap(f.sm.next) < n*n {
		f.sm.next = make([]uint8, n*n)
	}
	next := f.sm.next[:n*n]
	for i := range next {
		next[i] = noPort
	}
	f.sm.nsw = n
	queue := f.sm.queue[:0]
	for src, s := range f.switches {
		next[src*n+src] = 0
		queue = append(queue[:0], &s.node)
		for qi := 0; qi < len(queue); qi++ {
			u := queue[qi]
			for _, e := range u.adj {
				v := e.peer.swIdx
				if next[v*n+src] == noPort {
					next[v*n+src] = e.remote
					queue = append(queue, e.peer)
				}
			}
		}
	}
	f.sm.queue = queue
	maxLID := ib.LID(0)
	for lid := range f.sm.lids {
		maxLID = max(maxLID, lid)
	}
	for _, s := range f.switches {
		if cap(s.lft) < int(maxLID)+1 {
			s.lft = make([]uint8, int(maxLID)+1)
		}
		s.lft = s.lft[:int(maxLID)+1]
		for i := range s.lft {
			s.lft[i] = noPort
		}
	}
	for lid, p := range f.sm.lids {
		at, out := attachment(p)
		if at == nil {
			continue
		}
		for _, t := range f.switches {
			if &t.node == at {
				t.lft[lid] = out
			} else if hop := next[t.swIdx*n+at.swIdx]; hop != noPort {
				t.lft[lid] = hop
			}
		}
	}
}

// attachment returns the switch a LID-owning port hangs off and the port
// of that switch that leads to it (0 for the switch's own management port),
// or nil when the port is not behind a switch.
func attachment(p *port) (*node, uint8) {
	if p.node.isSwitch {
		return p.node, 0
	}
	q := p.peer()
	if q == nil || !p.link.up || !q.node.isSwitch {
		return nil, 0
	}
	return q.node, uint8(q.num)
}

// hostOf returns the Host that embeds n, or nil for a switch.
func (f *Fabric) hostOf(n *node) *Host { return n.host }

// route follows the forwarding tables from src towards dlid, as a packet
// would, and returns the port it reaches with the smallest MTU and rate on
// the way, or ok false when the packet would be dropped.
func (f *Fabric) route(src *port, dlid ib.LID) (dst *port, mtu ib.MTU, rate ib.Rate, ok bool) {
	at := src
	mtu, rate = src.activeMTU, src.rate
	var sw *node
	if src.node.isSwitch {
		sw = src.node
	}
	for range maxHops {
		if sw != nil {
			if sw.ports[0].lid == dlid {
				return sw.ports[0], mtu, rate, true
			}
			if int(dlid) >= len(sw.lft) || sw.lft[dlid] == noPort || sw.lft[dlid] == 0 {
				return nil, 0, 0, false
			}
			at = sw.ports[sw.lft[dlid]]
		}
		l := at.link
		if l == nil || !l.up {
			return nil, 0, 0, false
		}
		mtu, rate = min(mtu, l.mtu), slower(rate, l.rate)
		q := l.other(at)
		if !q.node.isSwitch {
			if q.lid != dlid {
				return nil, 0, 0, false
			}
			return q, min(mtu, q.activeMTU), slower(rate, q.rate), true
		}
		sw = q.node
	}
	return nil, 0, 0, false
}

// SetLinkUp takes a cable's link down or brings it back. Down: both ends go to
// DOWN, host ports raise ib.EventPortDown, and packets meeting the link are
// dropped (DropLinkDown). Up: the ends go to INIT and, when the SM is up,
// to ACTIVE with ib.EventPortActive after the sweep that follows. The SM
// sweeps after either change (when it is up), which re-routes around the
// link and removes the multicast memberships of ports that went down, as
// an SM does when a port leaves the subnet.
func (f *Fabric) SetLinkUp(l *Cable, up bool) error {
	f.assertHome("SetLinkUp")
	if f.closed.Load() {
		return fmt.Errorf("sim: set link %v up=%v: %w", l, up, ib.ErrClosed)
	}
	if l == nil || l.a.node.f != f {
		return fmt.Errorf("sim: set link up: link not in fabric %q: %w", f.name, ErrNotFound)
	}
	if l.up == up {
		return nil
	}
	f.setLink(l, up)
	return nil
}

func (f *Fabric) setLink(l *Cable, up bool) {
	l.up = up
	for _, p := range [2]*port{l.a, l.b} {
		n := p.node
		n.mu.Lock()
		was := p.state
		if up && was == ib.PortDown {
			p.state = ib.PortInit
		} else if !up {
			p.state = ib.PortDown
		}
		n.mu.Unlock()
		if !up && was == ib.PortActive && !n.isSwitch {
			f.hostOf(n).raise(p.num, ib.EventPortDown)
		}
	}
	f.resweep()
}

// SetLinkUp takes the link of one of the host's ports down or up; see
// Fabric.SetLinkUp. Fabric loop.
func (h *Host) SetLinkUp(num int, up bool) error {
	if num < 1 || num >= len(h.ports) {
		return fmt.Errorf("sim: host %s port %d: %w", h.name, num, ib.ErrNoPort)
	}
	l := h.ports[num].link
	if l == nil {
		return fmt.Errorf("sim: host %s port %d is not cabled: %w", h.name, num, ErrNotFound)
	}
	return h.f.SetLinkUp(l, up)
}

// ReassignLID makes the SM give a host port a new LID: lid, or the lowest
// free one when lid is 0. Routes are recomputed and the port raises
// ib.EventLIDChange; PathRecords answered afterwards carry the new LID, and
// packets still addressed to the old one are dropped. It needs the SM up
// and the port to have a LID. Fabric loop.
func (h *Host) ReassignLID(num int, lid ib.LID) (ib.LID, error) {
	f := h.f
	f.assertHome("ReassignLID")
	if num < 1 || num >= len(h.ports) {
		return 0, fmt.Errorf("sim: reassign LID of %s port %d: %w", h.name, num, ib.ErrNoPort)
	}
	p := h.ports[num]
	switch {
	case f.closed.Load():
		return 0, fmt.Errorf("sim: reassign LID of %v: %w", p, ib.ErrClosed)
	case !f.sm.up:
		return 0, fmt.Errorf("sim: reassign LID of %v: %w", p, ErrSMDown)
	case p.lid == 0:
		return 0, fmt.Errorf("sim: reassign LID of %v: port has no LID yet: %w", p, ErrNotStarted)
	case lid != 0 && !lid.IsUnicast():
		return 0, fmt.Errorf("sim: reassign LID of %v: %v is not unicast: %w", p, lid, ErrBadConfig)
	case lid != 0 && f.sm.lids[lid] != nil && f.sm.lids[lid] != p:
		return 0, fmt.Errorf("sim: reassign LID of %v: %v belongs to %v: %w", p, lid, f.sm.lids[lid], ErrLIDInUse)
	}
	if lid == 0 {
		lid = 1
		for f.sm.lids[lid] != nil || f.lidWanted(lid) {
			lid++
		}
		if lid > ib.LIDUnicastMax {
			return 0, fmt.Errorf("sim: reassign LID of %v: no free unicast LID: %w", p, ErrLIDInUse)
		}
	}
	if lid == p.lid {
		return lid, nil
	}
	f.setLID(p, lid)
	if p == f.sm.port {
		f.sweep() // every port's SM LID changes
	} else {
		f.computeRoutes()
	}
	h.raise(num, ib.EventLIDChange)
	return lid, nil
}

// SetPKeys replaces a host port's P_Key table and raises
// ib.EventPKeyChange. Memberships and QPs are left alone; a QP whose index
// now names another partition simply uses it. Fabric loop.
func (h *Host) SetPKeys(num int, keys []ib.PKey) error {
	h.f.assertHome("SetPKeys")
	if num < 1 || num >= len(h.ports) {
		return fmt.Errorf("sim: set P_Keys of %s port %d: %w", h.name, num, ib.ErrNoPort)
	}
	if len(keys) == 0 {
		return fmt.Errorf("sim: set P_Keys of %s port %d: empty table: %w", h.name, num, ErrBadConfig)
	}
	p := h.ports[num]
	h.mu.Lock()
	p.pkeys = append([]ib.PKey(nil), keys...)
	h.mu.Unlock()
	if p.state == ib.PortActive {
		h.raise(num, ib.EventPKeyChange)
	}
	return nil
}
