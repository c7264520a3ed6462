// The server's address book: the pool, the bindings of client identifiers
// to addresses, and the addresses declined as in use. Owned by the Server
// and used under its lock.

package dhcp

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// bindState is where a binding stands.
type bindState int

const (
	// bindOffered: an OFFER holds the address until expiry.
	bindOffered bindState = iota
	// bindBound: an ACK leased it until expiry.
	bindBound
	// bindReleased: the client gave it back (RELEASE) or let it lapse;
	// the record stays so the client gets the same address next time,
	// unless someone else has needed it meanwhile.
	bindReleased
)

var bindStateNames = [...]string{"offered", "bound", "released"}

// String names the state as the lease file spells it.
func (s bindState) String() string {
	if s >= 0 && int(s) < len(bindStateNames) {
		return bindStateNames[s]
	}
	return "unknown"
}

// binding ties one client to one address.
type binding struct {
	key    clientKey
	addr   netip.Addr
	state  bindState
	expiry time.Time
}

// active reports whether the binding still holds its address at now.
func (b *binding) active(now time.Time) bool {
	return b.state != bindReleased && now.Before(b.expiry)
}

// clientKey identifies a client: its client identifier (option 61), or,
// for a non-IPoIB client that sent none, its htype and chaddr (RFC 2131
// section 4.2). The first byte says which, so the two can never collide.
type clientKey string

const (
	keyClientID = 'i'
	keyHWAddr   = 'h'
)

// pool is the server's address book.
type pool struct {
	first, last uint32 // inclusive range, host order
	excluded    map[netip.Addr]bool
	next        uint32 // where the next search for a fresh address starts
	byKey       map[clientKey]*binding
	byAddr      map[netip.Addr]*binding
	declined    map[netip.Addr]time.Time // address -> bad until
}

// newPool returns an empty pool of first..last minus excluded.
func newPool(first, last netip.Addr, excluded []netip.Addr) *pool {
	p := &pool{
		first:    u32(first),
		last:     u32(last),
		excluded: make(map[netip.Addr]bool),
		byKey:    make(map[clientKey]*binding),
		byAddr:   make(map[netip.Addr]*binding),
		declined: make(map[netip.Addr]time.Time),
	}
	p.next = p.first
	for _, a := range excluded {
		p.excluded[a] = true
	}
	return p
}

// u32 and addrU32 convert between IPv4 addresses and integers.
func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addrU32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// contains reports whether a is an address the pool may hand out.
func (p *pool) contains(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	v := u32(a)
	return v >= p.first && v <= p.last && !p.excluded[a]
}

// size returns the number of addresses in the range, exclusions and all.
func (p *pool) size() uint64 { return uint64(p.last) - uint64(p.first) + 1 }

// isDeclined reports whether a is quarantined after a DECLINE at now,
// forgetting quarantines that are over.
func (p *pool) isDeclined(a netip.Addr, now time.Time) bool {
	until, ok := p.declined[a]
	if ok && !now.Before(until) {
		delete(p.declined, a)
		return false
	}
	return ok
}

// freeFor reports whether a may be given to key at now: in the pool, not
// declined, and not held by another client.
func (p *pool) freeFor(a netip.Addr, key clientKey, now time.Time) bool {
	if !p.contains(a) || p.isDeclined(a, now) {
		return false
	}
	b := p.byAddr[a]
	return b == nil || b.key == key || !b.active(now)
}

// choose picks the address to offer key (RFC 2131 section 4.3.1): the
// client's current or previous address, else the one it asked for, else
// a never-used address, else the one that lapsed longest ago. It returns
// false when the pool is exhausted.
func (p *pool) choose(key clientKey, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if b := p.byKey[key]; b != nil && p.freeFor(b.addr, key, now) {
		return b.addr, true
	}
	if requested.IsValid() && p.freeFor(requested, key, now) {
		return requested, true
	}
	var oldest *binding
	n := p.size()
	for i := uint64(0); i < n; i++ {
		v := p.next
		if p.next == p.last {
			p.next = p.first
		} else {
			p.next++
		}
		a := addrU32(v)
		if !p.contains(a) || p.isDeclined(a, now) {
			continue
		}
		b := p.byAddr[a]
		if b == nil {
			return a, true
		}
		if !b.active(now) && (oldest == nil || b.expiry.Before(oldest.expiry)) {
			oldest = b
		}
	}
	if oldest != nil {
		return oldest.addr, true
	}
	return netip.Addr{}, false
}

// set records that key holds a in state until expiry, dropping whatever
// binding key or a had before.
func (p *pool) set(key clientKey, a netip.Addr, state bindState, expiry time.Time) *binding {
	if old := p.byKey[key]; old != nil && old.addr != a {
		p.drop(old)
	}
	if old := p.byAddr[a]; old != nil && old.key != key {
		p.drop(old)
	}
	b := p.byKey[key]
	if b == nil {
		b = &binding{key: key, addr: a}
		p.byKey[key] = b
		p.byAddr[a] = b
	}
	b.state, b.expiry = state, expiry
	return b
}

// drop forgets b entirely.
func (p *pool) drop(b *binding) {
	if p.byKey[b.key] == b {
		delete(p.byKey, b.key)
	}
	if p.byAddr[b.addr] == b {
		delete(p.byAddr, b.addr)
	}
}
