package ipoib

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// LinkName is the name the IPoIB link protocol reports to netdev, logs
// and stats.
const LinkName = "ipoib"

// IPMTU returns the IP MTU of an IPoIB link whose broadcast group has IB
// MTU m: the UD payload less the 4-byte encapsulation header (RFC 4391
// section 6), so 2044 for 2048 and 4092 for 4096.
func IPMTU(m ib.MTU) (int, error) {
	if !m.Valid() {
		return 0, fmt.Errorf("IPoIB MTU for IB MTU code %d: not a defined MTU: %w", uint8(m), ib.ErrFieldRange)
	}
	return m.Bytes() - HeaderLen, nil
}

// Link is the IPoIB link protocol, a netdev.LinkProtocol: the 4-byte
// header of RFC 4391 with the peer keys inside the host, 20-byte
// addresses, and the partition's broadcast and multicast mappings. It
// shares its PeerCache, and that cache's loop, with the driver.
type Link struct {
	cache *PeerCache
	bcast atomic.Pointer[[AddrLen]byte]
	pkey  atomic.Uint32

	// srcMemo is the key of the last source Push entered. Nearly every
	// frame sent carries the interface's own address as its source, so
	// this spares the index one look-up per packet. Loop-owned.
	srcMemo Key

	// Prebuilt errors for the per-packet refusals.
	errNoHeadroom, errTxNoPeer, errRxUnknown error

	// d runs the link on a port (New); nil for the protocol alone
	// (NewProtocol).
	d *driver
}

var _ netdev.LinkProtocol = (*Link)(nil)

// NewProtocol returns the IPoIB link protocol alone, over cache for
// partition pkey (with or without the full-member bit): the header, the
// addresses and the mappings, with no port under them, for tools that
// read or write frames and for tests. New is the link on a port. Safe
// from any goroutine.
func NewProtocol(cache *PeerCache, pkey ib.PKey) (*Link, error) {
	if cache == nil {
		return nil, fmt.Errorf("new IPoIB link: no peer cache: %w", netdev.ErrInvalidConfig)
	}
	l := &Link{cache: cache}
	if err := l.setPKey(pkey); err != nil {
		return nil, fmt.Errorf("new IPoIB link: %w", err)
	}
	l.errNoHeadroom = fmt.Errorf("ipoib push: %d-byte header: %w", HeaderLen, netdev.ErrNoHeadroom)
	l.errTxNoPeer = fmt.Errorf("ipoib transmit: destination key names no peer: %w", netdev.ErrNoPeer)
	l.errRxUnknown = fmt.Errorf("ipoib pull: header key names no peer: %w", netdev.ErrUnknownKey)
	return l, nil
}

func (l *Link) setPKey(pkey ib.PKey) error {
	if !pkey.Valid() {
		return fmt.Errorf("P_Key %v names the invalid partition 0: %w", pkey, netdev.ErrInvalidConfig)
	}
	var raw [AddrLen]byte
	_ = BroadcastAddr(pkey).Encode(raw[:]) // cannot fail: multicast QPN fits 24 bits
	l.pkey.Store(uint32(pkey | ib.PKeyFullMember))
	l.bcast.Store(&raw)
	return nil
}

// Cache returns the peer cache the link keys its headers with.
func (l *Link) Cache() *PeerCache { return l.cache }

// PKey returns the link's partition key, full-member bit set.
func (l *Link) PKey() ib.PKey { return ib.PKey(l.pkey.Load()) }

// Name returns "ipoib".
func (l *Link) Name() string { return LinkName }

// HeaderLen returns 4.
func (l *Link) HeaderLen() int { return HeaderLen }

// AddrLen returns 20.
func (l *Link) AddrLen() int { return AddrLen }

// Push prepends the IPoIB header for a packet of type proto from src to
// dst, entering both addresses in the peer cache and writing their keys
// into the reserved bytes. The driver takes the frame with TxPeer, which
// zeroes the keys before the frame reaches the wire. Push fails with
// netdev.ErrBadAddr for an address that is not 20 bytes,
// netdev.ErrNoHeadroom, and netdev.ErrNoPeer (with ErrCacheFull) when
// the cache has no slot to give.
func (l *Link) Push(b *netdev.Buffer, dst, src []byte, proto uint16) error {
	l.cache.checkIO("ipoib.Link.Push")
	if len(dst) != AddrLen || len(src) != AddrLen {
		return fmt.Errorf("ipoib push: %d-byte destination and %d-byte source, want %d: %w", len(dst), len(src), AddrLen, netdev.ErrBadAddr)
	}
	if b.Headroom() < HeaderLen {
		// Checked before the cache changes, so a refused packet leaves no
		// trace there.
		return l.errNoHeadroom
	}
	dk, err := l.cache.enterKey((*[AddrLen]byte)(dst))
	if err != nil {
		return err
	}
	sk, err := l.cache.enterMemo((*[AddrLen]byte)(src), &l.srcMemo)
	if err != nil {
		return err
	}
	h, _ := b.Push(HeaderLen) // cannot fail: the headroom was checked
	Header{Type: proto, DstKey: dk, SrcKey: sk}.put(h)
	return nil
}

