package cowlist

import (
	"slices"
	"sync"
	"testing"
)

// TestAddRemove checks order, removal of one of two equal values, and
// that a removal twice changes nothing.
func TestAddRemove(t *testing.T) {
	var l List[string]
	if l.Load() != nil {
		t.Fatal("zero list not empty")
	}
	ra := l.Add("a")
	rb1 := l.Add("b")
	l.Add("b")
	if got := l.Load(); !slices.Equal(got, []string{"a", "b", "b"}) {
		t.Fatalf("after adds: %v", got)
	}
	before := l.Load()
	rb1()
	rb1()
	if got := l.Load(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after removing the first b twice: %v", got)
	}
	if !slices.Equal(before, []string{"a", "b", "b"}) {
		t.Fatalf("a loaded slice changed under its reader: %v", before)
	}
	ra()
	if got := l.Load(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after removing a: %v", got)
	}
}

// TestConcurrent reads while others add and remove (run with -race).
func TestConcurrent(t *testing.T) {
	var l List[int]
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r := l.Add(g*1000 + i)
				for range l.Load() {
				}
				r()
			}
		}()
	}
	wg.Wait()
	if l.Load() != nil {
		t.Fatalf("list not empty after every value was removed: %v", l.Load())
	}
}
