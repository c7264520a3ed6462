package sim

import (
	"cmp"
	"fmt"
	"io"

	"github.com/ipoibd/ipoibd/ib"
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

// CableConfig describes a cable between two nodes.
type CableConfig struct {
	// APort and BPort are the port numbers at each end; 0 picks the
	// lowest free port.
	APort, BPort int
	// MTU caps the link below the ends' MTUs; 0 uses the smaller end MTU.
	MTU ib.MTU
	// Rate caps the link rate; 0 uses the slower end.
	Rate ib.Rate
}

// fill applies the defaults and checks ranges.
func (c *Config) fill() error {
	c.SubnetPrefix = cmp.Or(c.SubnetPrefix, DefaultSubnetPrefix)
	c.MTU = cmp.Or(c.MTU, DefaultMTU)
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.PacketLifeTime = cmp.Or(c.PacketLifeTime, DefaultPacketLifeTime)
	c.Group.QKey = cmp.Or(c.Group.QKey, DefaultGroupQKey)
	c.Group.MTU = cmp.Or(c.Group.MTU, DefaultGroupMTU)
	c.Group.Rate = cmp.Or(c.Group.Rate, DefaultGroupRate)
	switch {
	case !c.MTU.Valid() || !c.Group.MTU.Valid():
		return fmt.Errorf("MTU %d / group MTU %d: %w", c.MTU, c.Group.MTU, ErrBadConfig)
	case c.Rate.Mbps() == 0 || c.Group.Rate.Mbps() == 0:
		return fmt.Errorf("rate %d / group rate %d: %w", c.Rate, c.Group.Rate, ErrBadConfig)
	case c.PacketLifeTime > 63:
		return fmt.Errorf("PacketLifeTime %d exceeds 6 bits: %w", c.PacketLifeTime, ErrBadConfig)
	case !c.PathSL.Valid() || !c.Group.SL.Valid():
		return fmt.Errorf("SL %d / group SL %d: %w", c.PathSL, c.Group.SL, ErrBadConfig)
	}
	for _, k := range c.IPoIBPartitions {
		if !k.Valid() {
			return fmt.Errorf("IPoIB partition %v is not a valid P_Key: %w", k, ErrBadConfig)
		}
	}
	return nil
}
