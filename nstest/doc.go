// Package nstest runs ipoibd on the udp driver (RoCEv2 on a UDP socket)
// between network namespaces on one host: no VM, no RDMA in the kernel.
//
// A test builds a small Ethernet: a "switch" namespace holding a Linux
// bridge (multicast snooping off, so it floods the IPv6 groups RoCEv2
// multicast uses), and one namespace per host joined to it by a veth pair
// whose host end is called eth0, with an IPv4 address and an IPv6
// link-local one (duplicate address detection off, so it is usable at
// once). The namespaces are deleted when the test ends, failed or not.
//
// TestThreeHosts starts the real daemon in three namespaces, a DHCP
// server and two DHCP clients (one addressed by its IPv4 GID, one by its
// IPv6 link-local GID, so both RoCEv2 families and their mix are used),
// pings between every pair through the control sockets, moves a TCP
// stream between every pair (vmtest/cmd/vmxfer, checked byte for byte),
// and checks a capture taken on the bridge: tshark opens it without a
// malformed frame and every RoCEv2 datagram has a valid ICRC.
//
// The benchmarks run two udp devices in two namespaces inside the test
// process (each device's loop thread enters its namespace before opening
// the sockets) and compare, in the same run, TCP throughput and ping RTT
// over IPoIB on udp with kernel TCP and a kernel ICMP echo over the same
// veth pair.
//
// Everything here needs root (network namespaces, raw sockets) and
// iproute2; without them the tests skip with a line saying why.
package nstest
