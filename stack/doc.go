// Package stack joins an IPoIB network device to gVisor's netstack, so a
// process gets IPv4, ICMP, TCP and UDP on an InfiniBand fabric. It is the
// only ipoibd package that imports gVisor: below it, netdev and ipoib
// speak only frames and 20-byte IPoIB addresses.
//
// # Pieces
//
//   - Endpoint: a gVisor stack.LinkEndpoint over a *netdev.Device.
//   - ARPProtocol: ARP over IPoIB (RFC 4391 section 9.1) as a gVisor
//     network protocol whose endpoints are gVisor LinkAddressResolvers;
//     the 56-byte packet and the rules for learning and answering are
//     package ipoib/arp's, applied here to gVisor's neighbour cache.
//   - NewStack and Stack: a gVisor stack with one such NIC, a static IPv4
//     address and routes, IPv4, ICMP, TCP, UDP and ARPProtocol.
//   - Ping: ICMP echo through a gVisor ICMP endpoint, with RTT statistics.
//   - A pcap tap (EndpointOptions.Pcap) writing LINKTYPE_IPOIB captures
//     in the 44-byte form tshark reads.
//   - Receive filters (Endpoint.AddFilter): what a protocol that owns a
//     port can refuse before gVisor parses it, as a socket filter does;
//     the DHCP client refuses other clients' broadcast replies there.
//
// # How a packet flows
//
// Down, from any goroutine gVisor sends on:
//
//	gVisor route -> Endpoint.WritePackets
//	  map the link destination (20-byte address; or a 6-byte Ethernet
//	  broadcast or multicast address gVisor made up itself, mapped to
//	  the IPoIB broadcast or group address)
//	  append a reference to the packet to the bounded transmit queue
//	  (full: counted and dropped), schedule the transmit bottom half
//	... on the device's loop ...
//	transmit BH: take as many packets as the device queue has room for,
//	  copy each into a device buffer, release gVisor's reference, pcap,
//	  netdev.Device.TransmitBatch -> LinkProtocol.Push (IPoIB header)
//	  -> driver; run again next pass if packets remain
//
// Up, on the device's loop:
//
//	driver -> netdev.Device.Receive -> LinkProtocol.Pull
//	  -> the Endpoint's receiver: pcap, the filters (a refusal is
//	     counted as rx_filtered and the buffer freed), copy into a gVisor
//	     PacketBuffer (typed host, broadcast or multicast by its link
//	     destination), free the device buffer (the driver's receive
//	     buffer, which goes back to its QP)
//	  -> ARP, and IPv4 but TCP: NetworkDispatcher.DeliverNetworkPacket
//	     at once
//	  -> TCP/IPv4: gVisor's GRO engine (gro.go), which holds the
//	     segments; consecutive segments of a flow that arrive in one
//	     pass of the loop are merged, and a
//	     bottom half delivers what is held when the pass's frames are
//	     in, through a sink that mends the merged segments' IPv4 and TCP
//	     checksums (EndpointOptions.NoGRO turns it off)
//	  -> NetworkDispatcher.DeliverNetworkPacket (gVisor's IPv4)
//
// Coalescing pays because gVisor's TCP costs per segment, not per byte:
// a merged segment runs its receive path, and is acknowledged, once.
//
// Each direction copies a packet once, between gVisor's buffers and the
// device's (its pool on the way down, the QP's receive buffers on the
// way up); the device buffers come from a fixed pool and the queue
// is preallocated, so the endpoint allocates nothing per packet. The
// queue holds gVisor's buffers rather than device buffers so that it can
// absorb a TCP burst (DefaultTxQueueLen) while the loop wakes, without
// the device's pool having to be sized for it.
//
// # Why our own ARP
//
// gVisor's arp package knows only Ethernet: 6-byte hardware addresses
// and hardware type 1. IPoIB ARP carries 20-byte addresses under hardware
// type 32. Rather than rewrite neighbour resolution, ARPProtocol speaks
// the IPoIB packet (ipoib/arp) and feeds gVisor's neighbour cache through the
// NetworkInterface (HandleNeighborProbe for requests,
// HandleNeighborConfirmation for replies), so gVisor's NUD state machine,
// retransmissions and queues of packets waiting for an address are
// reused. gVisor's arp must not be registered on IPoIB NICs. gVisor still
// invents Ethernet addresses in a few places (subnet broadcasts, IGMP
// reports); the Endpoint maps those, which is why it reads the IP
// destination of a multicast packet: the Ethernet form keeps only 23 bits
// of the group, the IPoIB MGID needs 28.
//
// # Goroutines
//
// gVisor calls the Endpoint's LinkEndpoint methods from its own
// goroutines; all are safe for that. The device belongs to its aio loop,
// so the Endpoint never calls into it from elsewhere: transmission goes
// through a bottom half, configuration (receiver, group joins through
// LinkGroups) through one-shot bottom halves, and receive runs on the
// loop already. io.go holds the data path and control.go the rest, each
// with its rule at the top. Because gVisor delivers received packets on
// the calling goroutine, IPv4, ICMP and ARP processing of a received
// frame runs on the device's loop; TCP hands segments to its own
// goroutines. Nothing the loop calls may wait for the loop: helpers that
// wait for it (JoinGroup, NewStack's callers) must run elsewhere.
package stack
