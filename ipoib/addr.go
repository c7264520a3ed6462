package ipoib

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ipoibd/ipoibd/ib"
)

// AddrLen is the size of an IPoIB link-layer address (RFC 4391
// section 9.1.1): one octet of flags, a 24-bit QPN and a 16-byte GID.
const AddrLen = 20

// FlagConnected is the bit of the first address octet by which an
// interface says it accepts IPoIB connected mode (RFC 4755, link-layer
// address). Linux prints it as the leading "80" of an ib0 address.
const FlagConnected uint8 = 0x80

// IPoIB multicast GID fields (RFC 4391 section 4).
const (
	// SignatureIPv4 is the signature in bytes 2-3 of an MGID that maps
	// an IPv4 group (and of the broadcast GID).
	SignatureIPv4 = 0x401B
	// SignatureIPv6 is the signature of an MGID that maps an IPv6
	// group.
	SignatureIPv6 = 0x601B
	// mgidFlagTransient is the flags nibble of every IPoIB MGID: T set, the
	// group is not permanently assigned (IBA 4.1.1).
	mgidFlagTransient = 0x1
)

// Errors of the IPoIB address helpers.
var (
	// ErrAddr means a textual IPoIB address did not parse.
	ErrAddr = errors.New("ib: malformed IPoIB address")
	// ErrNotMulticast means an IP address given for a multicast mapping is
	// not a multicast address of the right family.
	ErrNotMulticast = errors.New("ib: not a multicast address")
)

// Addr is an IPoIB link-layer address: the hardware address of ARP
// hardware type 32 and of IPv6 neighbour discovery on IPoIB (RFC 4391
// section 9.1.1). Multicast destinations use QPN 0xFFFFFF and an MGID.
type Addr struct {
	// Flags is the whole first octet; only FlagConnected is defined,
	// the other bits are reserved and carried through unchanged.
	Flags uint8
	// QPN is the 24-bit UD queue pair number of the interface.
	QPN ib.QPN
	// GID is the port GID (or the MGID of a group).
	GID ib.GID
}

// Decode fills a from the first AddrLen bytes of b.
func (a *Addr) Decode(b []byte) error {
	if len(b) < AddrLen {
		return fmt.Errorf("decode IPoIB address: %d bytes, need %d: %w", len(b), AddrLen, ib.ErrTruncated)
	}
	w := binary.BigEndian.Uint32(b)
	a.Flags = uint8(w >> 24)
	a.QPN = ib.QPN(w) & ib.QPNMask
	copy(a.GID[:], b[4:AddrLen])
	return nil
}

// Encode writes a into the first AddrLen bytes of b. It fails if b is
// short or the QPN does not fit 24 bits.
func (a Addr) Encode(b []byte) error {
	if len(b) < AddrLen {
		return fmt.Errorf("encode IPoIB address: %d-byte buffer, need %d: %w", len(b), AddrLen, ib.ErrTruncated)
	}
	if !a.QPN.Valid() {
		return fmt.Errorf("encode IPoIB address: ib.QPN %#x exceeds 24 bits: %w", uint32(a.QPN), ib.ErrFieldRange)
	}
	binary.BigEndian.PutUint32(b, uint32(a.Flags)<<24|uint32(a.QPN))
	copy(b[4:AddrLen], a.GID[:])
	return nil
}

// ConnectedMode reports whether the address advertises connected mode.
func (a Addr) ConnectedMode() bool { return a.Flags&FlagConnected != 0 }

// IsMulticast reports whether a names a multicast group: the multicast QPN
// and a multicast GID.
func (a Addr) IsMulticast() bool { return a.QPN == ib.QPNMulticast && a.GID.IsMulticast() }

// String formats a as twenty colon-separated hex octets, the form
// `ip link` prints for an IPoIB interface, e.g.
// "80:00:05:50:fe:80:00:00:00:00:00:00:00:10:e0:00:66:4a:b4:51". The QPN is
// masked to 24 bits.
func (a Addr) String() string {
	var raw [AddrLen]byte
	binary.BigEndian.PutUint32(raw[:], uint32(a.Flags)<<24|uint32(a.QPN&ib.QPNMask))
	copy(raw[4:], a.GID[:])
	var out [AddrLen*3 - 1]byte
	for i := range raw {
		if i > 0 {
			out[i*3-1] = ':'
		}
		hex.Encode(out[i*3:i*3+2], raw[i:i+1])
	}
	return string(out[:])
}

