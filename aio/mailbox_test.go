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

// TestMailboxNestedPass: a receiver that runs a pass of the loop inside
// itself (a callback's nested Poll, as a borrowed loop's TryRun does) gets
// what it posted before the pass in that nested batch, and what the nested
// receiver posts in a later one: every value once, in order, and never a
// nil. The Mailbox is warm first, so its spare array is in play: were the
// nested pass to queue into the batch it is handing on, the post from
// inside it would be overwritten and cleared, and a nil delivered.
func TestMailboxNestedPass(t *testing.T) {
	c := newCtx(t)
	home(t, c)
	names := []string{"warm", "outer", "nested", "inner post"}
	val := make([]*string, len(names))
	for i := range names {
		val[i] = &names[i]
	}
	var got []string
	depth := 0
	var m *Mailbox[*string]
	m = NewMailbox(c, "nested mailbox", func(batch []*string) {
		depth++
		defer func() { depth-- }()
		for _, v := range batch {
			if v == nil {
				t.Fatalf("nil value delivered at depth %d after %q", depth, got)
			}
			got = append(got, *v)
		}
		switch {
		case depth == 1 && batch[0] == val[1]:
			m.Post(val[2])
			c.Poll(false) // the nested pass hands val[2] on
		case depth == 2 && batch[0] == val[2]:
			m.Post(val[3]) // while the nested batch is being handed on
		}
	})
	m.Post(val[0])
	for c.Poll(false) {
	}
	m.Post(val[1])
	for c.Poll(false) {
	}
	if !slices.Equal(got, names) {
		t.Errorf("received %q, want %q", got, names)
	}
	if left := m.Close(); len(left) != 0 {
		t.Errorf("Close returned %d undelivered values", len(left))
	}
}
