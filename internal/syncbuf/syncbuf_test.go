package syncbuf

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// TestBuffer: writers on several goroutines and a reader running
// alongside them; every write lands whole, and a Bytes copy is not
// changed by later writes.
func TestBuffer(t *testing.T) {
	var b Buffer
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				fmt.Fprintf(&b, "w%d-%03d\n", w, i)
			}
		})
	}
	wg.Go(func() {
		for range each {
			_ = b.String()
		}
	})
	wg.Wait()
	snap := b.Bytes()
	if n := bytes.Count(snap, []byte("\n")); n != writers*each {
		t.Fatalf("%d lines written, want %d", n, writers*each)
	}
	for w := range writers {
		for i := range each {
			if line := fmt.Sprintf("w%d-%03d\n", w, i); !bytes.Contains(snap, []byte(line)) {
				t.Fatalf("line %q missing", line)
			}
		}
	}
	b.Write([]byte("later"))
	if bytes.Contains(snap, []byte("later")) || len(b.String()) != len(snap)+len("later") {
		t.Error("a Bytes copy changed with a later write, or String disagrees with it")
	}
}
