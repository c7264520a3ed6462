package ipoib

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// rxCounters are every counter a received datagram can end up in.
var rxCounters = []netdev.Counter{
	netdev.RxOK, netdev.RxShort, netdev.RxBadHeader, netdev.RxUnknownKey,
	netdev.RxNoReceiver, netdev.RxDropped, RxWCError, RxLoopback,
}

func rxTotal(n *node) uint64 {
	var s uint64
	for _, c := range rxCounters {
		s += n.stat(c)
	}
	return s
}

// FuzzReceive feeds the driver's receive path arbitrary receive
// completions (a GRH or not, any source, any bytes in the buffer) on a
// live link. It must not panic, must count every datagram exactly once
// (delivered or dropped for a reason), must deliver exactly the bytes
// after the 4-byte header with the header's ethertype and the source the
// GRH names, and must leave the peer cache consistent. The seeds are
// frames of the tcpdump IPoIB capture behind hand-built GRHs.
func FuzzReceive(f *testing.F) {
	e := newEnv(f, sim.Config{})
	hs := e.star(2, sim.HostConfig{})
	a := e.open(hs[0], Config{})
	e.settle()
	e.handOff()
	f.Fuzz(func(t *testing.T, grh bool, srcQPN uint32, slid uint16, data []byte) {
		r := e.loop.Acquire()
		defer r()
		d := a.l.d
		d.cache.Settle()
		buf := bytes.Clone(data)
		wc := ib.Completion{
			Kind: ib.WorkRecv, Status: ib.StatusSuccess, QPN: d.self.QPN, Buf: buf, Len: len(buf),
			HasGRH: grh, SrcQPN: ib.QPN(srcQPN) & ib.QPNMask, SLID: ib.LID(slid),
		}
		before, got := rxTotal(a), len(a.rx)
		delivered := a.stat(netdev.RxOK)
		d.receive(&wc)
		if n := rxTotal(a) - before; n != 1 {
			t.Fatalf("datagram counted %d times", n)
		}
		checkInvariants(t, d.cache)
		if a.stat(netdev.RxOK) == delivered {
			if len(a.rx) != got {
				t.Fatal("a dropped datagram reached the receiver")
			}
			return
		}
		if len(a.rx) != got+1 || len(data) < ib.GRHSize+HeaderLen {
			t.Fatalf("delivered a %d-byte buffer as %d frames", len(data), len(a.rx)-got)
		}
		fr := a.rx[len(a.rx)-1]
		frame := data[ib.GRHSize:]
		if fr.proto != binary.BigEndian.Uint16(frame) || !bytes.Equal(fr.data, frame[HeaderLen:]) {
			t.Fatalf("delivered %#x %x from frame %x", fr.proto, fr.data, frame)
		}
		if grh {
			var want [AddrLen]byte
			var g ib.GRH
			_ = g.Decode(data)
			_ = Addr{QPN: wc.SrcQPN, GID: g.SGID}.Encode(want[:])
			if !bytes.Equal(fr.src, want[:]) {
				t.Fatalf("source %x, GRH says %x", fr.src, want)
			}
		}
	})
}
