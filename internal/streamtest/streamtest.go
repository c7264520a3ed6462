// Package streamtest checks that a TCP stream arrives byte-identical: an
// echo server that passes its client's end of stream back as its own, and
// a client that sends random bytes through it and compares what returns.
// The ways a program reaches the link (the Go API, the daemon's forwards,
// SOCKS5 and TUN) are all held to this one check. It imports no package of
// the module and works on any net.Conn that can half-close (*net.TCPConn,
// gVisor's gonet.TCPConn). It is test support only; nothing outside
// _test.go files imports it.
package streamtest

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// halfCloser is a connection that can end its sending direction alone.
type halfCloser interface{ CloseWrite() error }

// Check sends n random bytes on c, half-closes it, and fails tb unless the
// same bytes come back followed by the end of stream within 50 seconds.
// It closes c.
func Check(tb testing.TB, c net.Conn, n int) {
	tb.Helper()
	defer c.Close()
	hc, ok := c.(halfCloser)
	if !ok {
		tb.Fatalf("a %T cannot half-close", c)
	}
	msg := make([]byte, n)
	rand.Read(msg)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = hc.CloseWrite()
		}
		werr <- err
	}()
	c.SetReadDeadline(time.Now().Add(50 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		tb.Fatalf("read back: %v after %d of %d bytes", err, len(got), n)
	}
	if err := <-werr; err != nil {
		tb.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		tb.Fatalf("%d bytes came back for the %d sent, or different ones", len(got), n)
	}
}

// Echo serves an echo on ln until the test ends, when it closes ln, and
// returns ln's address. Each connection gets back what it sends and, once
// it half-closes, the end of stream.
func Echo(tb testing.TB, ln net.Listener) string {
	tb.Cleanup(func() { ln.Close() })
	go AcceptEach(ln, func(c net.Conn) {
		if _, err := io.Copy(c, c); err == nil {
			if hc, ok := c.(halfCloser); ok {
				hc.CloseWrite()
			}
			io.Copy(io.Discard, c)
		}
	})
	return ln.Addr().String()
}

// AcceptEach serves each connection ln accepts with handle on a goroutine
// of its own, closing it afterwards, until ln is closed.
func AcceptEach(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}
