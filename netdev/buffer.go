package netdev

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Buffer holds one packet in a fixed block of memory, with the packet's
// bytes somewhere in the middle. The space in front (headroom) lets each
// layer on the way down push its header without moving the payload; the
// space behind (tailroom) lets a receiver or builder append. On the way up
// each layer pulls its header off the front; the pulled bytes stay in the
// headroom, untouched, until something pushes over them.
//
// A Buffer has exactly one owner at a time and no locking of its own; the
// ownership rules are in the package documentation. Every method checks its
// arguments and reports a bad count as an error, so a corrupt length from
// the wire can cost a packet but never a panic.
type Buffer struct {
	mem  []byte
	head int // first byte of the packet
	tail int // one past the last byte

	rel  Releaser
	pool *Pool // set only for buffers NewPool carved, so Release can tell them
	idle bool  // sitting in its Pool's free list

	// Transmit-queue linkage. txDev is non-nil exactly while the buffer is
	// in that device's queue; the device's loop owns these fields then.
	txDev          *Device
	txPrev, txNext *Buffer
	txLen          int // frame length when queued, for tx_bytes
}

// Releaser takes buffers back when their last owner frees them. A Pool is
// one; a driver whose receive memory belongs to the hardware (registered
// memory of a queue pair) implements it to repost the memory instead.
type Releaser interface {
	// Release is called by Buffer.Free. It may run on any goroutine that
	// frees a buffer, so it must be safe for concurrent use.
	Release(b *Buffer)
}

// NewBuffer wraps mem in an empty Buffer whose data starts at offset 0.
// Free hands it to rel (nothing happens when rel is nil). Drivers use it
// to give memory they own the Buffer interface; most code gets buffers from
// a Pool instead.
func NewBuffer(mem []byte, rel Releaser) *Buffer {
	return &Buffer{mem: mem, rel: rel}
}

// Bytes returns the packet. The slice aliases the buffer and is capped at
// the packet's end, so appending to it copies rather than overwriting the
// tailroom; use Put or Append to grow the packet.
func (b *Buffer) Bytes() []byte { return b.mem[b.head:b.tail:b.tail] }

// Len returns the packet length.
func (b *Buffer) Len() int { return b.tail - b.head }

// Cap returns the size of the memory block: headroom + length + tailroom.
func (b *Buffer) Cap() int { return len(b.mem) }

// Headroom returns how many bytes can be pushed in front of the packet.
func (b *Buffer) Headroom() int { return b.head }

// Tailroom returns how many bytes can be put behind the packet.
func (b *Buffer) Tailroom() int { return len(b.mem) - b.tail }

// Reset empties the buffer and places the (empty) packet headroom bytes
// into the block, ready for a layer to Put data and the layers below to
// Push headers.
func (b *Buffer) Reset(headroom int) error {
	if headroom < 0 || headroom > len(b.mem) {
		return fmt.Errorf("reset buffer: headroom %d outside a %d-byte block: %w", headroom, len(b.mem), ErrNoTailroom)
	}
	b.head, b.tail = headroom, headroom
	return nil
}

// Reserve moves the start of an empty buffer n bytes further in, adding n
// bytes of headroom. It refuses a buffer that holds data because moving
// the offset would change the packet's contents.
func (b *Buffer) Reserve(n int) error {
	if b.head != b.tail {
		return fmt.Errorf("reserve %d bytes: buffer holds %d bytes: %w", n, b.Len(), ErrNotEmpty)
	}
	if n < 0 || n > b.Tailroom() {
		return fmt.Errorf("reserve %d bytes: %d bytes of tailroom: %w", n, b.Tailroom(), ErrNoTailroom)
	}
	b.head += n
	b.tail += n
	return nil
}

// Push grows the packet by n bytes at the front and returns those bytes
// for the caller to fill in. Their previous contents are whatever the
// headroom held (often the header a Pull removed).
func (b *Buffer) Push(n int) ([]byte, error) {
	if n < 0 || n > b.head {
		return nil, fmt.Errorf("push %d bytes: %d bytes of headroom: %w", n, b.head, ErrNoHeadroom)
	}
	b.head -= n
	return b.mem[b.head : b.head+n : b.head+n], nil
}

// Pull removes n bytes from the front of the packet and returns them. The
// returned slice stays valid, and its bytes unchanged, until something
// pushes into that part of the headroom or the buffer is freed.
func (b *Buffer) Pull(n int) ([]byte, error) {
	if n < 0 || n > b.Len() {
		return nil, fmt.Errorf("pull %d bytes: buffer holds %d: %w", n, b.Len(), ErrUnderflow)
	}
	p := b.mem[b.head : b.head+n : b.head+n]
	b.head += n
	return p, nil
}

// Peek returns the first n bytes of the packet without removing them.
func (b *Buffer) Peek(n int) ([]byte, error) {
	if n < 0 || n > b.Len() {
		return nil, fmt.Errorf("peek %d bytes: buffer holds %d: %w", n, b.Len(), ErrUnderflow)
	}
	return b.mem[b.head : b.head+n : b.head+n], nil
}

// Put grows the packet by n bytes at the end and returns those bytes for
// the caller to fill in.
func (b *Buffer) Put(n int) ([]byte, error) {
	if n < 0 || n > b.Tailroom() {
		return nil, fmt.Errorf("put %d bytes: %d bytes of tailroom: %w", n, b.Tailroom(), ErrNoTailroom)
	}
	p := b.mem[b.tail : b.tail+n : b.tail+n]
	b.tail += n
	return p, nil
}

