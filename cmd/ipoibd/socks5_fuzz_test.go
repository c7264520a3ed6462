package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// FuzzSOCKS5Conn feeds arbitrary bytes to the --socks5 server as a client
// on the kernel side could send them: greetings, requests and whatever
// follows. The server must never panic, and must let the connection go
// once the client has closed its end or the handshake's time is up. A
// CONNECT to 10.0.0.1 is "dialed" to a peer that takes the bytes and
// closes; any other destination is refused as the link would refuse it.
func FuzzSOCKS5Conn(f *testing.F) {
	greet := []byte{5, 1, 0}
	connect := func(atyp byte, addr []byte, port uint16) []byte {
		b := append(append([]byte{}, greet...), 5, 1, 0, atyp)
		b = append(b, addr...)
		return append(b, byte(port>>8), byte(port))
	}
	for _, seed := range [][]byte{
		append(connect(1, []byte{10, 0, 0, 1}, 22), "hello over IPoIB"...),
		connect(1, []byte{10, 0, 0, 2}, 80),                                // refused by the dialer
		connect(3, append([]byte{9}, "localhost"...), 80),                  // a name
		connect(4, make([]byte, 16), 443),                                  // IPv6
		append(append([]byte{}, greet...), 5, 2, 0, 1, 10, 0, 0, 1, 0, 21), // BIND
		append(append([]byte{}, greet...), 5, 3, 0, 1, 0, 0, 0, 0, 0, 0),   // UDP ASSOCIATE
		{5, 2, 0, 2},                  // two methods
		{5, 0},                        // no method
		{5, 1, 2},                     // user/password only
		{4, 1, 0, 80, 10, 0, 0, 1, 0}, // SOCKS4
		{5, 1, 0, 5, 1, 0, 9},         // an address type that does not exist
		connect(3, []byte{200}, 1),    // a name longer than what follows
		{},
	} {
		f.Add(seed)
	}
	old := socksHandshake
	socksHandshake = 200 * time.Millisecond
	f.Cleanup(func() { socksHandshake = old })
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSOCKSServer(func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "10.0.0.1:22" {
				return nil, errors.New("no route to host")
			}
			near, far := pipeTCP(t)
			go func() {
				io.Copy(io.Discard, far)
				far.Close()
			}()
			return near, nil
		}, slog.New(slog.DiscardHandler))
		client, server := pipeTCP(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.serveConn(server)
		}()
		client.Write(data)
		client.(closeWriter).CloseWrite()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, client)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the server still holds the connection after the client closed (input %x)", data)
		}
		client.Close()
	})
}

// pipeTCP returns the two ends of a kernel TCP connection on 127.0.0.1,
// which, unlike net.Pipe, buffer and half-close as the server's clients
// do.
func pipeTCP(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}
