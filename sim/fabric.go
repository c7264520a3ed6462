package sim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/pcap"
)

// Defaults a zero Config or HostConfig field falls back to.
const (
	// DefaultSubnetPrefix is the link-local GID prefix every port's default
	// GID starts with when no subnet prefix is configured (IBA 4.1.1: the
	// default GID prefix is fe80::/64).
	DefaultSubnetPrefix uint64 = 0xfe80_0000_0000_0000
	// DefaultMTU is the port and link MTU: what current HCAs and switches
	// negotiate.
	DefaultMTU = ib.MTU4096
	// DefaultRate is the port and link rate: 4x EDR.
	DefaultRate = ib.Rate100Gbps
	// DefaultPacketLifeTime is the PathRecord PacketLifeTime the SA
	// reports: OpenSM's subnet default, and what the SA in the testdata
	// capture answered (4.096 µs * 2^18, about 1.07 s).
	DefaultPacketLifeTime = 0x12
	// DefaultGroupQKey is the Q_Key of groups created without one: the
	// IPoIB broadcast Q_Key.
	DefaultGroupQKey = ib.QKeyIPoIBDefault
	// DefaultGroupMTU is the MTU of groups created without one; OpenSM's
	// default partition uses 2048, which is why IPoIB links are 2044 bytes.
	DefaultGroupMTU = ib.MTU2048
	// DefaultGroupRate is the rate of groups created without one, OpenSM's
	// default partition rate (10 Gb/s).
	DefaultGroupRate = ib.Rate10Gbps
	// DefaultSwitchPorts is the port count of a switch whose config names
	// none: a 36-port switch ASIC.
	DefaultSwitchPorts = 36
	// MaxSwitchPorts is the largest switch port number (PortInfo port
	// numbers are 8 bits and 255 is reserved).
	MaxSwitchPorts = 254
	// guidOUIPrefix puts generated GUIDs in a locally administered EUI-64
	// space (first octet 0x02) tagged "SIM", so they never look like a real
	// vendor's.
	guidOUIPrefix uint64 = 0x02_53_49_4d << 32
)

// Errors callers may test for with errors.Is.
var (
	// ErrExists says a node of that name already exists in the fabric.
	ErrExists = errors.New("sim: name already in use")
	// ErrNotFound says no node, port or link of that name or number exists.
	ErrNotFound = errors.New("sim: not found")
	// ErrPortInUse says a port is already connected, or a MAD port is
	// already open on it.
	ErrPortInUse = errors.New("sim: port in use")
	// ErrNotStarted says the operation needs Start to have been called.
	ErrNotStarted = errors.New("sim: fabric not started")
	// ErrBusy says an object is still referenced (a CQ used by a live QP).
	ErrBusy = errors.New("sim: resource in use")
	// ErrLIDInUse says a requested LID already belongs to another port.
	ErrLIDInUse = errors.New("sim: LID in use")
	// ErrBadConfig says a configuration value is out of range.
	ErrBadConfig = errors.New("sim: bad configuration")
)

// Config describes a fabric. Zero fields take the defaults above.
type Config struct {
	// Name identifies the fabric; devices are probed as "<Name>/<host>".
	// It must be unique among the live fabrics of the process.
	Name string
	// Seed seeds the random source of the fault injector, so a run with
	// the same seed, topology and traffic drops and delays the same
	// packets.
	Seed uint64
	// SubnetPrefix is the upper half of every port GID.
	SubnetPrefix uint64
	// MTU is the default port and link MTU.
	MTU ib.MTU
	// Rate is the default port and link rate.
	Rate ib.Rate
	// PacketLifeTime is the PathRecord and MCMemberRecord PacketLifeTime
	// exponent the SA reports.
	PacketLifeTime uint8
	// PathSL is the SL the SA puts in PathRecords when the query does not
	// ask for one.
	PathSL ib.SL
	// Group holds the parameters of multicast groups created without them.
	Group GroupDefaults
	// SMNode names the host or switch the subnet manager runs on; the SM
	// and SA answer at that node's first port (port 0 of a switch, the
	// management port). Empty means the first switch added, or the first
	// host when there is no switch.
	SMNode string
	// KeepGroupsOnSMRestart makes a restarted SM remember its multicast
	// groups. By default it forgets them, as an SM without persistent state
	// does, and clients must re-join when told to re-register.
	KeepGroupsOnSMRestart bool
	// IPoIBPartitions lists the partitions whose IPoIB broadcast group
	// (ff12:401b:<P_Key>::ffff:ffff) the SM creates when it starts, with
	// the Group defaults, as OpenSM does for every partitions.conf line
	// marked ipoib (the default partition's always): such a group exists
	// before anyone joins, a join's creation components must agree with
	// it, and it stays when its last member leaves. Nil keeps the
	// simulator's own rule, which is OpenSM's for other groups: the first
	// create-capable join makes a group, the last full member's leave
	// deletes it (docs/protocol.md compares the two SMs).
	IPoIBPartitions []ib.PKey
	// Capture, if set, receives an ERF pcap (link type 197, record type 21)
	// of every packet a port transmits.
	Capture io.Writer
}

