// Data plane of a Device.
//
// The functions in this file move packets. They run on the device's loop
// (the driver's completion handlers, the upper layer's transmit bottom
// half) and never block; on success they allocate nothing, and the drops
// netdev decides itself (link down, queue full) do not allocate either.
// Because checking the caller costs a system call per packet, they check
// it only in -race builds, where calling one off the loop panics.
//
// AllocBuffer is the exception: it is safe from any goroutine.

package netdev

import (
	"errors"
	"fmt"
)

// Packet is one entry of a TransmitBatch: a buffer holding a
// network-layer packet, its link destination and its ethertype.
type Packet struct {
	Buf   *Buffer
	Dst   []byte
	Proto uint16
}

var (
	// errNilBuffer reports a nil buffer handed to the data path.
	errNilBuffer = fmt.Errorf("netdev: nil buffer: %w", ErrUnderflow)
	// errShortBatch stands in for a BatchTransmitter that refused part of
	// a batch without saying why.
	errShortBatch = errors.New("netdev: driver took only part of a batch and gave no reason")
)

// AllocBuffer takes an empty buffer from the device's pool with room
// reserved in front for the link header and the driver's headroom. The
// caller owns it. It returns ErrPoolEmpty, unwrapped, when the pool is
// dry. Safe from any goroutine.
func (d *Device) AllocBuffer() (*Buffer, error) { return d.pool.Get() }

// Transmit sends the network-layer packet in b to link address dst with
// ethertype proto. b belongs to the device from the call on, whatever the
// outcome: netdev frees it when it drops it and when the driver completes
// it.
//
// Transmit refuses the packet, counts why and frees it when the device is
// closed or its link down (ErrLinkDown), when the transmit queue is full
// (ErrQueueFull), when b is larger than the MTU (ErrTooBig) and when the
// link protocol cannot build the header. Otherwise it queues b, pushes the
// link header and hands b to the driver. An error from the driver's
// Transmit op is returned as it is, after b has been completed with it.
// A nil return means the driver has the packet; its fate is counted when
// the driver calls TxComplete.
func (d *Device) Transmit(b *Buffer, dst []byte, proto uint16) error {
	if raceEnabled {
		d.loop.AssertHome("netdev.Transmit")
	}
	if err := d.prepareTx(b, dst, proto); err != nil {
		return err
	}
	d.enqueue(b)
	if err := d.ops.Transmit(d, b); err != nil {
		if b.txDev == d {
			d.complete(b, err)
		}
		return err
	}
	return nil
}

// TransmitBatch transmits several packets, each as Transmit would, but
// hands the accepted ones to the driver in one call when the driver
// implements BatchTransmitter. It returns how many the driver took and
// the first error met; every buffer belongs to the device from the call
// on.
func (d *Device) TransmitBatch(pkts []Packet) (sent int, err error) {
	if raceEnabled {
		d.loop.AssertHome("netdev.TransmitBatch")
	}
	// prepareTx enforces the queue bound and pending has room for a full
	// queue, so the appends below never grow it.
	ready := d.pending[:0]
	for i := range pkts {
		p := &pkts[i]
		if perr := d.prepareTx(p.Buf, p.Dst, p.Proto); perr != nil {
			if err == nil {
				err = perr
			}
			continue
		}
		d.enqueue(p.Buf)
		ready = append(ready, p.Buf)
	}
	if len(ready) == 0 {
		return 0, err
	}
	if d.batch != nil {
		n, berr := d.batch.TransmitBatch(d, ready)
		n = min(max(n, 0), len(ready))
		if n < len(ready) && berr == nil {
			berr = errShortBatch
		}
		for _, b := range ready[n:] {
			if b.txDev == d {
				d.complete(b, berr)
			}
		}
		sent = n
		if err == nil {
			err = berr
		}
	} else {
		for _, b := range ready {
			terr := d.ops.Transmit(d, b)
			if terr == nil {
				sent++
				continue
			}
			if b.txDev == d {
				d.complete(b, terr)
			}
			if err == nil {
				err = terr
			}
		}
	}
	clear(ready) // drop references to buffers the device no longer owns
	d.pending = ready[:0]
	return sent, err
}

