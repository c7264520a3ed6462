package ib

import (
	"errors"
	"strings"
	"testing"
)

// TestSendWRValidate goes through each refusal alone and in the order
// they are reported, the QPN at its 24-bit edge included.
func TestSendWRValidate(t *testing.T) {
	tests := []struct {
		name           string
		ah             AHState
		ahPort, qpPort int
		qpn            QPN
		want           string // in the error; "" when the request is taken
	}{
		{"unicast", AHLive, 1, 1, 0x12, ""},
		{"multicast QPN", AHLive, 2, 2, QPNMulticast, ""},
		{"largest QPN", AHLive, 1, 1, QPNMask, ""},
		{"QPN past 24 bits", AHLive, 1, 1, QPNMask + 1, "remote QPN 0x1000000 exceeds 24 bits"},
		{"handle of another device", AHForeign, 0, 1, 0x12, "address handle not from this device"},
		{"state out of range", AHState(7), 1, 1, 0x12, "address handle not from this device"},
		{"destroyed handle", AHDestroyed, 1, 1, 0x12, "address handle destroyed"},
		{"handle for another port", AHLive, 2, 1, 0x12, "address handle for port 2, QP on port 1"},
		// The handle is reported before the port, the port before the QPN.
		{"destroyed, other port, bad QPN", AHDestroyed, 2, 1, 1 << 31, "address handle destroyed"},
		{"other port, bad QPN", AHLive, 2, 1, 1 << 31, "address handle for port 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wr := SendWR{ID: 9, RemoteQPN: tc.qpn}
			err := wr.Validate(tc.ah, tc.ahPort, tc.qpPort)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want == "":
			case !errors.Is(err, ErrInvalidWR) || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate = %v, want %q wrapping ErrInvalidWR", err, tc.want)
			}
		})
	}
}

// TestSendWRValidateNoAlloc: the check runs on every work request, so
// taking one allocates nothing.
func TestSendWRValidateNoAlloc(t *testing.T) {
	wr := SendWR{ID: 1, RemoteQPN: 0x12, Data: [][]byte{make([]byte, 64)}}
	var err error
	if n := testing.AllocsPerRun(100, func() { err = wr.Validate(AHLive, 1, 1) }); n != 0 || err != nil {
		t.Errorf("Validate: %v allocations, error %v; want 0, nil", n, err)
	}
}

// fakeCQ stands for a driver's CQ; Validate only checks there is one.
type fakeCQ struct{ CompletionQueue }

func TestQPConfigValidate(t *testing.T) {
	lim := QPLimits{Ports: 2, PKeys: 4, MaxDepth: 64, MaxRecvBufSize: 4096, MaxRecvBytes: 64 * 1024}
	good := QPConfig{Port: 1, PKeyIndex: 3, SendCQ: fakeCQ{}, RecvCQ: fakeCQ{}, SendDepth: 64, RecvDepth: 16, RecvBufSize: 4096}
	tests := []struct {
		name string
		mod  func(*QPConfig)
		want error
	}{
		{"good", func(*QPConfig) {}, nil},
		{"port 0", func(c *QPConfig) { c.Port = 0 }, ErrNoPort},
		{"port 3 of 2", func(c *QPConfig) { c.Port = 3 }, ErrNoPort},
		{"P_Key index past the table", func(c *QPConfig) { c.PKeyIndex = 4 }, ErrBadConfig},
		{"negative P_Key index", func(c *QPConfig) { c.PKeyIndex = -1 }, ErrBadConfig},
		{"no receive CQ", func(c *QPConfig) { c.RecvCQ = nil }, ErrBadConfig},
		{"send depth 0", func(c *QPConfig) { c.SendDepth = 0 }, ErrBadConfig},
		{"receive depth past the bound", func(c *QPConfig) { c.RecvDepth = 65 }, ErrBadConfig},
		{"buffer without room for the GRH", func(c *QPConfig) { c.RecvBufSize = GRHSize - 1 }, ErrBadConfig},
		{"buffer past the bound", func(c *QPConfig) { c.RecvBufSize = 4097 }, ErrBadConfig},
		{"receive memory past the bound", func(c *QPConfig) { c.RecvDepth = 17 }, ErrBadConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate(lim)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAddressVectorValidate(t *testing.T) {
	mgid := GID{0: 0xff, 1: 0x12, 15: 1}
	peer := GID{0: 0xfe, 1: 0x80, 15: 2}
	ibLim := AVLimits{Ports: 2, GIDs: 2}
	roceLim := AVLimits{Ports: 1, GIDs: 4, RoCE: true}
	tests := []struct {
		name string
		lim  AVLimits
		av   AddressVector
		want error
	}{
		{"unicast LID", ibLim, AddressVector{Port: 1, DLID: 5}, nil},
		{"group with GRH", ibLim, AddressVector{Port: 2, DLID: 0xC001, GlobalRoute: true, DGID: mgid, SGIDIndex: 1}, nil},
		{"port 0", ibLim, AddressVector{Port: 0, DLID: 5}, ErrNoPort},
		{"port 3 of 2", ibLim, AddressVector{Port: 3, DLID: 5}, ErrNoPort},
		{"SL 16", ibLim, AddressVector{Port: 1, DLID: 5, SL: 16}, ErrBadConfig},
		{"flow label past 20 bits", ibLim, AddressVector{Port: 1, DLID: 5, FlowLabel: 1 << 20}, ErrBadConfig},
		{"SGID index past the table", ibLim, AddressVector{Port: 1, DLID: 5, SGIDIndex: 2}, ErrBadConfig},
		{"negative SGID index", ibLim, AddressVector{Port: 1, DLID: 5, SGIDIndex: -1}, ErrBadConfig},
		{"reserved LID", ibLim, AddressVector{Port: 1, DLID: LIDReserved}, ErrBadConfig},
		{"permissive LID", ibLim, AddressVector{Port: 1, DLID: LIDPermissive}, ErrBadConfig},
		{"multicast LID, unicast DGID", ibLim, AddressVector{Port: 1, DLID: 0xC001, GlobalRoute: true, DGID: peer}, ErrBadConfig},
		{"GRH without DGID", ibLim, AddressVector{Port: 1, DLID: 5, GlobalRoute: true}, ErrBadConfig},
		{"RoCE unicast", roceLim, AddressVector{Port: 1, GlobalRoute: true, DGID: peer, SGIDIndex: 3}, nil},
		{"RoCE group, no LID", roceLim, AddressVector{Port: 1, DGID: mgid}, nil},
		{"RoCE without DGID", roceLim, AddressVector{Port: 1, DLID: 5}, ErrBadConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.av.Validate(tc.lim)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMADAddressValidate(t *testing.T) {
	tests := []struct {
		name string
		a    MADAddress
		want error
	}{
		{"the SA", MADAddress{LID: 1, QPN: QPNGSI, QKey: QKeyGSI}, nil},
		{"last QPN, SL and P_Key index", MADAddress{LID: 1, QPN: QPNMask, SL: 15, PKeyIndex: 0xFFFF}, nil},
		{"QPN past 24 bits", MADAddress{LID: 1, QPN: QPNMask + 1}, ErrBadConfig},
		{"SL 16", MADAddress{LID: 1, QPN: QPNGSI, SL: 16}, ErrBadConfig},
		{"negative P_Key index", MADAddress{LID: 1, QPN: QPNGSI, PKeyIndex: -1}, ErrBadConfig},
		{"P_Key index past 16 bits", MADAddress{LID: 1, QPN: QPNGSI, PKeyIndex: 0x10000}, ErrBadConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.a.Validate()
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}