// Append copies p to the end of the packet.
func (b *Buffer) Append(p []byte) error {
	dst, err := b.Put(len(p))
	if err != nil {
		return err
	}
	copy(dst, p)
	return nil
}

// Trim removes n bytes from the end of the packet (a trailer, padding).
func (b *Buffer) Trim(n int) error {
	if n < 0 || n > b.Len() {
		return fmt.Errorf("trim %d bytes: buffer holds %d: %w", n, b.Len(), ErrUnderflow)
	}
	b.tail -= n
	return nil
}

// Truncate shortens the packet to its first n bytes, for a length field
// that says the frame carries padding.
func (b *Buffer) Truncate(n int) error {
	if n < 0 || n > b.Len() {
		return fmt.Errorf("truncate to %d bytes: buffer holds %d: %w", n, b.Len(), ErrUnderflow)
	}
	b.tail = b.head + n
	return nil
}

// Free gives the buffer back to its Releaser. Only the current owner may
// call it, and the buffer must not be touched afterwards. Freeing a buffer
// that a device still has in its transmit queue is ignored: the queue owns
// it, and it is freed when the driver completes it or the device closes.
// Freeing a pool buffer twice is ignored (and counted by the Pool).
func (b *Buffer) Free() {
	if b == nil || b.txDev != nil {
		return
	}
	if b.rel != nil {
		b.rel.Release(b)
	}
}

// Pool is a fixed set of equally sized buffers carved out of one block of
// memory, with a free list. It never grows and never allocates after
// NewPool, so a data path that takes its buffers from a Pool allocates
// nothing in steady state; when every buffer is out, Get fails and the
// caller drops. Get and Free are safe from any goroutine (a short mutex:
// buffers usually come and go on the device's loop, so it is uncontended).
type Pool struct {
	mu       sync.Mutex
	free     []*Buffer
	bufs     []Buffer
	size     int
	headroom int

	exhausted atomic.Uint64
	badFrees  atomic.Uint64
}

// PoolStats describes a Pool's use; see Pool.Stats.
type PoolStats struct {
	Buffers   int    `json:"buffers"`   // buffers in the pool
	Free      int    `json:"free"`      // buffers not handed out
	Size      int    `json:"size"`      // bytes per buffer
	Exhausted uint64 `json:"exhausted"` // Get calls that found the pool empty
	BadFrees  uint64 `json:"bad_frees"` // buffers freed twice or to the wrong pool
}

// NewPool allocates count buffers of size bytes each. Get hands them out
// empty with headroom bytes reserved in front.
func NewPool(count, size, headroom int) (*Pool, error) {
	if count <= 0 || size <= 0 || headroom < 0 || headroom > size {
		return nil, fmt.Errorf("new buffer pool: %d buffers of %d bytes with %d headroom: %w", count, size, headroom, ErrInvalidConfig)
	}
	if size > (1<<40)/count {
		return nil, fmt.Errorf("new buffer pool: %d buffers of %d bytes is too much memory: %w", count, size, ErrInvalidConfig)
	}
	p := &Pool{
		free:     make([]*Buffer, count),
		bufs:     make([]Buffer, count),
		size:     size,
		headroom: headroom,
	}
	mem := make([]byte, count*size)
	for i := range p.bufs {
		b := &p.bufs[i]
		b.mem = mem[i*size : (i+1)*size : (i+1)*size]
		b.rel = p
		b.pool = p
		b.idle = true
		p.free[i] = b
	}
	return p, nil
}

// Get takes a free buffer, empty with the pool's headroom reserved. The
// caller owns it until it frees it or hands it on. It returns ErrPoolEmpty,
// unwrapped, when all buffers are out.
func (p *Pool) Get() (*Buffer, error) {
	p.mu.Lock()
	n := len(p.free)
	if n == 0 {
		p.mu.Unlock()
		p.exhausted.Add(1)
		return nil, ErrPoolEmpty
	}
	b := p.free[n-1]
	p.free[n-1] = nil
	p.free = p.free[:n-1]
	b.idle = false
	p.mu.Unlock()
	b.head, b.tail = p.headroom, p.headroom
	return b, nil
}

// Release puts b back on the free list; Buffer.Free calls it. A buffer
// already free, or one that belongs to another pool, is refused and
// counted rather than corrupting the free list; so the free list never
// outgrows the capacity NewPool gave it.
func (p *Pool) Release(b *Buffer) {
	if b == nil || b.pool != p {
		p.badFrees.Add(1)
		return
	}
	p.mu.Lock()
	if b.idle {
		p.mu.Unlock()
		p.badFrees.Add(1)
		return
	}
	b.idle = true
	p.free = append(p.free, b) // within the capacity made by NewPool
	p.mu.Unlock()
}

// Size returns the size of each buffer in bytes.
func (p *Pool) Size() int { return p.size }

// Headroom returns the headroom Get reserves.
func (p *Pool) Headroom() int { return p.headroom }

// Stats returns a snapshot of the pool's use. Safe from any goroutine.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	free := len(p.free)
	p.mu.Unlock()
	return PoolStats{
		Buffers:   len(p.bufs),
		Free:      free,
		Size:      p.size,
		Exhausted: p.exhausted.Load(),
		BadFrees:  p.badFrees.Load(),
	}
}
