package main

// The drivers ipoibd can open, registered by importing them: the verbs
// driver (real HCAs and soft-RoCE; built with cgo, a no-op without), the
// simulator, and udp (RoCEv2 on a host interface, no RDMA stack).
import (
	_ "github.com/ipoibd/ipoibd/ib/udp"
	_ "github.com/ipoibd/ipoibd/ib/verbs"
	_ "github.com/ipoibd/ipoibd/sim"
)
