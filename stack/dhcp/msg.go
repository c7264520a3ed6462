// Message shape and identity: the constants RFC 4390 and RFC 4361 fix,
// the client identifier, and the checks every received message passes
// before the client or server looks at it. Pure functions, safe from any
// goroutine.

package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib/arp"
)

// Wire constants.
const (
	// HTypeIPoIB is the htype of every DHCP message on an IPoIB link: ARP
	// hardware type 32, "InfiniBand" in IANA's registry, as RFC 4390
	// section 2.1 requires.
	HTypeIPoIB = arp.HardwareIPoIB

	// ClientPort and ServerPort are the UDP ports of DHCP (RFC 2131
	// section 4.1, inherited from BOOTP, RFC 951).
	ClientPort = 68
	ServerPort = 67

	// flagBroadcast is the BROADCAST bit, the leftmost bit of the flags
	// field (RFC 2131 section 2, figure 2). RFC 4390 section 2.2 has an
	// IPoIB client set it: with no usable chaddr a server could not
	// address a unicast reply to a client that has no IP address yet.
	flagBroadcast = 0x8000

	// clientIDTypeRFC4361 is the client-identifier type octet that says
	// an IAID and a DUID follow (RFC 4361 section 6.1).
	clientIDTypeRFC4361 = 255

	// duidTypeLL is the DUID-LL type, a DUID built from a link-layer
	// address alone (RFC 3315 section 9.4).
	duidTypeLL = 3

	// ClientIDLen is the length of the client identifier NewClientID
	// builds: type, 4-byte IAID, 2-byte DUID type, 2-byte hardware type,
	// 8-byte GUID.
	ClientIDLen = 1 + 4 + 2 + 2 + 8
)

// Errors. Callers test them with errors.Is.
var (
	// ErrMalformed means a message from the wire could not be decoded or
	// lacks what its type requires.
	ErrMalformed = errors.New("dhcp: malformed message")
	// ErrNoClientID means an IPoIB message arrived without the client
	// identifier RFC 4390 section 2.1 makes mandatory.
	ErrNoClientID = errors.New("dhcp: no client identifier")
	// ErrPoolExhausted means the server had no free address to offer.
	ErrPoolExhausted = errors.New("dhcp: address pool exhausted")
	// ErrBadConfig means a ClientConfig or ServerConfig is unusable.
	ErrBadConfig = errors.New("dhcp: invalid configuration")
	// ErrStopped means the client or server has been stopped.
	ErrStopped = errors.New("dhcp: stopped")
	// ErrGVisor wraps an error gVisor reported; its text is gVisor's.
	ErrGVisor = errors.New("dhcp: gVisor refused")
)

// DefaultIAID derives an IAID from a port GUID: its low 32 bits. RFC 4361
// section 6.1 wants an IAID that is stable and distinct per interface of
// a host; the ports of one HCA differ in exactly these bits, and a GUID
// does not change across reboots.
func DefaultIAID(guid ib.GUID) uint32 { return uint32(guid) }

// NewClientID returns the client identifier (option 61) of an IPoIB
// interface in RFC 4361 form: type 255, the IAID, then a DUID.
//
// The DUID is a DUID-LL (RFC 3315 section 9.4) with hardware type 32 and
// the port GUID as its link-layer address. The GUID is the part of an
// IPoIB address that belongs to the hardware (the QPN half changes every
// time the driver opens the port), so the identifier is the same across
// restarts and reboots and different for every port in the fabric. A
// DUID-LLT would need the time it was made kept in stable storage, a
// DUID-EN an enterprise number, and a DUID-UUID a UUID we would have to
// invent from the GUID anyway; DUID-LL needs nothing but the GUID.
func NewClientID(iaid uint32, guid ib.GUID) []byte {
	b := make([]byte, ClientIDLen)
	b[0] = clientIDTypeRFC4361
	binary.BigEndian.PutUint32(b[1:5], iaid)
	binary.BigEndian.PutUint16(b[5:7], duidTypeLL)
	binary.BigEndian.PutUint16(b[7:9], HTypeIPoIB)
	binary.BigEndian.PutUint64(b[9:17], uint64(guid))
	return b
}

// ParseClientID splits an RFC 4361 client identifier into its IAID and
// DUID. Other forms (type 0 or a hardware type) return ErrMalformed; the
// server accepts them as opaque keys all the same.
func ParseClientID(id []byte) (iaid uint32, duid []byte, err error) {
	// A DUID carries at least its 2-byte type and one byte of content.
	if len(id) < 1+4+3 || id[0] != clientIDTypeRFC4361 {
		return 0, nil, fmt.Errorf("parse client identifier %x: not type 255 with IAID and DUID (RFC 4361 section 6.1): %w", id, ErrMalformed)
	}
	return binary.BigEndian.Uint32(id[1:5]), id[5:], nil
}

// decode parses a DHCP message from the wire and checks what every
// message needs: a known op, a message type, and at most 16 bytes of
// hardware address. Everything else is the caller's to judge by type.
func decode(b []byte) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("decode DHCP message of %d bytes: %w: %v", len(b), ErrMalformed, err)
	}
	if m.OpCode != dhcpv4.OpcodeBootRequest && m.OpCode != dhcpv4.OpcodeBootReply {
		return nil, fmt.Errorf("decode DHCP message: op %d: %w", m.OpCode, ErrMalformed)
	}
	mt := m.MessageType()
	if mt < dhcpv4.MessageTypeDiscover || mt > dhcpv4.MessageTypeInform {
		return nil, fmt.Errorf("decode DHCP message: message type %d: %w", mt, ErrMalformed)
	}
	return m, nil
}

// newIPoIBMessage returns a message with the fields RFC 4390 section 2.1
// fixes for IPoIB: htype 32, hlen 0 (an empty chaddr, which the library
// writes as 16 zero bytes), and the BROADCAST flag of section 2.2.
func newIPoIBMessage(op dhcpv4.OpcodeType, xid dhcpv4.TransactionID, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	return &dhcpv4.DHCPv4{
		OpCode:        op,
		HWType:        iana.HWType(HTypeIPoIB),
		TransactionID: xid,
		Flags:         flagBroadcast,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  net.HardwareAddr{},
		Options:       dhcpv4.OptionsFromList(dhcpv4.OptMessageType(mt)),
	}
}

// ip4 converts an IPv4 netip.Addr to the 4-byte net.IP the library
// writes; anything else becomes 0.0.0.0.
func ip4(a netip.Addr) net.IP {
	if !a.Is4() {
		return net.IPv4zero.To4()
	}
	b := a.As4()
	return net.IP(b[:])
}

// addrOf converts a net.IP from a decoded message to netip; nil or a
// wrong length yields the invalid Addr.
func addrOf(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		return netip.AddrFrom4([4]byte(v4))
	}
	return netip.Addr{}
}

// addrsOf converts a list of IPs, dropping any that are not IPv4.
func addrsOf(ips []net.IP) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if a := addrOf(ip); a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// isUsableUnicast reports whether a may be handed to or used by a host:
// an IPv4 address that is not unspecified, limited broadcast, multicast
// or loopback.
func isUsableUnicast(a netip.Addr) bool {
	return a.Is4() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
