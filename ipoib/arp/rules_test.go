package arp

import (
	"errors"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
)

func rawAddr(a ipoib.Addr) []byte {
	b := make([]byte, ipoib.AddrLen)
	_ = a.Encode(b)
	return b
}

func TestRules(t *testing.T) {
	own := rawAddr(ipoib.Addr{QPN: 0x48, GID: ib.GID{0xfe, 0x80, 15: 1}})
	// The same queue pair advertising connected mode is still us.
	ownCM := rawAddr(ipoib.Addr{Flags: ipoib.FlagConnected, QPN: 0x48, GID: ib.GID{0xfe, 0x80, 15: 1}})
	peer := rawAddr(ipoib.Addr{QPN: 0x99, GID: ib.GID{0xfe, 0x80, 15: 9}})
	group := rawAddr(ipoib.BroadcastAddr(0xffff))
	tests := []struct {
		name                string
		p                   Packet
		check               error
		probe, announcement bool
	}{
		{"request", NewRequest(peer, [4]byte{10, 0, 0, 9}, [4]byte{10, 0, 0, 2}), nil, false, false},
		{"probe from 0.0.0.0", NewRequest(peer, [4]byte{}, [4]byte{10, 0, 0, 2}), nil, true, false},
		{"announcement", NewRequest(peer, [4]byte{10, 0, 0, 9}, [4]byte{10, 0, 0, 9}), nil, false, true},
		{"multicast sender", NewRequest(group, [4]byte{10, 0, 0, 9}, [4]byte{10, 0, 0, 2}), ErrSenderMulticast, false, false},
		{"class D sender IP", NewRequest(peer, [4]byte{224, 0, 0, 1}, [4]byte{10, 0, 0, 2}), ErrSenderIP, false, false},
		{"broadcast sender IP", NewRequest(peer, [4]byte{255, 255, 255, 255}, [4]byte{10, 0, 0, 2}), ErrSenderIP, false, false},
		{"own request looped", NewRequest(own, [4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 7}), ErrLooped, false, false},
		{"own request, connected flag", NewRequest(ownCM, [4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 7}), ErrLooped, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Check(own); !errors.Is(err, tc.check) || (tc.check == nil && err != nil) {
				t.Errorf("Check = %v, want %v", err, tc.check)
			}
			if tc.p.IsProbe() != tc.probe || tc.p.IsAnnouncement() != tc.announcement {
				t.Errorf("probe %v announcement %v, want %v %v", tc.p.IsProbe(), tc.p.IsAnnouncement(), tc.probe, tc.announcement)
			}
		})
	}
}

func TestAnswer(t *testing.T) {
	own := rawAddr(ipoib.Addr{QPN: 0x48, GID: ib.GID{0xfe, 0x80, 15: 1}})
	peer := rawAddr(ipoib.Addr{QPN: 0x99, GID: ib.GID{0xfe, 0x80, 15: 9}})
	req := NewRequest(peer, [4]byte{10, 0, 0, 9}, [4]byte{10, 0, 0, 2})
	r := req.Answer(own)
	if r.Op != Reply || string(r.SenderHW[:]) != string(own) || r.SenderIP != req.TargetIP ||
		r.TargetHW != req.SenderHW || r.TargetIP != req.SenderIP {
		t.Fatalf("answer %+v to %+v", r, req)
	}
	// The answer is itself a packet the requester may learn from.
	if err := r.Check(peer); err != nil {
		t.Fatalf("requester refuses the answer: %v", err)
	}
	if SameHost(own, peer) || !SameHost(own, own) || SameHost(own, own[:19]) {
		t.Fatal("SameHost")
	}
}
