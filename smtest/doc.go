// Package smtest runs ipoibd's InfiniBand control plane against a real
// subnet manager: OpenSM on an ibsim fabric.
//
// ibsim (Debian package ibsim-utils) simulates an InfiniBand subnet for
// management datagrams only: switches, HCAs and their subnet management
// agents. OpenSM attaches to one of its HCAs through libumad2sim, a
// library preloaded in front of libc that turns libibumad's umad files
// into a connection to ibsim. ipoibd's verbs driver does all its MAD I/O
// through libibumad's C calls (ib/verbs, umad.go), so a process started
// with libumad2sim preloaded and SIM_HOST naming an HCA talks to OpenSM's
// SA exactly as it would on hardware.
//
// ibsim carries no data: its HCAs have no verbs and no queue pairs. The
// tests join the two planes with a SplitDevice: an ib.Device whose data
// plane is a simulator host (package sim) built with the ibsim HCA's port
// GUID, LID and P_Key table, and whose control plane (the MAD port, the
// port's LID, SM, state and P_Keys, and port events) is the ibsim HCA.
// ipoib's driver runs unchanged on top: it joins OpenSM's broadcast group,
// attaches its simulator queue pair to the group OpenSM made and comes up.
//
// The tests run in two processes. The test process starts ibsim and the
// OpenSMs, runs saquery and smpquery (infiniband-diags) for the reference
// answers and drives ibsim's console; the control plane under test runs in
// a child, the same test binary started with libumad2sim preloaded (a
// preload has to be in place when a process starts), which takes one
// command per line on stdin and answers one JSON line on stdout.
//
// Without ibsim, OpenSM or infiniband-diags every test skips, naming the
// packages to install; ./test.sh says so before the run.
package smtest
