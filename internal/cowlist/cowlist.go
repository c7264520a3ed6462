// Package cowlist is a list that a hot path reads without a lock while
// other goroutines add to it and remove from it: every change builds new
// slices and publishes them whole (copy on write). Netdev's link
// listeners and the stack endpoint's receive filters are such lists.
//
// Data flows one way: Add and the function it returns change the list
// (any goroutine, under a mutex); Load returns the values in force, a
// slice never modified afterwards, so a reader may range over it while
// the list changes.
package cowlist

import (
	"slices"
	"sync"
	"sync/atomic"
)

// List holds values of T. The zero value is an empty list ready for use.
type List[T any] struct {
	mu   sync.Mutex // serialises changes
	next uint64     // the id the next Add hands out; under mu
	cur  atomic.Pointer[snapshot[T]]
}

// snapshot is one published state: the values and, index for index, the
// ids that tell two adds of one value (a func, say) apart.
type snapshot[T any] struct {
	vals []T
	ids  []uint64
}

// Add appends v and returns the function that removes it again; calling
// that more than once changes nothing. Safe from any goroutine.
func (l *List[T]) Add(v T) (remove func()) {
	l.mu.Lock()
	l.next++
	id := l.next
	var s snapshot[T]
	if p := l.cur.Load(); p != nil {
		s = snapshot[T]{vals: slices.Clone(p.vals), ids: slices.Clone(p.ids)}
	}
	s.vals, s.ids = append(s.vals, v), append(s.ids, id)
	l.cur.Store(&s)
	l.mu.Unlock()
	return func() { l.remove(id) }
}

// remove drops the value added with id, if it is still there.
func (l *List[T]) remove(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.cur.Load()
	if p == nil {
		return
	}
	i := slices.Index(p.ids, id)
	if i < 0 {
		return
	}
	if len(p.ids) == 1 {
		l.cur.Store(nil)
		return
	}
	l.cur.Store(&snapshot[T]{vals: slices.Delete(slices.Clone(p.vals), i, i+1), ids: slices.Delete(slices.Clone(p.ids), i, i+1)})
}

// Load returns the values in force, in the order they were added; nil
// when there are none. The slice is shared: read it, never change it.
func (l *List[T]) Load() []T {
	if p := l.cur.Load(); p != nil {
		return p.vals
	}
	return nil
}