// prepareTx applies Transmit's admission checks and pushes the link
// header. On failure it has counted and freed b.
func (d *Device) prepareTx(b *Buffer, dst []byte, proto uint16) error {
	if b == nil {
		d.stats.Inc(TxInvalid)
		return errNilBuffer
	}
	if b.txDev != nil {
		// The buffer is someone's queue entry; freeing it would corrupt
		// that queue, so leave it alone.
		d.stats.Inc(TxInvalid)
		return fmt.Errorf("netdev %s: transmit: %w", d.name, ErrInUse)
	}
	if !d.txReady {
		d.stats.Inc(TxLinkDown)
		b.Free()
		if !d.open.Load() || d.closing {
			return d.errNotOpen
		}
		return d.errLinkDown
	}
	if d.txCount >= d.txLimit {
		d.stats.Inc(TxQueueFull)
		b.Free()
		return d.errQueueFull
	}
	if mtu := d.MTU(); b.Len() > mtu {
		d.stats.Inc(TxInvalid)
		n := b.Len()
		b.Free()
		return fmt.Errorf("netdev %s: transmit: %d-byte packet, MTU %d: %w", d.name, n, mtu, ErrTooBig)
	}
	if len(dst) != d.link.AddrLen() {
		d.stats.Inc(TxInvalid)
		b.Free()
		return fmt.Errorf("netdev %s: transmit: %d-byte destination, %s addresses are %d: %w",
			d.name, len(dst), d.link.Name(), d.link.AddrLen(), ErrBadAddr)
	}
	if err := d.link.Push(b, dst, *d.hwaddr.Load(), proto); err != nil {
		d.stats.Inc(classify(err, kindTx, TxInvalid))
		b.Free()
		return fmt.Errorf("netdev %s: transmit: push %s header: %w", d.name, d.link.Name(), err)
	}
	return nil
}

// enqueue appends b to the transmit queue.
func (d *Device) enqueue(b *Buffer) {
	b.txDev = d
	b.txLen = b.Len()
	b.txNext = nil
	b.txPrev = d.txTail
	if d.txTail != nil {
		d.txTail.txNext = b
	} else {
		d.txHead = b
	}
	d.txTail = b
	d.txCount++
}

// complete takes b off the transmit queue, counts its outcome and frees
// it. Completions may come in any order (a driver parks packets for a peer
// whose path is unresolved while others go out), hence the doubly linked
// queue.
func (d *Device) complete(b *Buffer, err error) {
	if b.txPrev != nil {
		b.txPrev.txNext = b.txNext
	} else {
		d.txHead = b.txNext
	}
	if b.txNext != nil {
		b.txNext.txPrev = b.txPrev
	} else {
		d.txTail = b.txPrev
	}
	b.txPrev, b.txNext, b.txDev = nil, nil, nil
	d.txCount--
	if err == nil {
		d.stats.Inc(TxOK)
		d.stats.Add(TxBytes, uint64(b.txLen))
	} else {
		d.stats.Inc(classify(err, kindTx, TxDriverError))
	}
	b.Free()
}

// TxComplete is the driver's report that it is done with b: sent when err
// is nil, failed otherwise (wrap ErrNoPath, ErrNoPeer, ErrLinkDown or a
// registered cause to have the drop counted under its reason). The device
// frees b. A buffer that is not in this device's queue is refused with
// ErrNotQueued and left alone.
func (d *Device) TxComplete(b *Buffer, err error) error {
	if raceEnabled {
		d.loop.AssertHome("netdev.TxComplete")
	}
	if b == nil || b.txDev != d {
		return fmt.Errorf("netdev %s: transmit completion: %w", d.name, ErrNotQueued)
	}
	d.complete(b, err)
	return nil
}

// TxQueued returns how many packets the driver holds and has not
// completed.
func (d *Device) TxQueued() int { return d.txCount }

// Receive is how the driver delivers a received frame, link header first.
// The device takes b: it pulls the link header and hands the packet to the
// receiver, or counts why it cannot (device closed, short frame, bad
// header, unknown peer key, no receiver) and frees b. The returned error
// says why a frame was dropped, for drivers that log; the counters have
// it already.
func (d *Device) Receive(b *Buffer) error {
	if raceEnabled {
		d.loop.AssertHome("netdev.Receive")
	}
	if b == nil {
		d.stats.Inc(RxDropped)
		return errNilBuffer
	}
	if !d.open.Load() || d.closing {
		d.stats.Inc(RxDropped)
		b.Free()
		return d.errRxClosed
	}
	n := b.Len()
	dst, src, proto, err := d.link.Pull(b)
	if err != nil {
		d.stats.Inc(classify(err, kindRx, RxBadHeader))
		b.Free()
		return err
	}
	if d.rx == nil {
		d.stats.Inc(RxNoReceiver)
		b.Free()
		return d.errNoReceiver
	}
	d.stats.Inc(RxOK)
	d.stats.Add(RxBytes, uint64(n))
	d.rx.Receive(d, b, proto, dst, src)
	return nil
}

// ReceiveError is how the driver reports a receive that failed below the
// link layer (a completion in error, a frame the hardware flagged). The
// failure is counted under a registered reason that err wraps, else
// rx_dropped, and b, which may be nil, is freed.
func (d *Device) ReceiveError(b *Buffer, err error) {
	if raceEnabled {
		d.loop.AssertHome("netdev.ReceiveError")
	}
	d.stats.Inc(classify(err, kindRx, RxDropped))
	b.Free()
}

// Poll runs the driver's Poll op if it has one and the device is open,
// and reports whether it found work. Wire it to the loop (a userspace
// poll function, a timer, a bottom half) for drivers without completion
// interrupts.
func (d *Device) Poll() bool {
	if raceEnabled {
		d.loop.AssertHome("netdev.Poll")
	}
	if d.poll == nil || !d.open.Load() {
		return false
	}
	return d.poll.Poll(d)
}
