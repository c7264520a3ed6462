// Package counter is the one way ipoibd keeps counters: a fixed set of
// named uint64 values that the data path bumps with one atomic add and
// any goroutine reads, and the ordered snapshot every layer reports them
// in (`ipoibd stats`, its --json form, Interface.Stats).
//
// A layer declares its counters once, as an exported struct of uint64
// fields whose json tags are the counters' stable names (ARPStats,
// ClientStats, Counters...). A Block of that struct is the live form: the
// owner adds with Inc and Add on the Block's fields, readers take Load (the
// struct, for code and tests) or Snapshot (names and values in field
// order, for output). The struct is both the declaration and the
// snapshot, so there is no second list of names to keep in step.
//
// netdev's per-device table, to which drivers add counters at run time,
// reports through the same Snapshot type.
//
// Data flows one way: owners write, readers copy out; nothing here calls
// back. The package imports nothing of the project and is used by all.
package counter
