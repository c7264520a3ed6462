package main

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzControlRequest feeds arbitrary bytes to the control socket's
// request handling, as a raw client could send them: the daemon must
// answer with one JSON object (an error for anything it cannot do),
// never panic or hang. The daemon here is not configured yet (no stack),
// as one still joining; peers and stats need a link and are left to the
// daemon tests.
func FuzzControlRequest(f *testing.F) {
	for _, seed := range []string{
		`{"cmd":"ping","addr":"10.0.0.1","count":3,"interval":1000000,"size":56}`,
		`{"cmd":"ping","addr":"10.0.0.1","count":-1,"interval":-5,"size":999999}`,
		`{"cmd":"ping","addr":"::1","count":1}`,
		`{"cmd":"nosuch"}`,
		`{"cmd":"down"}`,
		`{"cmd":`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req ctlRequest
		if json.Unmarshal(data, &req) == nil && (req.Cmd == "peers" || req.Cmd == "stats") {
			t.Skip("needs a link")
		}
		finished := make(chan struct{})
		close(finished)
		s := newCtlServer(nil, &daemon{finished: finished}, func() {}, nil)
		client, server := socketPair(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			s.handle(server, func() {})
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			client.Write(data)
			client.CloseWrite()
		}()
		dec := json.NewDecoder(client)
		for {
			var rep ctlReply
			if err := dec.Decode(&rep); err != nil {
				t.Fatalf("request %q: no JSON answer: %v", data, err)
			}
			if rep.Reply == nil {
				break
			}
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("request %q: the handler did not return", data)
		}
	})
}

// socketPair returns the two ends of a connected unix stream socket, as
// a client and the daemon see one.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "ctl")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// TestControlRequestTimeout: a client that starts a request and never
// finishes it gets an error once ctlReadTimeout has passed, so it cannot
// hold the daemon's shutdown.
func TestControlRequestTimeout(t *testing.T) {
	old := ctlReadTimeout
	ctlReadTimeout = 50 * time.Millisecond
	defer func() { ctlReadTimeout = old }()
	s := newCtlServer(nil, &daemon{finished: make(chan struct{})}, func() {}, nil)
	client, server := socketPair(t)
	defer client.Close()
	done := make(chan struct{})
	go func() { defer close(done); defer server.Close(); s.handle(server, func() {}) }()
	client.Write([]byte(`{"cmd":"pi`))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rep ctlReply
	if err := json.NewDecoder(client).Decode(&rep); err != nil || !strings.Contains(rep.Error, "bad request") {
		t.Errorf("half a request: answer %+v, %v; want a bad-request error", rep, err)
	}
	<-done
}

// TestControlRequestTooLarge: a request longer than ctlMaxRequest is
// refused as a bad request once the daemon has read that much; the rest
// is never read, however much more the client sends.
func TestControlRequestTooLarge(t *testing.T) {
	s := newCtlServer(nil, &daemon{finished: make(chan struct{})}, func() {}, nil)
	client, server := socketPair(t)
	defer client.Close()
	done := make(chan struct{})
	go func() { defer close(done); defer server.Close(); s.handle(server, func() {}) }()
	go func() {
		client.Write([]byte(`{"cmd":"`))
		client.Write([]byte(strings.Repeat("a", 4*ctlMaxRequest)))
	}()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rep ctlReply
	if err := json.NewDecoder(client).Decode(&rep); err != nil || !strings.Contains(rep.Error, "bad request") {
		t.Errorf("an endless request: answer %+v, %v; want a bad-request error", rep, err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not return")
	}
}
