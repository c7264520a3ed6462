// Package arp is ARP on an IPoIB link (RFC 4391 section 9.1): the packet,
// with 20-byte hardware addresses and hardware type 32, and the rules a
// host follows to learn from, answer and send it.
//
// Data flows through it in both directions without state: a received
// frame whose IPoIB header says ethertype 0x0806 is decoded into a
// Packet, checked (Check, IsProbe, IsAnnouncement) and, when it asks for
// a local address, answered (Answer); a host that must resolve an
// address builds a request (NewRequest) and encodes it. The neighbour
// cache that remembers the answers is gVisor's; the glue between the two
// is stack's ARP protocol, which holds no IPoIB knowledge of its own.
package arp
