package ib

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// GID is a 128-bit InfiniBand global identifier (IBA 4.1.1): a 64-bit
// subnet prefix followed by a 64-bit interface ID, in network byte order.
// On RoCE ports it is an IPv6 address (or an IPv4-mapped one), which is why
// it prints in IPv6 form.
type GID [16]byte

// GIDFromParts builds a GID from its subnet prefix and interface ID.
func GIDFromParts(prefix, ifaceID uint64) GID {
	var g GID
	binary.BigEndian.PutUint64(g[:8], prefix)
	binary.BigEndian.PutUint64(g[8:], ifaceID)
	return g
}

// ParseGID parses a GID in IPv6 textual form, e.g. "fe80::2:c903:0:1".
func ParseGID(s string) (GID, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return GID{}, fmt.Errorf("parse GID %q: not an IPv6-form address", s)
	}
	return GID(a.As16()), nil
}

// SubnetPrefix returns the upper 64 bits of the GID.
func (g GID) SubnetPrefix() uint64 { return binary.BigEndian.Uint64(g[:8]) }

// InterfaceID returns the lower 64 bits of the GID (the port GUID for a
// port's default GID).
func (g GID) InterfaceID() uint64 { return binary.BigEndian.Uint64(g[8:]) }

// IsMulticast reports whether g is a multicast GID (first byte 0xFF,
// IBA 4.1.1).
func (g GID) IsMulticast() bool { return g[0] == 0xff }

// IsZero reports whether every byte of g is zero.
func (g GID) IsZero() bool { return g == GID{} }

// String formats g in IPv6 form, the form ibstat, ibv_devinfo and tshark use.
func (g GID) String() string { return netip.AddrFrom16(g).String() }

// GUID is a 64-bit EUI-64 globally unique identifier of a node or port.
type GUID uint64

// String formats the GUID as 0x-prefixed hex, as ibstat prints it.
func (g GUID) String() string { return fmt.Sprintf("%#016x", uint64(g)) }

// LID is a 16-bit local identifier assigned by the subnet manager.
type LID uint16

// LID ranges (IBA 4.1.3, Table 2).
const (
	// LIDReserved is LID 0: no LID assigned (and the LID RoCE ports report).
	LIDReserved LID = 0x0000
	// LIDUnicastMax is the highest unicast LID.
	LIDUnicastMax LID = 0xBFFF
	// LIDMulticastMin is the first multicast LID.
	LIDMulticastMin LID = 0xC000
	// LIDMulticastMax is the last multicast LID.
	LIDMulticastMax LID = 0xFFFE
	// LIDPermissive is the permissive LID, accepted by any port.
	LIDPermissive LID = 0xFFFF
)

// IsUnicast reports whether l is an assignable unicast LID.
func (l LID) IsUnicast() bool { return l >= 1 && l <= LIDUnicastMax }

// IsMulticast reports whether l lies in the multicast LID range.
func (l LID) IsMulticast() bool { return l >= LIDMulticastMin && l <= LIDMulticastMax }

// String formats l as hex, the way SM tools print LIDs.
func (l LID) String() string { return fmt.Sprintf("%#04x", uint16(l)) }

// QPN is a 24-bit queue pair number.
type QPN uint32

// Queue pair numbers with fixed meaning.
const (
	// QPNMask keeps the 24 bits a QPN has on the wire (BTH DestQP, DETH SrcQP).
	QPNMask QPN = 0xFFFFFF
	// QPNSMI is QP0, the subnet management interface (IBA 3.9.2).
	QPNSMI QPN = 0
	// QPNGSI is QP1, the general services interface that carries SA MADs.
	QPNGSI QPN = 1
	// QPNMulticast is the destination QPN of every multicast packet
	// (IBA 9.8.1: DestQP 0xFFFFFF).
	QPNMulticast QPN = 0xFFFFFF
)

// Valid reports whether q fits in 24 bits.
func (q QPN) Valid() bool { return q <= QPNMask }

// String formats q as hex.
func (q QPN) String() string { return fmt.Sprintf("%#06x", uint32(q)) }

// PKey is a 16-bit partition key: the top bit marks full membership, the
// low 15 bits are the partition (IBA 10.9.1).
type PKey uint16

// Partition key constants.
const (
	// PKeyFullMember is the membership bit: set for full members, clear for
	// limited members. Two limited members may not talk to each other.
	PKeyFullMember PKey = 0x8000
	// PKeyDefault is the default partition with full membership.
	PKeyDefault PKey = 0xFFFF
	// PKeyBaseMask keeps the 15-bit partition number.
	PKeyBaseMask PKey = 0x7FFF
)

// Full reports whether the key carries full membership.
func (p PKey) Full() bool { return p&PKeyFullMember != 0 }

// Base returns the 15-bit partition number without the membership bit.
func (p PKey) Base() PKey { return p & PKeyBaseMask }

// Valid reports whether the partition number is non-zero; partition 0 is
// the invalid key (IBA 10.9.1.2).
func (p PKey) Valid() bool { return p.Base() != 0 }

// Matches reports whether a packet carrying p is accepted by a port holding
// q: the partitions must agree and at least one side must be a full member
// (IBA 10.9.3, P_Key matching).
func (p PKey) Matches(q PKey) bool {
	return p.Valid() && p.Base() == q.Base() && (p.Full() || q.Full())
}

// String formats p as 0x-prefixed hex.
func (p PKey) String() string { return fmt.Sprintf("%#04x", uint16(p)) }

// QKey is a 32-bit queue key that a UD receiver checks against the DETH.
type QKey uint32

