package sim

import (
	"fmt"
	"testing"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// BenchmarkTree1024 builds a two-level tree of 1024 hosts (32 leaves of
// 32, 4 spines), runs the SM's first sweep, and has every host ask the SA
// for a path to its neighbour through its MAD port: 1024 real request and
// answer packets per op.
func BenchmarkTree1024(b *testing.B) {
	clock := aio.NewManualClock(testEpoch)
	loop, err := aio.New(aio.WithClock(clock))
	if err != nil {
		b.Fatal(err)
	}
	defer loop.Close()
	release := loop.Acquire()
	defer release()
	var req ib.SAMAD
	var mad [ib.MADLen]byte
	b.ReportAllocs()
	for b.Loop() {
		f, hosts, err := Tree(loop, Config{Name: fmt.Sprintf("bench%d", fabricSeq.Add(1))},
			TreeConfig{Leaves: 32, HostsPerLeaf: 32, Spines: 4})
		if err != nil {
			b.Fatal(err)
		}
		answered := 0
		smLID := f.SMLID()
		devs := make([]ib.Device, len(hosts))
		for i, h := range hosts {
			dev, err := h.Open(loop)
			if err != nil {
				b.Fatal(err)
			}
			devs[i] = dev
			mp, err := dev.OpenMADPort(1)
			if err != nil {
				b.Fatal(err)
			}
			mp.SetHandler(func(_ ib.MADAddress, m []byte) {
				if m[3] == byte(ib.MethodGetResp) && m[4] == 0 && m[5] == 0 {
					answered++
				}
			})
			peer := hosts[(i+1)%len(hosts)].ports[1].gids[0]
			q, mask := ib.PathQueryByGID(h.ports[1].gids[0], peer, ib.PKeyDefault)
			req.InitRequest(ib.MethodGet, ib.SAAttrPathRecord, uint64(i), mask)
			_ = q.Encode(req.Data[:])
			_ = req.Encode(mad[:])
			if err := mp.Send(ib.MADAddress{LID: smLID, QPN: ib.QPNGSI, QKey: ib.QKeyGSI}, mad[:]); err != nil {
				b.Fatal(err)
			}
		}
		for loop.Poll(false) {
		}
		if answered != len(hosts) {
			b.Fatalf("%d of %d path queries answered; %v", answered, len(hosts), f.Counters())
		}
		for _, d := range devs {
			d.Close()
		}
		f.Close()
	}
}

// BenchmarkUDSend measures one datagram from PostSend to Poll: encode,
// the fabric's bottom half, the switch, the receive checks, the copy into
// the receive buffer and both completions.
func BenchmarkUDSend(b *testing.B) {
	for _, size := range []int{64, 2044} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			e := newEnv(b, Config{})
			hosts := e.star(2, HostConfig{})
			send, recv := leanQP(b, e, hosts[0]), leanQP(b, e, hosts[1])
			attr, _ := hosts[1].Port(1)
			ah, _ := send.dev.CreateAH(ib.AddressVector{Port: 1, DLID: attr.LID})
			wr := []ib.SendWR{{AH: ah, RemoteQPN: recv.qp.QPN(), RemoteQKey: 3, Data: [][]byte{make([]byte, size)}}}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := send.qp.PostSend(wr); err != nil {
					b.Fatal(err)
				}
				for e.loop.Poll(false) {
				}
			}
			if recv.got.Load() != send.sent.Load() || recv.lastStatus != ib.StatusSuccess {
				b.Fatalf("received %d of %d", recv.got.Load(), send.sent.Load())
			}
		})
	}
}

// BenchmarkSAPathRecord measures one PathRecord round trip on a star.
func BenchmarkSAPathRecord(b *testing.B) {
	e := newEnv(b, Config{})
	hosts := e.star(2, HostConfig{})
	dev, _ := hosts[0].Open(e.loop)
	defer dev.Close()
	mp, _ := dev.OpenMADPort(1)
	answered := 0
	mp.SetHandler(func(ib.MADAddress, []byte) { answered++ })
	var req ib.SAMAD
	var mad [ib.MADLen]byte
	q, mask := ib.PathQueryByGID(hosts[0].ports[1].gids[0], hosts[1].ports[1].gids[0], ib.PKeyDefault)
	req.InitRequest(ib.MethodGet, ib.SAAttrPathRecord, 1, mask)
	_ = q.Encode(req.Data[:])
	_ = req.Encode(mad[:])
	dst := ib.MADAddress{LID: e.f.SMLID(), QPN: ib.QPNGSI, QKey: ib.QKeyGSI}
	b.ReportAllocs()
	for b.Loop() {
		if err := mp.Send(dst, mad[:]); err != nil {
			b.Fatal(err)
		}
		for e.loop.Poll(false) {
		}
	}
	if answered != b.N {
		b.Fatalf("%d of %d answered", answered, b.N)
	}
}
