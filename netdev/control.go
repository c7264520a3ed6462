// Control plane of a Device.
//
// Everything in this file changes the device's configuration or state and
// runs on the device's loop only: from a callback of the loop, inside Run,
// or on a goroutine holding Acquire. Each function asserts it with
// aio.Context.AssertHome and panics when called elsewhere, because running
// concurrently with the data path would race with it. Another goroutine
// that needs one of these schedules a bottom half on the loop instead.
//
// New, Unregister, AddLinkListener and the accessors in device.go are the
// exceptions: they are safe from any goroutine.

package netdev

import "fmt"

// Open asks the driver to bring the device up. The link stays down until
// the driver reports it up with SetLinkUp. Opening an open device does
// nothing; opening an unregistered one fails with ErrClosed.
func (d *Device) Open() error {
	d.loop.AssertHome("netdev.Open")
	if d.open.Load() {
		return nil
	}
	if !d.registered.Load() {
		return fmt.Errorf("netdev %s: open: device unregistered: %w", d.name, ErrClosed)
	}
	// Open before the driver runs, so that what it does from its Open op
	// (SetLinkUp, early receive completions) sees an open device.
	d.open.Store(true)
	if err := d.ops.Open(d); err != nil {
		d.closing = true
		d.txReady = false
		d.flushTx(d.errClosed)
		d.open.Store(false)
		d.closing = false
		d.setLink(false, fmt.Errorf("netdev %s: open failed: %w", d.name, err))
		return fmt.Errorf("netdev %s: open: %w", d.name, err)
	}
	d.txReady = d.state.Load().up
	return nil
}

// Close stops the device: transmits stop being accepted, the driver's
// Close op runs, every packet still in the transmit queue is completed
// with an error wrapping ErrClosed (and counted as tx_aborted), and the
// link goes down with listeners told. Closing a closed device does
// nothing. An error from the driver is returned, but the device is closed
// all the same.
func (d *Device) Close() error {
	d.loop.AssertHome("netdev.Close")
	if !d.open.Load() || d.closing {
		return nil
	}
	d.closing = true
	d.txReady = false
	err := d.ops.Close(d)
	d.flushTx(d.errClosed)
	d.open.Store(false)
	d.closing = false
	d.setLink(false, fmt.Errorf("netdev %s: closed: %w", d.name, ErrClosed))
	if err != nil {
		return fmt.Errorf("netdev %s: close: driver: %w", d.name, err)
	}
	return nil
}

// SetLinkUp records that the link is up, so Transmit accepts packets (if
// the device is open), and tells the link listeners if it was down. The
// driver calls it once the hardware can carry traffic (for IPoIB: port
// ACTIVE and the broadcast group joined).
func (d *Device) SetLinkUp() {
	d.loop.AssertHome("netdev.SetLinkUp")
	d.setLink(true, nil)
}

// SetLinkDown records that the link is down and why; Transmit refuses
// packets from now on. Listeners are told if it was up. Packets already
// handed to the driver stay its business: it completes them as it can. A
// nil reason becomes ErrLinkDown.
func (d *Device) SetLinkDown(reason error) {
	d.loop.AssertHome("netdev.SetLinkDown")
	if reason == nil {
		reason = ErrLinkDown
	}
	d.setLink(false, reason)
}

// setLink updates the link state, the fast-path flag and the transition
// counters, and notifies listeners of a transition. Listeners run inline,
// in registration order, on a snapshot of the list, so one that adds or
// removes listeners does not disturb this round.
func (d *Device) setLink(up bool, reason error) {
	old := d.state.Load()
	d.state.Store(&linkState{up: up, reason: reason})
	d.txReady = up && d.open.Load() && !d.closing
	if old.up == up {
		return
	}
	if up {
		d.stats.Inc(LinkUp)
	} else {
		d.stats.Inc(LinkDown)
	}
	for _, fn := range d.listeners.Load() {
		fn(d, up, reason)
	}
}

// SetReceiver attaches the upper layer that Receive delivers frames to;
// nil detaches it, and frames are then counted as rx_no_receiver and
// freed.
func (d *Device) SetReceiver(r Receiver) {
	d.loop.AssertHome("netdev.SetReceiver")
	d.rx = r
}

// SetMTU changes the network-layer MTU, for a driver that learns it late
// (IPoIB takes it from the broadcast group). It must lie between 1 and
// MaxMTU, which the pool's buffers were sized for.
func (d *Device) SetMTU(mtu int) error {
	d.loop.AssertHome("netdev.SetMTU")
	if mtu <= 0 || mtu > d.maxMTU {
		return fmt.Errorf("netdev %s: set MTU %d: outside 1..%d: %w", d.name, mtu, d.maxMTU, ErrInvalidConfig)
	}
	d.mtu.Store(int64(mtu))
	return nil
}

// SetHWAddr changes the device's own link address, for a driver that
// learns it at Open (IPoIB's contains the QPN of the queue pair it
// creates). The address is copied.
func (d *Device) SetHWAddr(addr []byte) error {
	d.loop.AssertHome("netdev.SetHWAddr")
	if len(addr) != d.link.AddrLen() {
		return fmt.Errorf("netdev %s: set hardware address: %d bytes, %s addresses are %d: %w",
			d.name, len(addr), d.link.Name(), d.link.AddrLen(), ErrBadAddr)
	}
	hw := append([]byte(nil), addr...)
	d.hwaddr.Store(&hw)
	return nil
}

// flushTx completes every queued packet with err, oldest first.
func (d *Device) flushTx(err error) {
	for b := d.txHead; b != nil; b = d.txHead {
		d.complete(b, err)
	}
}
