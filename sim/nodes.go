package sim

import (
	"fmt"
	"sync"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// Node is a host or a switch: something with ports that Connect joins.
type Node interface {
	// Name is the node's name within the fabric.
	Name() string
	base() *node
}

// node is what hosts and switches share.
type node struct {
	f        *Fabric
	name     string
	guid     ib.GUID
	isSwitch bool
	// ports is indexed by port number. Hosts leave index 0 nil; switches
	// keep their management port there.
	ports []*port
	// mu guards the fields that device loops read: the attributes of the
	// node's ports and, for hosts, the QP table and devices. The fabric
	// loop writes them holding mu and reads them without it.
	mu sync.RWMutex
	// seq is the node's creation index, used to derive GUIDs.
	seq int
	// mark is the SM's visited flag, compared with smState.gen.
	mark uint32
	// host is the Host embedding the node, nil for switches.
	host *Host

	// Switch-only forwarding state, touched on the fabric loop only.
	swIdx int
	lft   []uint8            // out port by DLID; noPort when unknown
	mft   map[ib.LID][]uint8 // out ports by MLID
	adj   []swEdge           // links to other switches, rebuilt per sweep
}

// noPort marks an LFT entry with no route.
const noPort = 0xFF

// swEdge is a link from one switch to another.
type swEdge struct {
	local, remote uint8
	peer          *node
}

// Name returns the node name.
func (n *node) Name() string { return n.name }

func (n *node) base() *node { return n }

// GUID returns the node GUID.
func (n *node) GUID() ib.GUID { return n.guid }

// port is one port of a node.
type port struct {
	node *node
	num  int
	guid ib.GUID
	link *Cable

	// Attributes. Written on the fabric loop under node.mu; device loops
	// read them under node.mu.RLock.
	state     ib.PortState
	lid       ib.LID
	smLID     ib.LID
	pkeys     []ib.PKey
	gids      []ib.GID
	maxMTU    ib.MTU
	activeMTU ib.MTU
	rate      ib.Rate

	// wantLID is the LID asked for in the config; fabric loop only.
	wantLID ib.LID
	// mark is the SM's visited flag, compared with smState.gen.
	mark uint32

	// Receive-side state of host ports, guarded by node.mu.
	madPort *madPort
	attach  map[ib.LID][]*qp
}

// attr snapshots the port's attributes. The caller holds node.mu (either
// way) or runs on the fabric loop.
func (p *port) attr() ib.PortAttr {
	return ib.PortAttr{
		Num:       p.num,
		State:     p.state,
		LinkLayer: ib.LinkLayerInfiniBand,
		LID:       p.lid,
		SMLID:     p.smLID,
		ActiveMTU: p.activeMTU,
		MaxMTU:    p.maxMTU,
		Rate:      p.rate,
		GIDs:      append([]ib.GID(nil), p.gids...),
		PKeys:     append([]ib.PKey(nil), p.pkeys...),
	}
}

// peer returns the port at the other end of p's link, or nil.
func (p *port) peer() *port {
	if p.link == nil {
		return nil
	}
	return p.link.other(p)
}

// String names the port "node/number" in errors.
func (p *port) String() string { return fmt.Sprintf("%s/%d", p.node.name, p.num) }

// Host is a simulated HCA. Its ports carry the QPs of the devices opened
// on it.
type Host struct {
	node
	counters counter.Block[Counters]

	// Guarded by node.mu.
	qps     map[ib.QPN]*qp
	nextQPN ib.QPN
	devices []*device
}

// Switch is a simulated switch with a linear forwarding table and a
// multicast forwarding table, both programmed by the SM.
type Switch struct {
	node
}

// Cable joins two ports. Its link state (IBA 7.2: the physical link
// between the two ports, up or down) is what SetLinkUp changes.
type Cable struct {
	a, b *port
	mtu  ib.MTU
	rate ib.Rate
	up   bool
}

// other returns the end of l that is not p.
func (l *Cable) other(p *port) *port {
	if p == l.a {
		return l.b
	}
	return l.a
}

// Up reports whether the cable's link is up. Fabric loop only.
func (l *Cable) Up() bool { return l.up }

// MTU returns the cable's link MTU.
func (l *Cable) MTU() ib.MTU { return l.mtu }

// String names the cable by its ends, e.g. "host0/1<->sw0/3".
func (l *Cable) String() string { return l.a.String() + "<->" + l.b.String() }

// AddHost adds a host with cfg.Ports ports, all DOWN until connected.
func (f *Fabric) AddHost(name string, cfg HostConfig) (*Host, error) {
	f.assertHome("AddHost")
	if err := f.checkNewName(name); err != nil {
		return nil, fmt.Errorf("sim: add host %q: %w", name, err)
	}
	if cfg.Ports == 0 {
		cfg.Ports = 1
	}
	if cfg.Ports < 0 || cfg.Ports > MaxSwitchPorts {
		return nil, fmt.Errorf("sim: add host %q: %d ports: %w", name, cfg.Ports, ErrBadConfig)
	}
	if len(cfg.PortGUIDs) > cfg.Ports || len(cfg.LIDs) > cfg.Ports {
		return nil, fmt.Errorf("sim: add host %q: more GUIDs or LIDs than ports: %w", name, ErrBadConfig)
	}
	pkeys := cfg.PKeys
	if len(pkeys) == 0 {
		pkeys = []ib.PKey{ib.PKeyDefault}
	}
	mtu, rate, err := f.portSpeed(cfg.MTU, cfg.Rate)
	if err != nil {
		return nil, fmt.Errorf("sim: add host %q: %w", name, err)
	}
	for _, l := range cfg.LIDs {
		if l != 0 && !l.IsUnicast() {
			return nil, fmt.Errorf("sim: add host %q: LID %v is not unicast: %w", name, l, ErrBadConfig)
		}
	}
	h := &Host{qps: make(map[ib.QPN]*qp), nextQPN: firstQPN}
	f.initNode(&h.node, name, cfg.NodeGUID, false)
	h.host = h
	h.ports = make([]*port, cfg.Ports+1)
	for i := 1; i <= cfg.Ports; i++ {
		g := h.guid + ib.GUID(i)
		if i <= len(cfg.PortGUIDs) && cfg.PortGUIDs[i-1] != 0 {
			g = cfg.PortGUIDs[i-1]
		}
		p := f.newPort(&h.node, i, g, mtu, rate)
		p.pkeys = append([]ib.PKey(nil), pkeys...)
		if i <= len(cfg.LIDs) {
			p.wantLID = cfg.LIDs[i-1]
		}
		h.ports[i] = p
		f.sm.byGID[p.gids[0]] = p
	}
	f.sm.wanted = nil
	f.mu.Lock()
	f.hosts = append(f.hosts, h)
	f.nodes[name] = h
	f.mu.Unlock()
	return h, nil
}

// AddSwitch adds a switch. Its management port 0 gets a LID from the SM
// and, if the switch hosts the SM, answers SA queries.
func (f *Fabric) AddSwitch(name string, cfg SwitchConfig) (*Switch, error) {
	f.assertHome("AddSwitch")
	if err := f.checkNewName(name); err != nil {
		return nil, fmt.Errorf("sim: add switch %q: %w", name, err)
	}
	if cfg.Ports == 0 {
		cfg.Ports = DefaultSwitchPorts
	}
	if cfg.Ports < 1 || cfg.Ports > MaxSwitchPorts {
		return nil, fmt.Errorf("sim: add switch %q: %d ports (1..%d): %w", name, cfg.Ports, MaxSwitchPorts, ErrBadConfig)
	}
	if cfg.LID != 0 && !cfg.LID.IsUnicast() {
		return nil, fmt.Errorf("sim: add switch %q: LID %v is not unicast: %w", name, cfg.LID, ErrBadConfig)
	}
	mtu, rate, err := f.portSpeed(cfg.MTU, cfg.Rate)
	if err != nil {
		return nil, fmt.Errorf("sim: add switch %q: %w", name, err)
	}
	s := &Switch{}
	f.initNode(&s.node, name, cfg.NodeGUID, true)
	s.mft = make(map[ib.LID][]uint8)
	s.ports = make([]*port, cfg.Ports+1)
	for i := 0; i <= cfg.Ports; i++ {
		// Every port of a switch shares the node GUID (IBA 14.2.5.3,
		// NodeInfo PortGUID of a switch is that of port 0).
		s.ports[i] = f.newPort(&s.node, i, s.guid, mtu, rate)
		s.ports[i].pkeys = []ib.PKey{ib.PKeyDefault}
	}
	mgmt := s.ports[0]
	mgmt.wantLID = cfg.LID
	f.sm.byGID[mgmt.gids[0]] = mgmt
	mgmt.state = ib.PortInit
	f.sm.wanted = nil
	f.mu.Lock()
	s.swIdx = len(f.switches)
	f.switches = append(f.switches, s)
	f.nodes[name] = s
	f.mu.Unlock()
	f.resweep()
	return s, nil
}

func (f *Fabric) checkNewName(name string) error {
	if f.closed.Load() {
		return ib.ErrClosed
	}
	if name == "" {
		return fmt.Errorf("empty name: %w", ErrBadConfig)
	}
	if _, dup := f.nodes[name]; dup {
		return ErrExists
	}
	return nil
}

func (f *Fabric) portSpeed(mtu ib.MTU, rate ib.Rate) (ib.MTU, ib.Rate, error) {
	if mtu == 0 {
		mtu = f.cfg.MTU
	}
	if rate == 0 {
		rate = f.cfg.Rate
	}
	if !mtu.Valid() || rate.Mbps() == 0 {
		return 0, 0, fmt.Errorf("MTU %d, rate %d: %w", mtu, rate, ErrBadConfig)
	}
	return mtu, rate, nil
}

func (f *Fabric) initNode(n *node, name string, guid ib.GUID, isSwitch bool) {
	f.nodeSeq++
	n.f = f
	n.name = name
	n.seq = f.nodeSeq
	n.isSwitch = isSwitch
	if guid == 0 {
		// Leave the low byte for port numbers.
		guid = ib.GUID(guidOUIPrefix | uint64(n.seq)<<8)
	}
	n.guid = guid
}

func (f *Fabric) newPort(n *node, num int, guid ib.GUID, mtu ib.MTU, rate ib.Rate) *port {
	return &port{
		node:      n,
		num:       num,
		guid:      guid,
		state:     ib.PortDown,
		gids:      []ib.GID{ib.GIDFromParts(f.cfg.SubnetPrefix, uint64(guid))},
		maxMTU:    mtu,
		activeMTU: mtu,
		rate:      rate,
	}
}

// Connect cables a port of a to a port of b. The link comes up at once:
// its ports go to INIT, and to ACTIVE when the SM sweeps (immediately once
// the fabric has started and the SM is up).
func (f *Fabric) Connect(a, b Node, cfg CableConfig) (*Cable, error) {
	f.assertHome("Connect")
	if f.closed.Load() {
		return nil, fmt.Errorf("sim: connect: %w", ib.ErrClosed)
	}
	if a == nil || b == nil || a.base().f != f || b.base().f != f {
		return nil, fmt.Errorf("sim: connect: node not in fabric %q: %w", f.name, ErrNotFound)
	}
	na, nb := a.base(), b.base()
	pa, err := freePort(na, cfg.APort, nil)
	if err != nil {
		return nil, fmt.Errorf("sim: connect %s to %s: %w", na.name, nb.name, err)
	}
	pb, err := freePort(nb, cfg.BPort, pa)
	if err != nil {
		return nil, fmt.Errorf("sim: connect %s to %s: %w", na.name, nb.name, err)
	}
	mtu := min(pa.maxMTU, pb.maxMTU)
	if cfg.MTU != 0 {
		if !cfg.MTU.Valid() {
			return nil, fmt.Errorf("sim: connect %s to %s: MTU %d: %w", na.name, nb.name, cfg.MTU, ErrBadConfig)
		}
		mtu = min(mtu, cfg.MTU)
	}
	rate := slower(pa.rate, pb.rate)
	if cfg.Rate != 0 {
		if cfg.Rate.Mbps() == 0 {
			return nil, fmt.Errorf("sim: connect %s to %s: rate %d: %w", na.name, nb.name, cfg.Rate, ErrBadConfig)
		}
		rate = slower(rate, cfg.Rate)
	}
	l := &Cable{a: pa, b: pb, mtu: mtu, rate: rate}
	pa.link, pb.link = l, l
	for _, p := range [2]*port{pa, pb} {
		// A port's active MTU is what it negotiated with its neighbour
		// (IBA 14.2.5.6, PortInfo NeighborMTU).
		p.node.mu.Lock()
		p.activeMTU = min(p.maxMTU, mtu)
		p.node.mu.Unlock()
	}
	f.links = append(f.links, l)
	f.setLink(l, true)
	return l, nil
}

// freePort returns port num of n, or its lowest free external port when
// num is 0. not is a port already picked for the other end.
func freePort(n *node, num int, not *port) (*port, error) {
	if num != 0 {
		if num < 1 || num >= len(n.ports) {
			return nil, fmt.Errorf("%s has no port %d: %w", n.name, num, ErrNotFound)
		}
		p := n.ports[num]
		if p.link != nil || p == not {
			return nil, fmt.Errorf("%s port %d: %w", n.name, num, ErrPortInUse)
		}
		return p, nil
	}
	for _, p := range n.ports[1:] {
		if p.link == nil && p != not {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%s has no free port: %w", n.name, ErrPortInUse)
}

// slower returns the slower of two rates (rate codes are not ordered by
// speed, IBA 15.2.5.16 Table 205).
func slower(a, b ib.Rate) ib.Rate {
	if a.Mbps() <= b.Mbps() {
		return a
	}
	return b
}

// Counters returns the host's packet counters. Safe from any goroutine.
func (h *Host) Counters() Counters { return h.counters.Load() }

// NumPorts returns the host's port count.
func (h *Host) NumPorts() int { return len(h.ports) - 1 }

// Port returns a snapshot of a port's attributes. Safe from any goroutine.
func (h *Host) Port(num int) (ib.PortAttr, error) {
	if num < 1 || num >= len(h.ports) {
		return ib.PortAttr{}, fmt.Errorf("sim: host %s port %d: %w", h.name, num, ib.ErrNoPort)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ports[num].attr(), nil
}

// Cable returns the cable plugged into a port, or nil. Fabric loop.
func (h *Host) Cable(num int) *Cable {
	if num < 1 || num >= len(h.ports) {
		return nil
	}
	return h.ports[num].link
}

// info is what the driver's Probe reports about the host.
func (h *Host) info() ib.DeviceInfo {
	h.mu.RLock()
	defer h.mu.RUnlock()
	d := ib.DeviceInfo{
		Driver:   DriverName,
		Name:     h.f.name + "/" + h.name,
		NodeGUID: h.guid,
	}
	for _, p := range h.ports[1:] {
		d.Ports = append(d.Ports, p.attr())
	}
	return d
}

// LID returns the switch's LID (that of management port 0). Fabric loop.
func (s *Switch) LID() ib.LID { return s.ports[0].lid }

// NumPorts returns the number of external ports.
func (s *Switch) NumPorts() int { return len(s.ports) - 1 }

// Route returns the switch's forwarding entry for a unicast DLID: the out
// port, or false when it has none. Fabric loop.
func (s *Switch) Route(dlid ib.LID) (int, bool) {
	if int(dlid) >= len(s.lft) || s.lft[dlid] == noPort {
		return 0, false
	}
	return int(s.lft[dlid]), true
}

// McastPorts returns the ports a packet for mlid leaves the switch by
// (excluding, when forwarded, the port it came in on). Fabric loop.
func (s *Switch) McastPorts(mlid ib.LID) []int {
	var out []int
	for _, p := range s.mft[mlid] {
		out = append(out, int(p))
	}
	return out
}
