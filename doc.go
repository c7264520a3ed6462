// Package ipoibd puts a program on an IP-over-InfiniBand link (RFC 4391)
// without the kernel's ib_ipoib module: on an InfiniBand or RoCE port
// through libibverbs, on any Ethernet interface through the userspace
// RoCE v2 driver, or on a simulated fabric.
//
// Open brings an Interface up: it opens the device, joins the IPoIB
// broadcast group, builds a userspace TCP/IP stack (gVisor's netstack) on
// the link and configures its address, statically or by DHCP (RFC 4390).
// The Interface then gives the program what package net would: Dial,
// Listen and ListenPacket return net.Conn, net.Listener and
// net.PacketConn, and Ping sends ICMP echo requests.
//
//	ifc, err := ipoibd.Open(ctx, ipoibd.Config{Device: "verbs:mlx5_0", DHCP: true})
//	if err != nil { ... }
//	defer ifc.Close()
//	conn, err := ifc.Dial("tcp", "10.66.0.1:22")
//
// NewSimFabric makes a simulated fabric in the process, whose hosts a
// Config names as "sim:NAME/hostI", for tests and for trying the API
// without hardware.
//
// This package is the one way the project builds a host: cmd/ipoibd's
// daemon and its simulator demo, and the integration tests, all go through
// it. Under it, data flows down from the stack (package stack) to the
// IPoIB link (package ipoib), the network device (package netdev) and the
// InfiniBand driver (package ib and a driver), and back up; all of it runs
// on an event loop (package aio) the Interface owns unless the Config
// lends it one.
package ipoibd
