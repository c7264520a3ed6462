// Package dhcp is DHCP for IPv4 over InfiniBand (RFC 2131 as RFC 4390
// adapts it): a client that leases an address for one NIC of a gVisor
// stack, and a server that hands addresses out on one. Both speak over
// gVisor UDP sockets, so they run wherever the stack runs: over the
// IPoIB endpoint of package stack, the simulated fabric, or two test
// stacks joined by channel endpoints. Messages are built and parsed
// with github.com/insomniacslk/dhcp/dhcpv4.
//
// # What IPoIB changes
//
// An IPoIB link address is 20 bytes (QPN and GID); the chaddr field of a
// DHCP message holds 16. RFC 4390 section 2.1 therefore has IPoIB
// messages carry htype 32, hlen 0 and an all-zero chaddr, and makes the
// client identifier (option 61) the only thing naming the client. This
// client sends it in the RFC 4361 form: type 255, a 4-byte IAID and a
// DUID, here a DUID-LL of hardware type 32 over the port GUID (see
// NewClientID for why), so the identifier is the same across restarts
// of the daemon and reboots of the host and differs between ports.
//
// With no hardware address a server cannot unicast to a client that has
// no IP address yet, so the client sets the BROADCAST flag (RFC 4390
// section 2.2) in every message and the server sends OFFERs, ACKs and
// NAKs to 255.255.255.255; once the client has an address (renewal,
// INFORM) replies go to ciaddr as RFC 2131 section 4.1 says, which ARP
// over IPoIB can resolve. The server keys leases on option 61 and never
// on chaddr; an IPoIB message without option 61 is refused and counted
// (ServerStats.NoClientID). A non-IPoIB client without option 61 is
// keyed by its htype and chaddr, as RFC 2131 allows.
//
// # Client
//
//	c, err := dhcp.NewClient(dhcp.ClientConfig{
//		Stack: s, NIC: nic, GUID: portGUID,
//		OnEvent: func(ev dhcp.Event) { log.Print(ev.Kind, ev.Lease) },
//	})
//	if err != nil { ... }
//	if err := c.Start(); err != nil { ... }
//	lease, err := c.WaitBound(ctx)
//	...
//	c.Stop(ctx) // RELEASE, address and routes removed
//
// Abandon stops it without a RELEASE and keeps the lease file, for a link
// that died under it: the client started again asks for the same address.
//
// The client follows RFC 2131 section 4.4: DISCOVER and REQUEST with
// randomised exponential backoff (Backoff, 4 s doubling to 64 s, ±1 s),
// the first usable OFFER, a NAK sends it back to INIT, an optional Probe
// hook (an ARP probe) can make it DECLINE an address already in use.
// Bound, it renews at T1 by unicast to its server, rebinds at T2 by
// broadcast, and at expiry removes the address. It puts the leased
// address and subnet on the NIC (AddProtocolAddress, RemoveAddress), the
// subnet route and a default route through the router; DNS servers, the
// domain and the lease times are in Lease. Until it has a lease the NIC
// carries 0.0.0.0, because gVisor sends nothing from a NIC without an
// address and RFC 2131 wants INIT messages to come from 0.0.0.0.
//
// # Server
//
//	srv, err := dhcp.NewServer(dhcp.ServerConfig{
//		Stack: s, NIC: nic, ServerID: addr, Subnet: subnet,
//		Router: gw, DNS: dns, LeaseFile: "/var/lib/ipoibd/leases.json",
//	})
//	if err != nil { ... }
//	if err := srv.Start(); err != nil { ... }
//	defer srv.Stop()
//
// The server follows RFC 2131 section 4.3: an OFFER holds its address
// for OfferHold; a REQUEST is told apart as SELECTING, INIT-REBOOT,
// RENEWING or REBINDING by ciaddr and options 50 and 54, and answered
// with an ACK or a NAK (or silence where the RFC asks for it); DECLINE
// puts an address in quarantine for DeclineHold; RELEASE frees the
// address but remembers whose it was, so the client gets it again;
// INFORM gets configuration without a lease. Every change of a binding
// rewrites the lease file (a temporary file renamed over the old one),
// and a server started on the same file hands every client the address
// it had. Malformed messages are counted and dropped; nothing from the
// wire can make the server or client panic (FuzzServerHandle,
// FuzzClientHandle).
//
// # Goroutines and time
//
// A Client runs two goroutines: one reads its socket, the other owns the
// state machine and handles received messages, timer expiries and probe
// results one at a time from a queue. A Server runs one, which reads,
// handles and answers under a mutex. All exported methods are safe from
// any goroutine. The OnEvent hook runs on the client's state goroutine:
// it must not block or call Stop.
//
// Every timer goes through a Clock (Now and AfterFunc). SystemClock is
// the default; ManualClock moves only when told, which lets tests take a
// lease through T1, T2 and expiry in milliseconds. None of this runs on
// an aio loop: DHCP is control-plane work on gVisor sockets, which block,
// and the ipoibd loops must never block.
package dhcp
