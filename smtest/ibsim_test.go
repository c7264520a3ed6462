package smtest

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// simDatagram builds one of ibsim's MAD datagrams: source LID and QPN,
// status, and the first len(mad) bytes of a MAD.
func simDatagram(slid uint16, sqp uint32, status uint32, mad []byte) []byte {
	r := make([]byte, simReqMADOff+len(mad))
	be := binary.BigEndian
	be.PutUint16(r[4:], slid)
	be.PutUint32(r[12:], sqp)
	be.PutUint32(r[16:], status)
	be.PutUint64(r[24:], uint64(len(mad)))
	copy(r[simReqMADOff:], mad)
	return r
}

// saResponseHead is the start of an SA GetResp as OpenSM sends it.
var saResponseHead = []byte{0x01, 0x03, 0x02, 0x81, 0, 0, 0, 0, 0, 0, 0xb9, 0x42, 0, 0, 0, 1, 0, 0x35, 0, 0, 0, 0, 0, 0}

// TestDecodeSimRequest checks the datagram decoder on the forms ibsim
// delivers: a short SA response (padded to 256 bytes), a full MAD, a
// non-zero status and truncated datagrams.
func TestDecodeSimRequest(t *testing.T) {
	short := append(bytes.Clone(saResponseHead), make([]byte, 120-len(saResponseHead))...)
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
		lid  ib.LID
	}{
		{"short SA response", simDatagram(1, 1, 0, short), true, 1},
		{"full MAD", simDatagram(7, 1, 0, append(bytes.Clone(saResponseHead), make([]byte, 256-len(saResponseHead))...)), true, 7},
		{"status set", simDatagram(1, 1, 5, short), false, 0},
		{"header only", simDatagram(1, 1, 0, nil), false, 0},
		{"empty", nil, false, 0},
	} {
		src, mad, ok := decodeSimRequest(tc.in)
		if ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if len(mad) != ib.MADLen || src.LID != tc.lid || src.QPN != ib.QPNGSI || !bytes.Equal(mad[:len(saResponseHead)], saResponseHead) {
			t.Errorf("%s: src %+v, MAD %d bytes % x", tc.name, src, len(mad), mad[:24])
		}
	}
}

// FuzzDecodeSimRequest feeds arbitrary datagrams to the decoder: it
// never panics, and what it accepts is a 256-byte MAD from a 24-bit QPN.
func FuzzDecodeSimRequest(f *testing.F) {
	f.Add(simDatagram(1, 1, 0, saResponseHead))
	f.Add(simDatagram(1, 1, 0, make([]byte, 256)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		src, mad, ok := decodeSimRequest(b)
		if ok && (len(mad) != ib.MADLen || !src.QPN.Valid()) {
			t.Fatalf("accepted %d-byte MAD from QPN %v", len(mad), src.QPN)
		}
	})
}

// TestDecodePortAttr reads ibsim's NodeInfo, PortInfo and P_Keys of a
// CA port (values as ibsim held them for Hca2 of testdata/fabric.net).
func TestDecodePortAttr(t *testing.T) {
	ni, pi, pk := make([]byte, simCtlDataLen), make([]byte, simCtlDataLen), make([]byte, simCtlDataLen)
	be := binary.BigEndian
	be.PutUint64(ni[12:], 0x100002) // NodeGUID
	be.PutUint64(pi[8:], 0xfe80000000000000)
	be.PutUint16(pi[16:], 4) // LID
	be.PutUint16(pi[18:], 1) // MasterSMLID
	pi[28] = 1               // LocalPortNum
	pi[32] = 0x24            // LinkSpeedSupported 2, PortState ACTIVE
	pi[36] = 0x43            // NeighborMTU 4, MasterSMSL 3
	be.PutUint16(pk[0:], 0xffff)
	be.PutUint16(pk[2:], 0x8001)
	a := decodePortAttr(ni, pi, pk)
	want, _ := ib.ParseGID("fe80::10:3")
	if a.LID != 4 || a.SMLID != 1 || a.SMSL != 3 || a.State != ib.PortActive || a.GIDs[0] != want ||
		len(a.PKeys) != simPKeyEntries || a.PKeys[0] != 0xffff || a.PKeys[1] != 0x8001 {
		t.Errorf("got %+v", a)
	}
}
