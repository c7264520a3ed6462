// Mailbox: values posted from any goroutine, handed to the loop in
// batches.
//
// NewMailbox, Post and Close are safe from any goroutine; the receiver
// runs on the loop.

package aio

import "sync"

// Mailbox carries values from any goroutine to a loop: Post queues one
// and schedules a bottom half, which hands everything queued since its
// last run to the receiver in one call, in the order posted. It is what a
// reader goroutine, a fabric delivering into a host, or a buffer freed
// off the loop needs, and what each wrote as a lock, a slice and a BH of
// its own.
//
// The queue is double-buffered: the receiver gets the batch while Posts
// fill the other slice, and the batch's array is reused next time, so a
// warm Mailbox does not allocate. The receiver must not keep the slice.
type Mailbox[T any] struct {
	bh  *BH
	fn  func([]T)
	mu  sync.Mutex // guards in and closed
	in  []T
	old []T // loop only: the array of the last batch, reused
	// closed refuses Posts after Close.
	closed bool
}

// NewMailbox returns a Mailbox whose bottom half, called name, runs fn
// on c's loop with each batch.
func NewMailbox[T any](c *Context, name string, fn func(batch []T)) *Mailbox[T] {
	m := &Mailbox[T]{fn: fn}
	m.bh = c.NewBH(name, m.run)
	return m
}

// Post queues v for the loop and wakes it; false, with v not queued,
// once the Mailbox is closed.
func (m *Mailbox[T]) Post(v T) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.in = append(m.in, v)
	m.mu.Unlock()
	m.bh.Schedule()
	return true
}

// run hands the queued values to the receiver. Loop.
func (m *Mailbox[T]) run() {
	m.mu.Lock()
	batch := m.in
	if len(batch) == 0 {
		m.mu.Unlock()
		return
	}
	// The spare array becomes the queue and stops being the spare, so a
	// pass of the loop run inside fn (a borrowed loop's, TryRun) that
	// runs this again queues into a fresh array and never into one being
	// handed on or cleared here.
	m.in, m.old = m.old[:0], nil
	m.mu.Unlock()
	m.fn(batch)
	clear(batch) // keep no reference to what was handed on
	if m.old == nil {
		m.old = batch[:0]
	}
}

// Close refuses further Posts, stops the bottom half and returns what
// was queued and not yet handed on, for the caller to dispose of.
func (m *Mailbox[T]) Close() []T {
	m.mu.Lock()
	m.closed = true
	left := m.in
	m.in = nil
	m.mu.Unlock()
	m.bh.Delete()
	return left
}
