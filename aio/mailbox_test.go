package aio

import (
	"slices"
	"sync"
	"testing"
)

// TestMailbox: values posted from several goroutines reach the loop, each
// once, each goroutine's in its order; a value posted by the receiver
// itself comes in a later batch; Close hands back what was not delivered
// and refuses more.
func TestMailbox(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	var got []int
	batches := 0
	var m *Mailbox[int]
	m = NewMailbox(c, "test mailbox", func(batch []int) {
		batches++
		got = append(got, batch...)
		if batches == 1 {
			m.Post(-1) // from the receiver: the next batch
		}
	})
	const writers, each = 4, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m.Post(w*each + i)
			}
		})
	}
	wg.Wait()
	for c.Poll(false) {
	}
	if len(got) != writers*each+1 {
		t.Fatalf("received %d values, want %d", len(got), writers*each+1)
	}
	last := map[int]int{}
	for _, v := range got {
		if v < 0 {
			continue
		}
		if w, ok := last[v/each]; ok && v <= w {
			t.Fatalf("writer %d: %d after %d", v/each, v, w)
		}
		last[v/each] = v
	}
	if i := slices.Index(got, -1); i < 1 || batches < 2 {
		t.Errorf("the receiver's own post came at %d in %d batches", i, batches)
	}

	if !m.Post(7) || !m.Post(8) {
		t.Fatal("Post refused before Close")
	}
	if left := m.Close(); !slices.Equal(left, []int{7, 8}) {
		t.Errorf("Close returned %v, want [7 8]", left)
	}
	if m.Post(9) {
		t.Error("Post accepted after Close")
	}
	n := len(got)
	for c.Poll(false) {
	}
	if len(got) != n {
		t.Errorf("received %v after Close", got[n:])
	}
}

// BenchmarkMailbox is one Post and its delivery: a warm Mailbox does not
// allocate.
func BenchmarkMailbox(b *testing.B) {
	c := newCtx(b)
	release := c.Acquire()
	defer release()
	sum := 0
	m := NewMailbox(c, "bench mailbox", func(batch []int) {
		for _, v := range batch {
			sum += v
		}
	})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.Post(i)
		c.Poll(false)
	}
	if sum == 0 && b.N > 1 {
		b.Fatal("nothing delivered")
	}
}