// Queue key constants.
const (
	// QKeyControlled is the high-order bit: a send work request may not use
	// a controlled Q_Key it has not been given (IBA 10.2.4).
	QKeyControlled QKey = 0x80000000
	// QKeyGSI is the well-known Q_Key of QP1 (IBA 13.5.1, GSI).
	QKeyGSI QKey = 0x80010000
	// QKeyIPoIBDefault is the Q_Key Linux and OpenSM use for the IPoIB
	// broadcast group when none is configured.
	QKeyIPoIBDefault QKey = 0x00000B1B
)

// String formats q as 0x-prefixed hex.
func (q QKey) String() string { return fmt.Sprintf("%#08x", uint32(q)) }

// MTU is the IBTA MTU enumeration used in PortInfo, PathRecord and
// MCMemberRecord (IBA 14.2.5.6, PortInfo NeighborMTU and MTUCap).
type MTU uint8

// MTU encodings.
const (
	MTU256  MTU = 1
	MTU512  MTU = 2
	MTU1024 MTU = 3
	MTU2048 MTU = 4
	MTU4096 MTU = 5
)

// Bytes returns the payload size the MTU allows, or 0 for an invalid code.
func (m MTU) Bytes() int {
	if m < MTU256 || m > MTU4096 {
		return 0
	}
	return 128 << m
}

// Valid reports whether m is one of the five defined encodings.
func (m MTU) Valid() bool { return m.Bytes() != 0 }

// MTUFromBytes returns the encoding for an exact IB MTU size.
func MTUFromBytes(n int) (MTU, error) {
	for m := MTU256; m <= MTU4096; m++ {
		if m.Bytes() == n {
			return m, nil
		}
	}
	return 0, fmt.Errorf("IB MTU %d: must be 256, 512, 1024, 2048 or 4096", n)
}

// String formats the MTU as its byte size.
func (m MTU) String() string {
	if !m.Valid() {
		return "invalid(" + strconv.Itoa(int(m)) + ")"
	}
	return strconv.Itoa(m.Bytes())
}

// Rate is the IBTA static rate encoding used in PathRecord and
// MCMemberRecord (IBA 15.2.5.16, PathRecord Rate).
type Rate uint8

// Rate encodings.
const (
	Rate2_5Gbps Rate = 2
	Rate10Gbps  Rate = 3
	Rate30Gbps  Rate = 4
	Rate5Gbps   Rate = 5
	Rate20Gbps  Rate = 6
	Rate40Gbps  Rate = 7
	Rate60Gbps  Rate = 8
	Rate80Gbps  Rate = 9
	Rate120Gbps Rate = 10
	Rate14Gbps  Rate = 11
	Rate56Gbps  Rate = 12
	Rate112Gbps Rate = 13
	Rate168Gbps Rate = 14
	Rate25Gbps  Rate = 15
	Rate100Gbps Rate = 16
	Rate200Gbps Rate = 17
	Rate300Gbps Rate = 18
)

// rateMbps maps each rate encoding to megabits per second.
var rateMbps = map[Rate]int{
	Rate2_5Gbps: 2500, Rate10Gbps: 10000, Rate30Gbps: 30000, Rate5Gbps: 5000,
	Rate20Gbps: 20000, Rate40Gbps: 40000, Rate60Gbps: 60000, Rate80Gbps: 80000,
	Rate120Gbps: 120000, Rate14Gbps: 14000, Rate56Gbps: 56000, Rate112Gbps: 112000,
	Rate168Gbps: 168000, Rate25Gbps: 25000, Rate100Gbps: 100000, Rate200Gbps: 200000,
	Rate300Gbps: 300000,
}

// Mbps returns the rate in megabits per second, or 0 for an unknown code.
func (r Rate) Mbps() int { return rateMbps[r] }

// String formats the rate as "<n> Gb/s".
func (r Rate) String() string {
	m := r.Mbps()
	if m == 0 {
		return "invalid(" + strconv.Itoa(int(r)) + ")"
	}
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64) + " Gb/s"
}

// SL is a 4-bit service level.
type SL uint8

// Valid reports whether the SL fits in 4 bits.
func (s SL) Valid() bool { return s < 16 }

// LinkLayer says what a port runs over.
type LinkLayer uint8

// Link layers a port may report.
const (
	// LinkLayerInfiniBand ports have a subnet manager, LIDs and an SA.
	LinkLayerInfiniBand LinkLayer = iota + 1
	// LinkLayerEthernet ports are RoCE: no SM, paths resolve locally and
	// every packet carries a GRH.
	LinkLayerEthernet
)

// String returns the name ibv_devinfo uses for the link layer.
func (l LinkLayer) String() string {
	switch l {
	case LinkLayerInfiniBand:
		return "InfiniBand"
	case LinkLayerEthernet:
		return "Ethernet"
	}
	return "unknown(" + strconv.Itoa(int(l)) + ")"
}

// PortState is the logical port state (IBA 14.2.5.6, PortInfo.PortState).
type PortState uint8

// Port states.
const (
	PortDown        PortState = 1
	PortInit        PortState = 2
	PortArmed       PortState = 3
	PortActive      PortState = 4
	PortActiveDefer PortState = 5
)

// String returns the state's name as ibstat prints it.
func (s PortState) String() string {
	switch s {
	case PortDown:
		return "DOWN"
	case PortInit:
		return "INIT"
	case PortArmed:
		return "ARMED"
	case PortActive:
		return "ACTIVE"
	case PortActiveDefer:
		return "ACTIVE_DEFER"
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}

// MGIDScopeLinkLocal is the multicast GID scope of link-local groups, the
// scope IPoIB links use unless configured otherwise (IBA 4.1.1, multicast
// GID scope 2).
const MGIDScopeLinkLocal = 0x2
