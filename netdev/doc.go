// Package netdev is ipoibd's generic network device: the piece between a
// driver that moves frames (ipoib over an IB port, a test double) and the
// network stack that produces and consumes packets (stack, over gVisor).
// It knows nothing about InfiniBand or gVisor; the link specifics come in
// through a LinkProtocol, the hardware specifics through a driver's Ops.
// The model is gPXE's net_device and ll_protocol, redone in Go.
//
// # Pieces
//
//   - Buffer: a packet in a fixed block of memory with headroom in front
//     and tailroom behind, so headers are pushed and pulled in place. Pool
//     hands out fixed buffers from a free list and never allocates after
//     it is built.
//   - LinkProtocol: one link layer's header and addresses (push and pull
//     the header, broadcast address, multicast mapping, formatting).
//   - Ops: what a driver implements (open, close, transmit; optionally
//     Poller and BatchTransmitter).
//   - Device: a registered, named device binding a LinkProtocol, a driver,
//     a hardware address, an MTU, a bounded transmit queue, link state with
//     listeners, and per-reason counters (Stats).
//
// # Who may call what
//
// As everywhere in ipoibd, the API is split in two rooms. control.go holds
// the calls that change configuration and state (Open, Close, SetLinkUp,
// SetLinkDown, SetReceiver, SetMTU, SetHWAddr); they run on the device's
// aio loop and assert it. io.go holds the data path (Transmit,
// TransmitBatch, TxComplete, Receive, ReceiveError, Poll); it also runs on
// the device's loop but checks that only in -race builds, since the check
// costs a system call. New, Unregister, Lookup, Devices, AddLinkListener,
// AllocBuffer, the Pool and Stats methods and the accessors are safe from
// any goroutine.
//
// # How packets flow
//
// Down:
//
//	upper layer: b := dev.AllocBuffer(); b.Append(packet)
//	  -> dev.Transmit(b, dst, ethertype)     checks link, queue bound, MTU
//	  -> LinkProtocol.Push(b, dst, src, et)  prepends the link header
//	  -> Ops.Transmit(dev, b)                the driver posts it
//	  ... later, on the loop ...
//	  -> dev.TxComplete(b, err)              counted, b freed
//
// Up:
//
//	driver: fills a Buffer with a frame (link header first)
//	  -> dev.Receive(b)
//	  -> LinkProtocol.Pull(b)                dst, src, ethertype
//	  -> Receiver.Receive(dev, b, et, dst, src)
//
// # Buffer ownership
//
// A buffer has exactly one owner, and only the owner touches or frees it.
//
//   - Pool.Get (or Device.AllocBuffer) makes the caller the owner.
//   - Transmit and TransmitBatch take the buffer from the caller, whatever
//     they return. If the packet is refused, netdev counts and frees it at
//     once. If it is accepted it sits in the device's transmit queue, and
//     the driver may read and modify it (it must not free it) until it
//     calls TxComplete, after which netdev frees it. A driver's Transmit op
//     that returns an error has not taken the buffer; netdev completes it.
//     Close completes whatever is still queued with ErrClosed. Free on a
//     queued buffer is ignored, so a stray Free cannot corrupt the queue.
//   - Receive takes the buffer from the driver. netdev frees it on a drop;
//     otherwise the Receiver owns it from the Receive call and must free
//     it (or hand it on) when done.
//   - Free hands the buffer to its Releaser: the Pool it came from, or, for
//     memory a driver wrapped with NewBuffer (receive memory registered
//     with the hardware), the driver, which reposts it.
//
// The address slices that Pull returns, and that a Receiver is given, are
// borrowed: they point into the buffer's headroom or into the link
// protocol's tables and are valid during the Receive call only.
//
// # Counting
//
// Every packet offered to Transmit is counted exactly once when its fate is
// known: tx_ok (and tx_bytes) on a clean completion, otherwise one of the
// tx_dropped_* reasons, tx_aborted or tx_driver_error. Every frame given to
// Receive is counted exactly once: rx_ok (and rx_bytes) or one rx_* drop
// reason. Errors are mapped to reasons with errors.Is against the sentinel
// errors of this package, so a driver only has to wrap the right one. A
// driver layer adds its own reasons and counters with RegisterTxDrop,
// RegisterRxDrop and RegisterCounter; their names join the stable set that
// `ipoibd stats` prints and Snapshot marshals to JSON. Counters are
// atomics: any goroutine may read them while the loop runs.
package netdev
