package streamtest

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestEchoOnLoopback runs Check through Echo on kernel sockets, for
// streams from empty to larger than the socket buffers.
func TestEchoOnLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := Echo(t, ln)
	for _, n := range []int{0, 1, 4 << 20} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		Check(t, c, n)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and
// ends the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestCheckCatchesChanges: an echo that loses, adds or changes a byte is
// caught.
func TestCheckCatchesChanges(t *testing.T) {
	tests := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"lost", func(b []byte) []byte { return b[:len(b)-1] }},
		{"added", func(b []byte) []byte { return append(b, 0) }},
		{"changed", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go AcceptEach(ln, func(c net.Conn) {
				b, err := io.ReadAll(c)
				if err == nil {
					c.Write(tt.mangle(b))
				}
			})
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			r := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Check(r, c, 1000)
			}()
			<-done
			if !strings.Contains(r.msg, "came back for the 1000 sent") {
				t.Errorf("Check said %q", r.msg)
			}
		})
	}
}
