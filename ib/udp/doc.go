// Package udp is a userspace RoCEv2 driver: InfiniBand UD queue pairs
// carried in UDP (port 4791) on an ordinary network interface, with no
// RDMA stack in the kernel. It interoperates with the kernel's soft-RoCE
// (rdma_rxe) and with RoCE NICs on the same Ethernet, so ipoibd runs
// between two network namespaces, containers or plain hosts.
//
// It registers itself in the ib driver table as "udp"; every interface
// with an IPv4 address is a device, named after the interface ("udp:eth0"
// on the command line).
//
// # The device
//
// One port, Ethernet link layer (so the layers above resolve paths and
// groups locally, as on any RoCE port), LID 0, no SM. Its GID table
// follows rdma_rxe's: index 0 the interface's IPv6 link-local address as
// a GID (zero while it has none), index 1 the IPv4-mapped GID
// (::ffff:a.b.c.d) of its IPv4 address. The P_Key table holds the default
// partition 0xFFFF. The active MTU is the largest IB MTU that fits the
// interface MTU after the IPv6, UDP, BTH, DETH and ICRC headers, as rxe
// computes it (1500 gives 1024). The port is ACTIVE while the interface
// is up and running and has its link-local address (multicast needs it);
// the device reads the interface once a second and reports changes as
// port events.
//
// # On the wire
//
// A datagram is IPv4 or IPv6, UDP to port 4791, BTH, DETH, payload, pad
// and ICRC (ib.ICRCRoCEv2). The address family follows the destination
// GID, as rxe's does: an IPv4-mapped DGID is sent over IPv4 from the
// interface's IPv4 address, any other over IPv6 from its link-local one.
// A multicast GID is an IPv6 multicast address as it stands (the IPoIB
// broadcast group ff12:401b:ffff::ffff:ffff goes to that IPv6 address),
// and attaching a QP joins that IPv6 group on the interface, without which
// the kernel would not deliver it. docs/protocol.md gives the kernel
// functions this follows.
//
// Sends go through UDP sockets bound to the interface's addresses and
// port 4791; the kernel writes the IP and UDP headers, routes and
// resolves neighbours. The ICRC covers the IPv4 identification field,
// which the sender must therefore know: the sockets set Don't Fragment,
// and the kernel gives an unconnected socket's DF datagrams the ID 0;
// opening a device checks that on the running kernel by sending itself a
// datagram (selfTest4).
// Receives go through raw sockets, which see the IP header the ICRC
// covers (for IPv6 it is rebuilt from the source address and
// IPV6_PKTINFO); socket filters keep the rest of the host's UDP traffic
// in the kernel. Raw sockets need CAP_NET_RAW. Several processes may
// open one interface: each raw socket gets every datagram, and each
// process keeps those for its own QPNs (chosen at random per device).
// Multicast is not looped back by the kernel: the device hands its own
// multicast to its other attached QPs, but other processes on the same
// host do not see it.
//
// Every datagram is checked as an HCA checks it: ICRC, versions and
// lengths, UD SEND opcode, then the receiving QP's P_Key and Q_Key.
// Failures are counted (Counters) and dropped.
//
// # Speed
//
// Receives arrive in recvmmsg batches of up to 64 (one batch per wake-up,
// so that the completion handlers repost buffers between batches) and
// sends leave in sendmmsg batches of what one PostSend call queued, both
// on the device's aio loop with non-blocking sockets; nothing is
// allocated per datagram (BenchmarkUDRoundTrip: 0 allocs/op). UDP GSO and GRO are not used: GRO would merge
// datagrams whose IPv4 IDs (and so ICRCs) differ, and a GSO send over a
// veth reaches the peer's raw socket as one unsegmented datagram.
package udp
