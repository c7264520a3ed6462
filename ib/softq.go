package ib

import "fmt"

// Queues kept in memory, for drivers whose "hardware" is software: the
// simulator and the udp driver complete work into a CompletionRing and
// land datagrams in the buffers a RecvQueue hands out, as an HCA does
// with its CQ and receive queue. Neither type locks; a driver that shares
// one between goroutines holds its own lock around the calls.

// CompletionRing is a completion queue in memory: a ring of Completions,
// oldest first.
type CompletionRing struct {
	ring    []Completion
	head, n int
}

// NewCompletionRing returns an empty ring of depth entries.
func NewCompletionRing(depth int) CompletionRing {
	return CompletionRing{ring: make([]Completion, depth)}
}

// Len returns the completions waiting to be polled.
func (r *CompletionRing) Len() int { return r.n }

// Push appends a copy of wc; false when the ring is full (the CQ
// overflow an HCA reports as an async error).
func (r *CompletionRing) Push(wc *Completion) bool {
	if r.n == len(r.ring) {
		return false
	}
	i := r.head + r.n
	if i >= len(r.ring) {
		i -= len(r.ring)
	}
	r.ring[i] = *wc
	r.n++
	return true
}

// Poll moves up to len(wcs) completions into wcs, oldest first, and
// returns how many. The slots it empties are cleared, so the ring keeps
// no reference to a receive buffer it has handed on.
func (r *CompletionRing) Poll(wcs []Completion) int {
	k := min(len(wcs), r.n)
	for i := range k {
		j := r.head + i
		if j >= len(r.ring) {
			j -= len(r.ring)
		}
		wcs[i] = r.ring[j]
		r.ring[j] = Completion{}
	}
	r.head += k
	if r.head >= len(r.ring) {
		r.head -= len(r.ring)
	}
	r.n -= k
	return k
}

// RecvQueue is a receive queue in memory: the IDs of the buffers posted,
// in the order they were posted, and which buffers are lent out to a
// completion. A buffer is lent from the moment its completion is pushed
// until RepostRecv gives it back.
type RecvQueue struct {
	ring        []uint32
	head, n     int
	lent        []bool
	newestFirst bool
}

// NewRecvQueue returns a queue of depth buffers, IDs 0 to depth-1, all
// posted. With newestFirst, Next hands out the buffer posted last: an HCA
// consumes its receive queue in order, but nothing above can tell (each
// completion names its buffer), and a host then works in a few warm
// buffers instead of touching its whole ring.
func NewRecvQueue(depth int, newestFirst bool) RecvQueue {
	q := RecvQueue{ring: make([]uint32, depth), n: depth, lent: make([]bool, depth), newestFirst: newestFirst}
	for i := range q.ring {
		q.ring[i] = uint32(i)
	}
	return q
}

// Posted returns how many buffers are posted.
func (q *RecvQueue) Posted() int { return q.n }

// Next returns the buffer the next datagram lands in, without taking it
// (the driver takes it with Lend once its completion is pushed); false
// when none is posted.
func (q *RecvQueue) Next() (uint32, bool) {
	if q.n == 0 {
		return 0, false
	}
	return q.ring[q.slotOfNext()], true
}

// slotOfNext is the ring index of the buffer Next returns.
func (q *RecvQueue) slotOfNext() int {
	i := q.head
	if q.newestFirst {
		i += q.n - 1
		if i >= len(q.ring) {
			i -= len(q.ring)
		}
	}
	return i
}

// Lend takes the buffer Next returned off the queue and marks it lent.
// It does nothing when none is posted.
func (q *RecvQueue) Lend() {
	if q.n == 0 {
		return
	}
	id := q.ring[q.slotOfNext()]
	if !q.newestFirst {
		q.head++
		if q.head == len(q.ring) {
			q.head = 0
		}
	}
	q.n--
	q.lent[id] = true
}

// Repost puts buffer id back on the queue; false, changing nothing, when
// id is not a buffer lent out (never lent, or reposted already).
func (q *RecvQueue) Repost(id uint64) bool {
	if id >= uint64(len(q.lent)) || !q.lent[id] {
		return false
	}
	q.lent[id] = false
	i := q.head + q.n
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	q.ring[i] = uint32(id)
	q.n++
	return true
}

// RepostAll reposts each of ids in turn, as a driver's RepostRecv does;
// it stops at the first that is not lent out, with an error naming it,
// leaving that one and those after it as they were.
func (q *RecvQueue) RepostAll(ids []uint64) error {
	for _, id := range ids {
		if !q.Repost(id) {
			return fmt.Errorf("receive buffer %d is not lent out", id)
		}
	}
	return nil
}