// GroupDefaults are the parameters the SA gives a multicast group whose
// creating join does not set them.
type GroupDefaults struct {
	// QKey defaults to DefaultGroupQKey.
	QKey ib.QKey
	// MTU defaults to DefaultGroupMTU (lowered to the creator's port MTU).
	MTU ib.MTU
	// Rate defaults to DefaultGroupRate (lowered to the creator's rate).
	Rate ib.Rate
	// SL is the service level; 0 by default.
	SL ib.SL
}

// HostConfig describes a host (an HCA). Zero fields take defaults.
type HostConfig struct {
	// NodeGUID identifies the HCA; 0 derives one from the host's index.
	NodeGUID ib.GUID
	// Ports is the number of ports, 1 by default.
	Ports int
	// PortGUIDs overrides the GUIDs of ports 1..len(PortGUIDs); the others
	// are NodeGUID + port number.
	PortGUIDs []ib.GUID
	// LIDs asks the SM for fixed base LIDs for ports 1..len(LIDs), the way
	// an SM's GUID-to-LID file pins them; 0 entries are assigned.
	LIDs []ib.LID
	// PKeys is the initial P_Key table of every port; {0xFFFF} by default.
	PKeys []ib.PKey
	// MTU is the ports' maximum and active MTU; the fabric's by default.
	MTU ib.MTU
	// Rate is the ports' rate; the fabric's by default.
	Rate ib.Rate
}

// SwitchConfig describes a switch.
type SwitchConfig struct {
	// NodeGUID identifies the switch; 0 derives one.
	NodeGUID ib.GUID
	// Ports is the number of external ports, DefaultSwitchPorts by
	// default, at most MaxSwitchPorts.
	Ports int
	// LID asks for a fixed LID for the management port 0.
	LID ib.LID
	// MTU and Rate bound the links of the switch; the fabric's by default.
	MTU  ib.MTU
	Rate ib.Rate
}

// LinkConfig describes a cable between two nodes.
type LinkConfig struct {
	// APort and BPort are the port numbers at each end; 0 picks the
	// lowest free port.
	APort, BPort int
	// MTU caps the link below the ends' MTUs; 0 uses the smaller end MTU.
	MTU ib.MTU
	// Rate caps the link rate; 0 uses the slower end.
	Rate ib.Rate
}

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
	lft   []uint8             // out port by DLID; noPort when unknown
	mft   map[ib.LID][]uint8  // out ports by MLID
	adj   []swEdge            // links to other switches, rebuilt per sweep
	mcast map[ib.LID]struct{} // scratch for tree building
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
	link *Link

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
	counters counterSet

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

// Link is a cable between two ports.
type Link struct {
	a, b *port
	mtu  ib.MTU
	rate ib.Rate
	up   bool
}

func (l *Link) other(p *port) *port {
	if p == l.a {
		return l.b
	}
	return l.a
}

// Up reports whether the link is up. Fabric loop only.
func (l *Link) Up() bool { return l.up }

// MTU returns the link MTU.
func (l *Link) MTU() ib.MTU { return l.mtu }

// String names the link by its ends, e.g. "host0/1<->sw0/3".
func (l *Link) String() string { return l.a.String() + "<->" + l.b.String() }

// Fabric is a simulated InfiniBand subnet: nodes, links, a subnet manager
// with its SA, and the data path that carries packets between ports. It
// lives on one event loop; see the package documentation for which calls
// belong where.
type Fabric struct {
	name string
	loop *aio.Context
	cfg  Config

	// mu guards hosts and nodes for Probe, which may run anywhere; the
	// fabric loop writes them under mu and reads them without.
	mu       sync.Mutex
	hosts    []*Host
	switches []*Switch
	nodes    map[string]Node
	links    []*Link
	nodeSeq  int

	started bool
	closed  atomic.Bool

	sm smState
	sa saState
	dp dataPath
	fi faultState

	counters counterSet
	capture  *pcap.ERFWriter
}

// live is the process-wide table of open fabrics, which the "sim" driver
// probes.
var live struct {
	sync.Mutex
	fabrics map[string]*Fabric
}

