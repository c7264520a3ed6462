package ipoib

import (
	"fmt"
	"sync"
	"testing"

	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// TestReceiveLendsQPBuffers checks that a received packet goes up in the
// QP's own receive buffer, which returns to the QP only when the stack
// frees it: a receiver that holds every buffer makes the next datagram a
// no-receive-buffer drop at the HCA; buffers freed off the loop are
// reposted; a buffer freed twice is reposted once.
func TestReceiveLendsQPBuffers(t *testing.T) {
	const depth = 8
	e := newEnv(t, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	a := e.open(hs[0], Config{})
	b := e.open(hs[1], Config{RecvDepth: depth})
	var held []*netdev.Buffer
	var got []string
	b.nd.SetReceiver(netdev.ReceiverFunc(func(_ *netdev.Device, buf *netdev.Buffer, _ uint16, _, _ []byte) {
		got = append(got, string(buf.Bytes()))
		held = append(held, buf)
	}))
	e.settle()
	send := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			a.mustSend(b.addr(), []byte(fmt.Sprintf("datagram %d", i)))
			e.settle()
		}
	}
	drops := func() uint64 { return hostDrops(hs[1], sim.DropNoRecvBuffer) }

	send(0, depth)
	if len(got) != depth || len(held) != depth {
		t.Fatalf("received %d of %d datagrams", len(got), depth)
	}
	for i, s := range got {
		if want := fmt.Sprintf("datagram %d", i); s != want {
			t.Errorf("datagram %d reads %q, want %q", i, s, want)
		}
	}
	before := drops()
	send(depth, 1)
	if len(got) != depth || drops() != before+1 {
		t.Fatalf("with every buffer held: %d received, %d drops (was %d); want the datagram dropped for want of a buffer", len(got), drops(), before)
	}

	// Free four from another goroutine, one of them twice.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, buf := range held[:4] {
			buf.Free()
		}
		held[0].Free()
	}()
	wg.Wait()
	held = held[4:]
	e.settle()
	before = drops()
	send(100, 5)
	if n := len(got) - depth; n != 4 || drops() != before+1 {
		t.Errorf("after four buffers came back: %d more received and %d more drops, want 4 and 1", n, drops()-before)
	}
	for i, s := range got[depth:] {
		if want := fmt.Sprintf("datagram %d", 100+i); s != want {
			t.Errorf("datagram reads %q, want %q", s, want)
		}
	}
	for _, buf := range held {
		buf.Free()
	}
}
