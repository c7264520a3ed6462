package ipoib

import (
	"testing"

	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// unicastPair is two open links with the path from a to b resolved and
// b's receiver freeing what it gets, for measuring the steady state.
func unicastPair(tb testing.TB) (e *env, a, b *node, got *int) {
	e = newEnv(tb, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	a, b = e.open(hs[0], Config{}), e.open(hs[1], Config{})
	e.settle()
	a.mustSend(b.addr(), []byte("warm"))
	e.settle()
	got = new(int)
	b.nd.SetReceiver(netdev.ReceiverFunc(func(_ *netdev.Device, buf *netdev.Buffer, _ uint16, _, _ []byte) {
		*got++
		buf.Free()
	}))
	return e, a, b, got
}

// sendOne pushes one 64-byte datagram from a to b through netdev, ipoib
// and the simulated fabric, and runs the loop until it has arrived.
func sendOne(tb testing.TB, e *env, a *node, dst, payload []byte) {
	buf, err := a.nd.AllocBuffer()
	if err != nil {
		tb.Fatal(err)
	}
	_ = buf.Append(payload)
	if err := a.nd.Transmit(buf, dst, EtherTypeIPv4); err != nil {
		tb.Fatal(err)
	}
	for e.loop.Poll(false) {
	}
}

// TestSteadyStateAllocs holds the data path to its promise: once the
// path is resolved, a datagram from transmit to receive allocates
// nothing, in the driver, netdev or the simulator.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e, a, b, got := unicastPair(t)
	dst, payload := b.addr(), make([]byte, 64)
	sendOne(t, e, a, dst, payload)
	if n := testing.AllocsPerRun(200, func() { sendOne(t, e, a, dst, payload) }); n != 0 {
		t.Fatalf("%v allocations per datagram", n)
	}
	if *got != 202 { // one before, AllocsPerRun's warm-up run and 200
		t.Fatalf("%d datagrams arrived", *got)
	}
}

// BenchmarkUnicastSim is one unicast datagram transmit -> receive through
// netdev, ipoib and the simulated fabric (encode, CRCs, switch, decode,
// completion), on a resolved path.
func BenchmarkUnicastSim(bm *testing.B) {
	e, a, b, got := unicastPair(bm)
	dst, payload := b.addr(), make([]byte, 64)
	bm.ReportAllocs()
	bm.ResetTimer()
	for bm.Loop() {
		sendOne(bm, e, a, dst, payload)
	}
	bm.StopTimer()
	if *got < bm.N {
		bm.Fatalf("%d of %d arrived", *got, bm.N)
	}
}