// Pull removes the IPoIB header, which the driver has keyed with
// SetRxPeers, and returns the destination and source addresses and the
// ethertype. The addresses point into the peer cache and keep their value
// until their slots are reused, which only a later Enter of a new address
// can do; a receiver that keeps them beyond the packet copies them. A
// source key of NoKey, which the driver writes when it cannot tell the
// sender (a datagram without a GRH from a LID it has no path to), yields
// a nil source. Pull fails with netdev.ErrShort, netdev.ErrBadHeader, or
// netdev.ErrUnknownKey for a key that names no peer (a destination of
// NoKey included: a frame whose keys were never set has NoKey in both),
// leaving b unchanged.
func (l *Link) Pull(b *netdev.Buffer) (dst, src []byte, proto uint16, err error) {
	l.cache.checkIO("ipoib.Link.Pull")
	if b.Len() < HeaderLen {
		return nil, nil, 0, fmt.Errorf("ipoib pull: %d-byte frame, header is %d: %w", b.Len(), HeaderLen, netdev.ErrShort)
	}
	p, _ := b.Peek(HeaderLen) // cannot fail: the length was checked
	// The header is decoded here rather than through Header.Decode, to
	// save the per-packet calls; FuzzPullHeader holds the two to the same
	// answers.
	proto = binary.BigEndian.Uint16(p[typeOffset:])
	if proto < minEtherType {
		return nil, nil, 0, fmt.Errorf("ipoib pull: type %#04x is below %#04x: %w", proto, minEtherType, netdev.ErrBadHeader)
	}
	dk, sk := Key(p[DstKeyOffset]), Key(p[SrcKeyOffset])
	c := l.cache
	dok := c.claimKey(dk)
	// NoKey as the source means the driver could not tell who sent the
	// frame (no GRH and an unknown LID): it goes up without a source.
	sok := sk == NoKey || c.claimKey(sk)
	if !dok || !sok {
		return nil, nil, 0, l.errRxUnknown
	}
	_, _ = b.Pull(HeaderLen) // cannot fail: the length was checked
	const n = AddrLen
	if sk == NoKey {
		return c.addrs[dk][:n:n], nil, proto, nil
	}
	return c.addrs[dk][:n:n], c.addrs[sk][:n:n], proto, nil
}

// Broadcast returns the IPoIB broadcast address of the link's partition:
// no flags, QPN 0xFFFFFF and the MGID ff12:401b:<P_Key|0x8000>::ffff:ffff
// (RFC 4391 section 4). Callers must not modify it.
func (l *Link) Broadcast() []byte {
	return l.bcast.Load()[:]
}

// AddrString formats a 20-byte address the way Linux prints an IPoIB
// hardware address, twenty colon-separated hex octets. Anything else is
// shown as bad-ipoib-addr(<hex>).
func (l *Link) AddrString(addr []byte) string {
	if len(addr) != AddrLen {
		return "bad-ipoib-addr(" + hex.EncodeToString(addr) + ")"
	}
	var a Addr
	_ = a.Decode(addr) // cannot fail: the length is right
	return a.String()
}

// Multicast appends to dst the IPoIB address an IP multicast group maps
// to in the link's partition: QPN 0xFFFFFF and the MGID
// ff12:401b:<P_Key|0x8000>::<low 28 bits> for IPv4 or
// ff12:601b:<P_Key|0x8000>:<low 80 bits> for IPv6 (RFC 4391 section 4).
// Other addresses yield an error wrapping netdev.ErrNoMulticast; the IPv4
// limited broadcast is not a group, it goes to Broadcast.
func (l *Link) Multicast(group netip.Addr, dst []byte) ([]byte, error) {
	var (
		mgid ib.GID
		err  error
	)
	switch {
	case group.Is4():
		mgid, err = IPv4MulticastGID(l.PKey(), group)
	case group.Is6() && !group.Is4In6():
		mgid, err = IPv6MulticastGID(l.PKey(), group)
	default:
		err = fmt.Errorf("no IP address")
	}
	if err != nil {
		return dst, fmt.Errorf("ipoib multicast address for %v: %w: %w", group, netdev.ErrNoMulticast, err)
	}
	var raw [AddrLen]byte
	_ = MulticastAddr(mgid).Encode(raw[:]) // cannot fail: multicast QPN fits 24 bits
	return append(dst, raw[:]...), nil
}