// ParseAddr parses the colon-separated form String produces, or the
// 40 bare hex digits tshark prints ("80000550fe80...").
func ParseAddr(s string) (Addr, error) {
	var raw [AddrLen]byte
	switch len(s) {
	case AddrLen * 2:
		if _, err := hex.Decode(raw[:], []byte(s)); err != nil {
			return Addr{}, fmt.Errorf("parse IPoIB address %q: %w", s, ErrAddr)
		}
	case AddrLen*3 - 1:
		for i := range raw {
			if i > 0 && s[i*3-1] != ':' {
				return Addr{}, fmt.Errorf("parse IPoIB address %q: octet %d not colon-separated: %w", s, i, ErrAddr)
			}
			if _, err := hex.Decode(raw[i:i+1], []byte(s[i*3:i*3+2])); err != nil {
				return Addr{}, fmt.Errorf("parse IPoIB address %q: octet %d: %w", s, i, ErrAddr)
			}
		}
	default:
		return Addr{}, fmt.Errorf("parse IPoIB address %q: want 20 hex octets: %w", s, ErrAddr)
	}
	var a Addr
	_ = a.Decode(raw[:]) // cannot fail: raw is AddrLen bytes
	return a, nil
}

// ipoibMGID lays out an IPoIB MGID (RFC 4391 section 4):
// ff, flags|scope, signature, P_Key with the full-member bit, then the
// group bits the caller fills in bytes 6-15.
func ipoibMGID(sig uint16, pkey ib.PKey) ib.GID {
	var g ib.GID
	g[0] = 0xff
	g[1] = mgidFlagTransient<<4 | ib.MGIDScopeLinkLocal
	binary.BigEndian.PutUint16(g[2:], sig)
	binary.BigEndian.PutUint16(g[4:], uint16(pkey|ib.PKeyFullMember))
	return g
}

// BroadcastGID returns the MGID of the IPoIB broadcast group of a
// partition, ff12:401b:<P_Key|0x8000>::ffff:ffff (RFC 4391 section 4).
// Every IPoIB interface joins it as a full member; its MCMemberRecord
// gives the link's Q_Key and MTU.
func BroadcastGID(pkey ib.PKey) ib.GID {
	g := ipoibMGID(SignatureIPv4, pkey)
	binary.BigEndian.PutUint32(g[12:], 0xffffffff)
	return g
}

// BroadcastAddr returns the link-layer broadcast address of a
// partition: no flags, the multicast QPN and the broadcast MGID.
func BroadcastAddr(pkey ib.PKey) Addr {
	return Addr{QPN: ib.QPNMulticast, GID: BroadcastGID(pkey)}
}

// MulticastAddr returns the link-layer address of a group.
func MulticastAddr(mgid ib.GID) Addr {
	return Addr{QPN: ib.QPNMulticast, GID: mgid}
}

// IPv4MulticastGID maps an IPv4 multicast group to its IPoIB MGID,
// ff12:401b:<P_Key|0x8000>::<low 28 bits of the group> (RFC 4391 section
// 4). The limited broadcast 255.255.255.255 is not multicast: send it to
// BroadcastGID.
func IPv4MulticastGID(pkey ib.PKey, group netip.Addr) (ib.GID, error) {
	if !group.Is4() || !group.IsMulticast() {
		return ib.GID{}, fmt.Errorf("IPoIB MGID for %v: %w", group, ErrNotMulticast)
	}
	g := ipoibMGID(SignatureIPv4, pkey)
	v4 := group.As4()
	binary.BigEndian.PutUint32(g[12:], binary.BigEndian.Uint32(v4[:])&0x0fffffff)
	return g, nil
}

// IPv6MulticastGID maps an IPv6 multicast group to its IPoIB MGID,
// ff12:601b:<P_Key|0x8000> followed by the low 80 bits of the group (RFC
// 4391 section 4). The MGID's scope is the link's (link-local), as Linux
// does, not the group's.
func IPv6MulticastGID(pkey ib.PKey, group netip.Addr) (ib.GID, error) {
	if !group.Is6() || group.Is4In6() || !group.IsMulticast() {
		return ib.GID{}, fmt.Errorf("IPoIB MGID for %v: %w", group, ErrNotMulticast)
	}
	g := ipoibMGID(SignatureIPv6, pkey)
	v6 := group.As16()
	copy(g[6:], v6[6:])
	return g, nil
}
