// Package ipoib is ipoibd's IP-over-InfiniBand link layer (RFC 4391) and
// the driver that runs it on an InfiniBand port: the 4-byte encapsulation
// header, the peer cache that lets that header name 20-byte IPoIB
// addresses inside the host, Link, the netdev.LinkProtocol that ties the
// two together, and New, which puts a Link on a port of an ib.Device
// with a UD queue pair, the broadcast-group join, path resolution and
// port-event handling, behind a netdev.Device (Link.NetDev).
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
// Down: the destination is given once, to netdev, and travels in the
// frame from then on. Link.Push turns it into a key in the header; the
// driver reads that key back out of the header below netdev. netdev's
// batch interface needs nothing but the buffers, and no layer calls
// another to learn where a buffer goes.
//
//	netdev.Device.Transmit(b, dst, proto)
//	  -> Link.Push        enters dst and the interface's own address in
//	                      the cache, writes ethertype and both keys
//	  -> driver Transmit  PeerCache.TakeTx: reads the destination key out
//	                      of the header, claims it, zeroes the keys,
//	                      returns the Peer (path, address handle)
//	     unicast, path known:   posted on the peer's address handle (with
//	                            a GRH) to its QPN with the group's Q_Key
//	     unicast, no path yet:  parked in the peer's slot (MaxParked, 3,
//	                            at most; the 4th is dropped and counted as
//	                            tx_dropped_no_path and ipoib_pending_drops)
//	                            while a PathRecord query runs; sent when it
//	                            answers, dropped if it fails
//	     broadcast, multicast:  posted to QPN 0xFFFFFF on the group's
//	                            address handle (MLID, MGID, GRH); a group
//	                            never seen is joined on demand as a
//	                            send-only full member, its packets parked
//	                            meanwhile
//	  ... the send completion -> netdev.Device.TxComplete
//	                      Sends complete on a CQ of their own, armed on
//	                      demand (ib.ArmOnDemand): it is polled right
//	                      after the post (soft-RoCE completes a send
//	                      inside it) and by a bottom half after that, and
//	                      asks for an event only while sends are still in
//	                      flight then, so a send raises no wake-up of its
//	                      own where it completes at once.
//
// Up:
//
//	receive CQ handler    PeerCache.Settle, then per receive completion:
//	                      lend the QP's buffer up as a netdev buffer (no
//	                      copy; its Free reposts it, once a poll batch
//	                      as a rule, since the stack copies the packet out
//	                      and frees it within Receive); drop our own
//	                      multicast coming back (source QPN and GID or
//	                      LID are ours: rx_dropped_loopback); Link.
//	                      SetRxPeers enters the source (completion source
//	                      QPN + GRH source GID) and the destination (own
//	                      address, or the group for multicast) and writes
//	                      their keys. A datagram without a GRH is matched
//	                      to a peer by source LID and QPN among resolved
//	                      paths, or goes up with no source key.
//	  -> netdev.Device.Receive
//	  -> Link.Pull        claims both keys, returns the addresses (pointing
//	                      into the cache) and the ethertype
//
// # The broadcast group
//
// Opening the netdev on an ACTIVE port joins ff12:401b:<P_Key|0x8000>::
// ffff:ffff as a full member (MCMemberRecord Set). The join carries every
// component an SA needs to create the group if this port is the first
// (Q_Key, SL, FlowLabel, TClass, MTU and rate with "exactly" selectors,
// from Config); if the group exists with other parameters the SA refuses,
// and the port joins it again with only MGID, PortGID, P_Key and
// JoinState, taking the group as it is. From the answer come the Q_Key
// (set on the QP), MTU (netdev MTU = IB MTU - 4), SL, rate and MLID (the
// QP is attached, an address handle made); then the link comes up. Joins
// that fail or go unanswered are retried with a doubling backoff
// (Config.JoinBackoff up to JoinBackoffMax). Other multicast groups copy
// the broadcast group's parameters, as RFC 4391 asks: full members with
// the QP attached for JoinMulticast, send-only full members for groups
// joined on demand by transmit, which need no receive path and are left
// after a PathTimeout without traffic. Closing the netdev leaves every
// group (MCMemberRecord Delete) and detaches the QP; Link.Leave does that
// and tells when the SA has answered every leave, so that a link taken
// down for good leaves no stale member at the subnet manager.
//
// # Paths
//
// A unicast peer's path (LID, SL, rate, MTU and an address handle) comes
// from a PathRecord Get by GID and lives in the peer's slot, so it goes
// when the peer is evicted; the eviction hook cancels a query in flight
// and retires the handle, which is destroyed once no posted send can
// still use it. A path older than Config.PathTimeout is marked stale by
// a periodic scan: the next packet still goes out on it and asks the SA
// again. A datagram that arrives from a peer at another LID than its
// path's (a peer whose LID changed without telling us) drops the path,
// so the next packet waits for a fresh one instead of going nowhere.
//
// # Port events
//
// Events are coalesced in a bottom half and handled at the heaviest
// level asked for, the three levels Linux's IPoIB uses:
//
//   - light (SM change, client reregister): paths are marked stale and
//     refreshed on next use, groups are joined again (an SM that restarted
//     has forgotten them); the link stays up and traffic keeps flowing.
//   - normal (port down or active, LID change, GID change): light, plus
//     every group is forgotten and detached, every path and its waiting
//     packets dropped, the interface address re-read, and the link is
//     down until the broadcast group is joined again.
//   - heavy (P_Key change): normal, plus the P_Key's index is looked up
//     again and the QP re-created if it moved (a UD QP is bound to an
//     index, not a key); the new QPN changes the interface address.
//
// Every flush re-reads the port and points the SA client at the current
// SM (SAClient.UpdatePort). Nothing has to be restarted.
//
// A device that fails as a whole (ib.EventDeviceFatal) is the exception:
// the link goes down for good, with a reason that wraps ib.ErrDeviceFatal,
// and its owner closes the link and the device and opens them again.
//
// # RoCE ports
//
// The kernel's IPoIB refuses Ethernet link-layer ports; this driver runs
// on them (roce.go). With no SM there is nothing to ask, so what the SA
// would hand out is decided locally, identically on every host: a group
// is joined by attaching the QP to its MGID with MLID 0 (the verbs driver
// adds the IP-level IPv6 group join the kernel needs to deliver it), the
// group's Q_Key is Config.QKey, its MTU the port's active MTU (so the IP
// MTU follows the NIC's: 1020 on a 1500-byte Ethernet), and a unicast
// path is a GRH address vector to the peer's GID with hop limit 1 and LID
// 0, made on the spot for the first packet. Every datagram carries a GRH
// (RoCE has nothing else), so receives always key the sender by GID; the
// loopback check compares GIDs only, as every port's LID is 0. Port events
// flush as on IB, and the local "join" after them is immediate. Use the
// link-local GID (index 0, the default): multicast must be sent from it,
// so a sender's IPoIB address has to carry it for receivers to match.
//
// # Keys are never reused under a packet
//
// With 255 keys and more peers than that on a fabric, keys are recycled:
// the least recently used peer gives up its slot. The sender of a
// multicast datagram enters at the least recently used end, so on a
// large subnet the hosts that broadcast take each other's slots rather
// than those of the peers this host exchanges unicast with. A packet must never be
// sent to the peer that took over its destination's key. Two rules see to
// it, one for each place a key can be:
//
//   - A key that sits in a header carries nothing beside it, so its peer is
//     protected by refusal: a peer entered since the last key was claimed
//     out of a header (PeerCache.Claim, which TakeTx and Pull call, or
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
// A PeerCache, its Link and the driver belong to the device's event loop.
// As elsewhere in ipoibd, control.go holds the calls that change
// configuration (eviction hook, pins, removal, P_Key, the driver's New
// and Close, netdev Open and Close, multicast membership, snapshots),
// which assert the loop on every call, and io.go the per-packet calls
// (Push, Pull, TakeTx, SetRxPeers, the driver's transmit and completion
// handling), which check it only in -race builds and allocate nothing in
// steady state. join.go, path.go and events.go hold the driver's control
// machinery. Header codecs in header.go are pure functions, safe
// anywhere; Link's Broadcast, AddrString, Multicast, NetDev and Group are
// safe from any goroutine.
package ipoib
