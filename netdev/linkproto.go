package netdev

import "net/netip"

// LinkProtocol is a link layer: it knows the header format and the
// addresses of one kind of link (IPoIB, Ethernet) and nothing about the
// hardware that carries it. The Device calls Push on the way down and Pull
// on the way up; the layers above use the rest to speak about addresses.
//
// Link addresses are byte slices of AddrLen bytes (20 for IPoIB, 6 for
// Ethernet). Push and Pull run on the device's loop, once per packet: they
// must not allocate on success and must not keep the slices they are given.
// The other methods describe the link and may be called from any goroutine
// (the stack layer formats and maps addresses off the loop), so they must
// be safe for concurrent use.
type LinkProtocol interface {
	// Name is a short lower-case name for logs and stats ("ipoib").
	Name() string
	// HeaderLen is the length of the link header Push adds and Pull
	// removes.
	HeaderLen() int
	// AddrLen is the length of a link address.
	AddrLen() int
	// Push prepends the link header for a packet from src to dst carrying
	// network protocol proto (an ethertype). It fails with an error
	// wrapping ErrNoHeadroom when b lacks room, ErrBadAddr for a malformed
	// address, and ErrNoPeer when the protocol cannot name dst in its
	// header (a full peer table).
	Push(b *Buffer, dst, src []byte, proto uint16) error
	// Pull removes the link header and returns the destination and source
	// addresses and the network protocol. The address slices may point
	// into the buffer's headroom or into the protocol's own tables; they
	// are valid until the buffer is freed or the loop moves on to another
	// packet, so a receiver that keeps them copies them. Errors wrap
	// ErrShort (frame shorter than the header), ErrBadHeader or
	// ErrUnknownKey, which the Device counts separately.
	Pull(b *Buffer) (dst, src []byte, proto uint16, err error)
	// Broadcast returns the link broadcast address. Callers must not
	// modify it.
	Broadcast() []byte
	// AddrString formats a link address the way the link's tools print it.
	// It accepts any length and says so when the length is wrong.
	AddrString(addr []byte) string
	// Multicast appends to dst the link address that IP multicast group
	// group maps to, and returns the extended slice. An IPv4 mapping is
	// required; IPv6 is optional. Groups it cannot map yield an error
	// wrapping ErrNoMulticast.
	Multicast(group netip.Addr, dst []byte) ([]byte, error)
}

// MTUOverheader is implemented by a LinkProtocol whose frames need bytes
// beyond HeaderLen out of the device's frame budget (a trailer, a
// pseudo-header the hardware needs). Without it the overhead is zero.
type MTUOverheader interface {
	// MTUOverhead is the number of frame bytes beyond the header that a
	// network-layer packet cannot use.
	MTUOverhead() int
}

// MTUOverhead returns lp's extra per-frame overhead: MTUOverheader's value
// if lp implements it (negative values count as zero), else zero.
func MTUOverhead(lp LinkProtocol) int {
	if o, ok := lp.(MTUOverheader); ok {
		return max(o.MTUOverhead(), 0)
	}
	return 0
}

// FrameLen returns the largest frame a device with link protocol lp and
// network MTU mtu hands its driver: header, payload and overhead.
func FrameLen(lp LinkProtocol, mtu int) int {
	return lp.HeaderLen() + mtu + MTUOverhead(lp)
}
