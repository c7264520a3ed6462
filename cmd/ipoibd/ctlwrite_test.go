package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestCtlWriterDeadline: a client that stops reading its answers (a
// stuck 'ipoibd ping' piped into a pager, say) must not hold the handler:
// the write gives up after ctlWriteTimeout, the connection's work is
// cancelled, and later answers are dropped instead of blocking again.
func TestCtlWriterDeadline(t *testing.T) {
	old := ctlWriteTimeout
	ctlWriteTimeout = 50 * time.Millisecond
	defer func() { ctlWriteTimeout = old }()

	w, client, ctx := pipeWriter(t)

	done := make(chan struct{})
	go func() {
		defer close(done)
		w.send(ctlReply{Error: "first"})
		w.send(ctlReply{Error: "second"})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("send to a client that does not read is still blocked after 5 s")
	}
	if !w.failed {
		t.Error("the writer did not record the failed write")
	}
	if ctx.Err() == nil {
		t.Error("the connection's work was not cancelled after the failed write")
	}
	// Nothing was left half-written for the client to read later.
	client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var buf [64]byte
	if n, err := client.Read(buf[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client read %q, %v after the writer gave up; want nothing", buf[:n], err)
	}
}

// TestCtlWriterReaderKeepsUp: with a reading client every answer arrives,
// one JSON object a line, and nothing is cancelled.
func TestCtlWriterReaderKeepsUp(t *testing.T) {
	w, client, ctx := pipeWriter(t)
	go func() {
		for _, e := range []string{"a", "b", "c"} {
			w.send(ctlReply{Error: e})
		}
		w.c.Close()
	}()
	dec := json.NewDecoder(client)
	var got []string
	for {
		var r ctlReply
		if err := dec.Decode(&r); err != nil {
			break
		}
		got = append(got, r.Error)
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Errorf("client got %q, want [a b c]", got)
	}
	if w.failed || ctx.Err() != nil {
		t.Errorf("failed=%v ctx=%v with a reading client", w.failed, ctx.Err())
	}
}

// pipeWriter gives a ctlWriter on one end of an in-memory connection,
// the other end as the client, and the context the writer cancels.
func pipeWriter(t *testing.T) (*ctlWriter, net.Conn, context.Context) {
	server, client := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); server.Close(); client.Close() })
	return &ctlWriter{c: server, enc: json.NewEncoder(server), cancel: cancel}, client, ctx
}
