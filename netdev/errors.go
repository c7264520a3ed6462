package netdev

import "errors"

// Sentinel errors. Functions wrap them with the device and the operation
// that failed; test them with errors.Is. The drop-reason counters are keyed
// on them too (see Counter), so a driver that returns, say, an error
// wrapping ErrNoPath from its Transmit op has the packet counted as
// tx_dropped_no_path without any extra bookkeeping.
var (
	// ErrNoHeadroom means a Push asked for more bytes than the buffer has in
	// front of its data.
	ErrNoHeadroom = errors.New("netdev: not enough headroom")
	// ErrNoTailroom means a Put or Append asked for more bytes than the
	// buffer has behind its data.
	ErrNoTailroom = errors.New("netdev: not enough tailroom")
	// ErrUnderflow means a Pull, Trim or Truncate asked for more bytes than
	// the buffer holds, or a negative count.
	ErrUnderflow = errors.New("netdev: buffer holds fewer bytes than asked for")
	// ErrNotEmpty means Reserve was called on a buffer that holds data;
	// moving the data offset then would silently change the packet.
	ErrNotEmpty = errors.New("netdev: buffer is not empty")
	// ErrPoolEmpty means every buffer of a Pool is in use. It is returned
	// unwrapped so that running dry costs no allocation.
	ErrPoolEmpty = errors.New("netdev: buffer pool exhausted")

	// ErrShort means a received frame is shorter than the link header.
	ErrShort = errors.New("netdev: frame shorter than the link header")
	// ErrBadHeader means a link header is malformed: a field holds a value
	// the link protocol does not allow.
	ErrBadHeader = errors.New("netdev: malformed link header")
	// ErrUnknownKey means a link header names a peer by a key (IPoIB's
	// in-host peer keys) that the link protocol does not know.
	ErrUnknownKey = errors.New("netdev: unknown peer key in link header")
	// ErrBadAddr means a link address has the wrong length or form.
	ErrBadAddr = errors.New("netdev: bad link address")
	// ErrNoMulticast means the link protocol has no multicast mapping for
	// the given group (not a multicast address, or a family it does not
	// map).
	ErrNoMulticast = errors.New("netdev: no link multicast mapping")

	// ErrLinkDown means a packet was offered while the link was down or
	// the device closed.
	ErrLinkDown = errors.New("netdev: link is down")
	// ErrQueueFull means the transmit queue held its maximum number of
	// packets not yet completed by the driver.
	ErrQueueFull = errors.New("netdev: transmit queue full")
	// ErrNoPath means the driver had no path (route, path record) to the
	// destination and dropped the packet.
	ErrNoPath = errors.New("netdev: no path to destination")
	// ErrNoPeer means the destination peer could not be resolved or kept
	// (for IPoIB: no peer-cache entry for it).
	ErrNoPeer = errors.New("netdev: destination peer unknown")
	// ErrTooBig means a packet exceeds the device MTU.
	ErrTooBig = errors.New("netdev: packet larger than the MTU")
	// ErrClosed means the device was closed: queued packets are completed
	// with it, and control calls on an unregistered device return it.
	ErrClosed = errors.New("netdev: device closed")
	// ErrNoReceiver means a frame arrived while no upper-layer receiver was
	// attached.
	ErrNoReceiver = errors.New("netdev: no receiver attached")
	// ErrNotQueued means TxComplete was given a buffer that is not in the
	// device's transmit queue (completed twice, or never transmitted).
	ErrNotQueued = errors.New("netdev: buffer not in the transmit queue")
	// ErrInUse means a buffer handed to Transmit is still in a transmit
	// queue.
	ErrInUse = errors.New("netdev: buffer already queued for transmit")

	// ErrInvalidConfig means New was given an unusable Config.
	ErrInvalidConfig = errors.New("netdev: invalid device configuration")
	// ErrExists means a device or counter name is already taken.
	ErrExists = errors.New("netdev: name already registered")
	// ErrBusy means the device is open and the operation needs it closed.
	ErrBusy = errors.New("netdev: device is open")
	// ErrTooManyCounters means the counter table (MaxCounters) is full.
	ErrTooManyCounters = errors.New("netdev: counter table full")
)
