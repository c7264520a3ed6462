package dhcp

import (
	"net/netip"
	"testing"
	"time"
)

// TestLongMessageWhole settles a suspicion (issue #14, point 6): a DHCP
// message longer than an Ethernet MTU (1900 bytes here; IPoIB carries
// up to 4064 in one datagram) reaches the handler whole, and one too
// long to read whole (reassembled from fragments) reaches it empty, to be
// counted malformed, never cut short.
func TestLongMessageWhole(t *testing.T) {
	w := newWire(t, 0)
	rx := w.addStack(netip.MustParsePrefix("10.7.0.2/24"))
	tx := w.addStack(netip.MustParsePrefix("10.7.0.3/24"))
	in, err := openSocket(rx, testNIC, ClientPort)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	out, err := openSocket(tx, testNIC, ServerPort)
	if err != nil {
		t.Fatal(err)
	}
	defer out.close()
	got := make(chan int, 4)
	go in.recvLoop(func(b []byte, _ netip.AddrPort) { got <- len(b) })
	for _, tc := range []struct{ send, want int }{{1900, 1900}, {maxDatagram, maxDatagram}, {maxDatagram + 100, 0}} {
		msg := make([]byte, tc.send)
		for i := range msg {
			msg[i] = byte(i)
		}
		if err := out.send(msg, netip.AddrPortFrom(netip.MustParseAddr("10.7.0.2"), ClientPort)); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-got:
			if n != tc.want {
				t.Errorf("sent %d bytes, the handler got %d, want %d", tc.send, n, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("sent %d bytes, nothing arrived", tc.send)
		}
	}
}
