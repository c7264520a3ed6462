// Package integration holds the end-to-end tests of ipoibd: gVisor stacks
// (package stack) on IPoIB links (package ipoib) on the simulated fabric
// (package sim), all real parts, driven by aio loops the way the daemon
// drives them. It has no code of its own; the tests say what a user on a
// fabric would see: ARP resolving, ping answering, TCP arriving
// byte-identical, through faults, subnet-manager outages, LID changes and
// partitions.
//
// Each test builds its fabric on one loop running on its own goroutine;
// control calls reach it through bottom halves (onLoop), and gVisor's
// goroutines talk to the links through the endpoints' transmit queues, as
// in the daemon.
package integration
