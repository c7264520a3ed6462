package main

// The drivers ipoibd can open, registered by importing them: the verbs
// driver (real HCAs and soft-RoCE; built with cgo, a no-op without) and
// the simulator.
import (
	_ "github.com/ipoibd/ipoibd/ib/verbs"
	_ "github.com/ipoibd/ipoibd/sim"
)
