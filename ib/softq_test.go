package ib

import (
	"strings"
	"testing"
)

func TestCompletionRing(t *testing.T) {
	r := NewCompletionRing(3)
	for i := range 3 {
		if !r.Push(&Completion{ID: uint64(i)}) {
			t.Fatalf("push %d refused", i)
		}
	}
	if r.Push(&Completion{ID: 9}) || r.Len() != 3 {
		t.Fatal("a full ring took a fourth completion")
	}
	wcs := make([]Completion, 2)
	if n := r.Poll(wcs); n != 2 || wcs[0].ID != 0 || wcs[1].ID != 1 {
		t.Fatalf("poll %d: %v", n, wcs)
	}
	// Wrap around: two more after the one left.
	r.Push(&Completion{ID: 3})
	r.Push(&Completion{ID: 4})
	wcs = make([]Completion, 8)
	if n := r.Poll(wcs); n != 3 || wcs[0].ID != 2 || wcs[1].ID != 3 || wcs[2].ID != 4 {
		t.Fatalf("poll after wrap %d: %v", n, wcs[:n])
	}
	if n := r.Poll(wcs); n != 0 {
		t.Fatalf("poll of an empty ring: %d", n)
	}
}

func TestRecvQueue(t *testing.T) {
	for _, tc := range []struct {
		name        string
		newestFirst bool
		order       []uint32
	}{
		{"in order", false, []uint32{0, 1, 2, 3}},
		{"newest first", true, []uint32{3, 2, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewRecvQueue(4, tc.newestFirst)
			if q.Repost(0) {
				t.Fatal("reposted a buffer that was never lent")
			}
			for _, want := range tc.order {
				id, ok := q.Next()
				if !ok || id != want {
					t.Fatalf("Next = %d %v, want %d", id, ok, want)
				}
				q.Lend()
			}
			if _, ok := q.Next(); ok || q.Posted() != 0 {
				t.Fatal("an empty queue offered a buffer")
			}
			if !q.Repost(2) || q.Repost(2) || q.Repost(7) {
				t.Fatal("repost of 2 twice, or of 7, accepted")
			}
			if id, ok := q.Next(); !ok || id != 2 {
				t.Fatalf("after repost Next = %d %v", id, ok)
			}
		})
	}
}

// TestRecvQueueRepostAll: a batch reposts in order and stops at the first
// buffer not lent out, naming it and leaving the rest lent.
func TestRecvQueueRepostAll(t *testing.T) {
	q := NewRecvQueue(4, false)
	for range 4 {
		q.Lend()
	}
	err := q.RepostAll([]uint64{1, 3, 3, 0})
	if err == nil || !strings.Contains(err.Error(), "buffer 3") {
		t.Fatalf("RepostAll with 3 twice = %v, want an error naming buffer 3", err)
	}
	if q.Posted() != 2 {
		t.Fatalf("%d buffers posted, want 2 (1 and 3)", q.Posted())
	}
	if err := q.RepostAll([]uint64{0, 2}); err != nil || q.Posted() != 4 {
		t.Fatalf("RepostAll of the rest = %v, %d posted", err, q.Posted())
	}
}