// New creates an empty fabric on loop. It must be called on loop (or
// before the loop has a home). The fabric is listed by the "sim" driver
// until Close.
func New(loop *aio.Context, cfg Config) (*Fabric, error) {
	if loop == nil {
		return nil, fmt.Errorf("sim: new fabric %q: nil loop: %w", cfg.Name, ErrBadConfig)
	}
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, err)
	}
	f := &Fabric{
		name:  cfg.Name,
		loop:  loop,
		cfg:   cfg,
		nodes: make(map[string]Node),
	}
	f.sm.init()
	f.dp.init(f)
	f.fi.init(f, cfg.Seed)
	if cfg.Capture != nil {
		w, err := pcap.NewERFWriter(cfg.Capture)
		if err != nil {
			return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, err)
		}
		f.capture = w
	}
	live.Lock()
	defer live.Unlock()
	if live.fabrics == nil {
		live.fabrics = make(map[string]*Fabric)
	}
	if _, dup := live.fabrics[cfg.Name]; dup {
		return nil, fmt.Errorf("sim: new fabric %q: %w", cfg.Name, ErrExists)
	}
	live.fabrics[cfg.Name] = f
	return f, nil
}

// fill applies the defaults and checks ranges.
func (c *Config) fill() error {
	if c.SubnetPrefix == 0 {
		c.SubnetPrefix = DefaultSubnetPrefix
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.PacketLifeTime == 0 {
		c.PacketLifeTime = DefaultPacketLifeTime
	}
	if c.Group.QKey == 0 {
		c.Group.QKey = DefaultGroupQKey
	}
	if c.Group.MTU == 0 {
		c.Group.MTU = DefaultGroupMTU
	}
	if c.Group.Rate == 0 {
		c.Group.Rate = DefaultGroupRate
	}
	switch {
	case !c.MTU.Valid() || !c.Group.MTU.Valid():
		return fmt.Errorf("MTU %d / group MTU %d: %w", c.MTU, c.Group.MTU, ErrBadConfig)
	case c.Rate.Mbps() == 0 || c.Group.Rate.Mbps() == 0:
		return fmt.Errorf("rate %d / group rate %d: %w", c.Rate, c.Group.Rate, ErrBadConfig)
	case c.PacketLifeTime > 63:
		return fmt.Errorf("PacketLifeTime %d exceeds 6 bits: %w", c.PacketLifeTime, ErrBadConfig)
	}
	for _, k := range c.IPoIBPartitions {
		if !k.Valid() {
			return fmt.Errorf("IPoIB partition %v is not a valid P_Key: %w", k, ErrBadConfig)
		}
	}
	switch {
	case !c.PathSL.Valid() || !c.Group.SL.Valid():
		return fmt.Errorf("SL %d / group SL %d: %w", c.PathSL, c.Group.SL, ErrBadConfig)
	}
	return nil
}

// Name returns the fabric's name.
func (f *Fabric) Name() string { return f.name }

// Loop returns the loop the fabric runs on.
func (f *Fabric) Loop() *aio.Context { return f.loop }

// Close stops the fabric: the driver no longer lists it, queued and
// delayed packets are discarded, and later sends from its devices fail
// with ib.ErrClosed. Devices stay valid objects until their own Close.
func (f *Fabric) Close() error {
	f.assertHome("Close")
	if f.closed.Swap(true) {
		return fmt.Errorf("sim: close fabric %q: %w", f.name, ib.ErrClosed)
	}
	live.Lock()
	if live.fabrics[f.name] == f {
		delete(live.fabrics, f.name)
	}
	live.Unlock()
	f.dp.close()
	f.fi.close()
	return nil
}

// assertHome panics when called off the fabric's loop while it has a
// home; before that (set-up) any single goroutine may build the fabric.
func (f *Fabric) assertHome(op string) {
	if f.loop.InHome() {
		return
	}
	f.loop.AssertHome("sim.Fabric." + op)
}

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
func (f *Fabric) Connect(a, b Node, cfg LinkConfig) (*Link, error) {
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
	l := &Link{a: pa, b: pb, mtu: mtu, rate: rate}
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

// Host returns the host called name, or nil. Fabric loop.
func (f *Fabric) Host(name string) *Host {
	if n, ok := f.nodes[name].(*Host); ok {
		return n
	}
	return nil
}

// Switch returns the switch called name, or nil. Fabric loop.
func (f *Fabric) Switch(name string) *Switch {
	if n, ok := f.nodes[name].(*Switch); ok {
		return n
	}
	return nil
}

// Hosts returns the hosts in the order they were added. Safe from any
// goroutine.
func (f *Fabric) Hosts() []*Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Host(nil), f.hosts...)
}

// Links returns every link in the order they were made. Fabric loop.
func (f *Fabric) Links() []*Link { return append([]*Link(nil), f.links...) }

// Counters returns the fabric-wide packet counters. Safe from any
// goroutine.
func (f *Fabric) Counters() Counters { return f.counters.snapshot() }

// Counters returns the host's packet counters. Safe from any goroutine.
func (h *Host) Counters() Counters { return h.counters.snapshot() }

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

// Link returns the link cabled to a port, or nil. Fabric loop.
func (h *Host) Link(num int) *Link {
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

// newRand returns the fault injector's generator for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// sortedHostNames lists host names for the driver, sorted.
func (f *Fabric) sortedHostNames() []*Host {
	hs := f.Hosts()
	sort.Slice(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	return hs
}
