// Command ipoibd runs IP over InfiniBand from an ordinary process: it
// attaches to an InfiniBand or RoCE port through a registered driver, runs
// the IPoIB link (package ipoib) under a gVisor stack (package stack), and
// configures it statically or by DHCP (package stack/dhcp).
//
// Subcommands:
//
//	ipoibd devices   list every device every registered driver finds
//	ipoibd up        attach, join, configure and serve until stopped
//	ipoibd ping      ping through a running daemon
//	ipoibd peers     a running daemon's neighbour, peer and path table
//	ipoibd stats     a running daemon's counters
//	ipoibd down      stop a running daemon (leave the group, release the lease)
//	ipoibd sim       the embedded demo on a simulated fabric
//	ipoibd --version module version, VCS revision, Go version, drivers
//
// `up` serves a control socket (unix, mode 0600; one JSON request per
// connection, answered with one JSON object, after a stream of replies
// for ping) that ping, peers, stats and down use; down answers once the
// daemon is torn down. Every subcommand takes --help; the data commands
// take --json, all in the convention of output.go (docs/operations.md,
// "JSON output"). Exit codes: 0 success, 1 the operation failed, 2 the
// command line was wrong (and, for ping as for ping(8), any other error).
//
// Ways in for programs that do not use the Go API (ways.go): up's
// --forward and --serve carry single TCP or UDP ports between kernel
// sockets and the link (forward.go), --socks5 serves SOCKS5 CONNECT onto
// the link (socks5.go), and --tun gives the kernel a TUN interface with
// the link's address, a second NIC of the daemon's gVisor stack (tun.go).
//
// How data flows: `up` opens the device on an aio loop (its own goroutine),
// creates the IPoIB link there, waits for the broadcast join, builds the
// gVisor stack over the link's netdev, leases or sets the address, and
// answers control requests from per-connection goroutines; anything that
// touches the link's control plane is run on the loop as a bottom half.
package main
