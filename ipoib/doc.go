// Package ipoib is ipoibd's IP-over-InfiniBand link layer (RFC 4391): the
// 4-byte encapsulation header, the peer cache that lets that header name
// 20-byte IPoIB addresses inside the host, and Link, the
// netdev.LinkProtocol that ties the two together. The driver that runs
// the link on an IB port (broadcast join, path resolution, port events)
// builds on these pieces.
//
// # The header and its keys
//
// On the wire an IPoIB frame starts with an ethertype and two reserved
// bytes that are zero (RFC 4391 section 6). The addresses are not in it:
// the destination is in the address handle a send is posted with, the
// source in the GRH and the completion. Yet netdev, like every layer above
// a link, wants to hand a frame and its link addresses around together.
//
// An IPoIB address is 20 bytes, too big for the header. One way out is a
// pseudo-header: push a 40-byte block of both addresses in front of the
// real header and strip it before the hardware sees it. That needs 40
// spare bytes in front of every received frame, and not every HCA leaves
// its receive buffers with that much room before the data. So instead
// the two reserved bytes are put to work while the frame is in the host:
// byte 2 carries a one-byte key for the destination and byte 3 a key for
// the source, each naming a slot of the PeerCache where the full address
// and the path to it are kept. Before a frame leaves, the keys are zeroed;
// when one arrives, its addresses are entered and their keys written in.
// The idea is gPXE's; its cache held four peers, ours holds 255.
//
// # How a packet moves
//
// Down:
//
//	netdev.Device.Transmit(b, dst, proto)
//	  -> Link.Push        enters dst and the interface's own address in
//	                      the cache, writes ethertype and both keys
//	  -> driver Transmit  Link.TxPeer: claims the destination key, zeroes
//	                      the keys, returns the Peer (path, address handle)
//	                      -> post the send now, or Park it in the peer's
//	                      slot until its path is known, or hold the
//	                      peer's Ref in a queue and Resolve it later
//
// Up:
//
//	driver completion     pulls the GRH, then Link.SetRxPeers: enters the
//	                      source (completion source QPN + GRH source GID)
//	                      and the destination (own address, or the group
//	                      for multicast), writes their keys
//	  -> netdev.Device.Receive
//	  -> Link.Pull        claims both keys, returns the addresses (pointing
//	                      into the cache) and the ethertype
//
// # Keys are never reused under a packet
//
// With 255 keys and more peers than that on a fabric, keys are recycled:
// the least recently used peer gives up its slot. A packet must never be
// sent to the peer that took over its destination's key. Two rules see to
// it, one for each place a key can be:
//
//   - A key that sits in a header carries nothing beside it, so its peer is
//     protected by refusal: a peer entered since the last key was claimed
//     out of a header (PeerCache.Claim, which TxPeer and Pull call, or
//     Settle) is not evicted. The window is the short stretch between Push
//     and the driver taking the frame (a TransmitBatch at most); only if
//     every peer were entered within it would a new address be refused,
//     and that packet is dropped with ErrCacheFull, not misdelivered.
//   - Past that point a packet is kept by the peer's Ref, a key and the
//     slot's generation, which moves on whenever the slot is emptied.
//     PeerCache.Resolve at send time returns ErrStalePeer for a reused
//     slot, the packet is dropped, and the device counts it as
//     tx_dropped_stale_peer. Refusing eviction here instead would let slow
//     peers with queued packets hold every slot and shut new ones out.
//
// Packets parked in a peer's own slot while its path is resolved (at most
// MaxParked each), and pinned peers (the interface's address, joined
// groups), keep their slots: they are never evicted.
//
// Broadcast and multicast groups are ordinary peers keyed by their
// address, QPN 0xFFFFFF plus the MGID, so no key value is special except
// NoKey (0), which is what the reserved bytes hold on the wire.
//
// # Loops
//
// A PeerCache and its Link belong to the device's event loop. As
// elsewhere in ipoibd, control.go holds the calls that change
// configuration (eviction hook, pins, removal, P_Key), which assert the
// loop on every call, and io.go the per-packet calls, which check it only
// in -race builds. Header codecs in header.go are pure functions, safe
// anywhere; Link's Broadcast, AddrString and Multicast are safe from any
// goroutine, as netdev.LinkProtocol requires.
package ipoib
