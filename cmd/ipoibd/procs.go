package main

import (
	"os"
	"runtime"
)

// minDaemonProcs is the fewest Go Ps (GOMAXPROCS) 'ipoibd up' runs with.
//
// The device loop spends much of a packet's time in cgo calls into the
// verbs provider, and soft-RoCE (rdma_rxe) sends inline, in the calling
// thread, so an ibv_post_send lasts as long as the kernel's whole send
// path. While a goroutine is in a cgo call or a system call its P stays
// with it, and the runtime's sysmon takes the P back once the call has
// lasted one of its ticks (20 µs while busy) if no other P is idle: with
// GOMAXPROCS=1, the default on a one-CPU machine, that is every send.
// Taking it back means waking a thread to hold the P, which finds nothing
// to do and sleeps again, on the one CPU the send is waiting for; and the
// call, when it returns, must take a P back. With a second P idle sysmon
// leaves such a call alone. Measured on one-vCPU TCG guests pinging each
// other over rxe (docs/performance.md), alternating with GOMAXPROCS=1 in
// the same boot: the median round trip fell by 15 to 25 %. A second P
// costs nothing while idle.
const minDaemonProcs = 2

// daemonProcs returns the GOMAXPROCS the daemon should run with: the
// runtime's choice cur, raised to minDaemonProcs, unless the user chose a
// value through the GOMAXPROCS environment variable (env), which is kept.
func daemonProcs(env string, cur int) int {
	if env != "" || cur >= minDaemonProcs {
		return cur
	}
	return minDaemonProcs
}

// raiseProcs applies daemonProcs to this process.
func raiseProcs() {
	cur := runtime.GOMAXPROCS(0)
	if n := daemonProcs(os.Getenv("GOMAXPROCS"), cur); n != cur {
		runtime.GOMAXPROCS(n)
	}
}
