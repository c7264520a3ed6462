package dhcp

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// InfiniteLease is the Duration of a lease that never expires: the lease
// time 0xffffffff of RFC 2132 section 9.2.
const InfiniteLease = time.Duration(1<<63 - 1)

// leaseTimeInfinite is the option 51 value meaning "forever" (RFC 2132
// section 9.2).
const leaseTimeInfinite = 0xffffffff

// Default renewal and rebinding points as fractions of the lease, for a
// server that sends neither option 58 nor 59 (RFC 2131 section 4.4.5).
const (
	t1Fraction = 0.5
	t2Fraction = 0.875
)

// Lease is what the client holds after an ACK: the address, the
// configuration that came with it, and its timers. A Lease is a value;
// the client hands out copies.
type Lease struct {
	// Addr is the leased address with the subnet of option 1.
	Addr netip.Prefix
	// Router is the first router of option 3 that lies in the subnet,
	// installed as the default route; invalid when there is none.
	Router netip.Addr
	// DNS lists the name servers of option 6.
	DNS []netip.Addr
	// DomainName is option 15.
	DomainName string
	// ServerID is the server identifier (option 54), where renewals go.
	ServerID netip.Addr
	// Duration is the lease time (option 51), InfiniteLease for ever.
	Duration time.Duration
	// T1 and T2 are the renewal and rebinding times (options 58 and 59,
	// or the defaults of RFC 2131 section 4.4.5), measured from Start.
	T1, T2 time.Duration
	// Start is when the client sent the REQUEST the ACK answered, which
	// RFC 2131 section 4.4.1 makes the lease's origin so that the time
	// the messages spent in flight shortens the lease rather than
	// lengthening it.
	Start time.Time
}

// Infinite reports whether the lease never expires.
func (l *Lease) Infinite() bool { return l.Duration == InfiniteLease }

// Expiry returns when the lease runs out; the zero Time for an infinite
// lease.
func (l *Lease) Expiry() time.Time {
	if l.Infinite() {
		return time.Time{}
	}
	return l.Start.Add(l.Duration)
}

// RenewAt and RebindAt return the absolute times of T1 and T2; the zero
// Time for an infinite lease.
func (l *Lease) RenewAt() time.Time {
	if l.Infinite() {
		return time.Time{}
	}
	return l.Start.Add(l.T1)
}

// RebindAt returns the absolute time of T2; see RenewAt.
func (l *Lease) RebindAt() time.Time {
	if l.Infinite() {
		return time.Time{}
	}
	return l.Start.Add(l.T2)
}

// clone returns a copy that shares nothing with l.
func (l *Lease) clone() Lease {
	c := *l
	c.DNS = slices.Clone(l.DNS)
	return c
}

// String formats the lease for logs.
func (l Lease) String() string {
	d := l.Duration.String()
	if l.Infinite() {
		d = "infinite"
	}
	return fmt.Sprintf("%v router %v dns %v server %v lease %s", l.Addr, l.Router, l.DNS, l.ServerID, d)
}

// leaseFromAck builds the lease an ACK grants, counted from start. It
// refuses an ACK that lacks what a lease needs: a usable yiaddr, a server
// identifier and a lease time (RFC 2131 section 4.3.1, table 3, makes the
// server send both options in an ACK to a REQUEST).
func leaseFromAck(ack *dhcpv4.DHCPv4, start time.Time) (*Lease, error) {
	addr := addrOf(ack.YourIPAddr)
	if !isUsableUnicast(addr) {
		return nil, fmt.Errorf("lease from ACK: yiaddr %v: %w", ack.YourIPAddr, ErrMalformed)
	}
	server := addrOf(ack.ServerIdentifier())
	if !isUsableUnicast(server) {
		return nil, fmt.Errorf("lease from ACK: server identifier %v: %w", ack.ServerIdentifier(), ErrMalformed)
	}
	raw := ack.Options.Get(dhcpv4.OptionIPAddressLeaseTime)
	if len(raw) != 4 {
		return nil, fmt.Errorf("lease from ACK: lease time option of %d bytes: %w", len(raw), ErrMalformed)
	}
	bits, err := maskBits(ack, addr)
	if err != nil {
		return nil, err
	}
	l := &Lease{
		Addr:       netip.PrefixFrom(addr, bits),
		DNS:        addrsOf(ack.DNS()),
		DomainName: ack.DomainName(),
		ServerID:   server,
		Start:      start,
	}
	for _, r := range addrsOf(ack.Router()) {
		if isUsableUnicast(r) && r != addr && l.Addr.Masked().Contains(r) {
			l.Router = r
			break
		}
	}
	secs := uint32(raw[0])<<24 | uint32(raw[1])<<16 | uint32(raw[2])<<8 | uint32(raw[3])
	if secs == leaseTimeInfinite {
		l.Duration = InfiniteLease
		return l, nil
	}
	if secs == 0 {
		return nil, fmt.Errorf("lease from ACK: lease time 0: %w", ErrMalformed)
	}
	l.Duration = time.Duration(secs) * time.Second
	l.T1 = time.Duration(float64(l.Duration) * t1Fraction)
	l.T2 = time.Duration(float64(l.Duration) * t2Fraction)
	// Take the server's T1 and T2 only when they are in order; a server
	// that gets them wrong must not leave the client without a chance
	// to renew before the lease runs out.
	t1 := ack.IPAddressRenewalTime(0)
	t2 := ack.IPAddressRebindingTime(0)
	if t2 > 0 && t2 < l.Duration {
		l.T2 = t2
	}
	if t1 > 0 && t1 < l.T2 {
		l.T1 = t1
	}
	if l.T1 >= l.T2 {
		l.T1 = time.Duration(float64(l.T2) * t1Fraction / t2Fraction)
	}
	return l, nil
}

// maskBits returns the prefix length of option 1, or the address's
// classful length when the server sent none (the fallback RFC 1122
// section 3.3.1.1 era hosts used). A non-contiguous mask is malformed.
func maskBits(m *dhcpv4.DHCPv4, addr netip.Addr) (int, error) {
	raw := m.Options.Get(dhcpv4.OptionSubnetMask)
	if raw == nil {
		switch b := addr.As4(); {
		case b[0] < 128:
			return 8, nil
		case b[0] < 192:
			return 16, nil
		default:
			return 24, nil
		}
	}
	if len(raw) != 4 {
		return 0, fmt.Errorf("subnet mask option of %d bytes: %w", len(raw), ErrMalformed)
	}
	mask := uint32(raw[0])<<24 | uint32(raw[1])<<16 | uint32(raw[2])<<8 | uint32(raw[3])
	bits := 0
	for bits < 32 && mask&(1<<(31-bits)) != 0 {
		bits++
	}
	if bits == 0 || mask<<bits != 0 {
		// A mask of zero would put the whole Internet on-link.
		return 0, fmt.Errorf("subnet mask %x: %w", raw, ErrMalformed)
	}
	return bits, nil
}
