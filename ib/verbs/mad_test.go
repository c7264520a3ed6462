//go:build linux && cgo && !noverbs

package verbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/hextest"
)

// umadGolden are user MAD headers written out by hand from the layout of
// struct ib_user_mad in <infiniband/umad.h> (host-order fields
// little-endian, as on amd64 and arm64; address fields big-endian).
var umadGolden = []struct {
	name string
	hex  string
	hdr  umadHeader
}{
	{
		name: "recv-getresp-from-sm",
		// agent 3, status 0, timeout 0, retries 0, length 256;
		// QPN 1, Q_Key 0x80010000, LID 0x0001, SL 0, no GRH, P_Key index 0.
		hex: "03000000 00000000 00000000 00000000 00010000" +
			"00000001 80010000 0001 00 00 00 00 00 00" +
			"00000000000000000000000000000000" +
			"00000000 0000 000000000000",
		hdr: umadHeader{AgentID: 3, Length: 256, QPN: 1, QKey: ib.QKeyGSI, LID: 1},
	},
	{
		name: "send-request-to-sm",
		// agent 7, timeout 8000 ms (0x1f40), retries 0; QPN 1, Q_Key
		// 0x80010000, LID 0x0012, SL 3, P_Key index 2.
		hex: "07000000 00000000 401f0000 00000000 00000000" +
			"00000001 80010000 0012 03 00 00 00 00 00" +
			"00000000000000000000000000000000" +
			"00000000 0200 000000000000",
		hdr: umadHeader{AgentID: 7, TimeoutMS: 8000, QPN: 1, QKey: ib.QKeyGSI, LID: 0x12, SL: 3, PKeyIndex: 2},
	},
	{
		name: "recv-with-grh",
		// agent 1, status 0, length 256; QPN 0x000042, Q_Key 0x00000b1b,
		// LID 0x0007, SL 5, path bits 1, GRH present, GID index 2, hop
		// limit 64, traffic class 0x10, GID fe80::2:c903:0:1, flow
		// label 0x12345, P_Key index 1.
		hex: "01000000 00000000 00000000 00000000 00010000" +
			"00000042 00000b1b 0007 05 01 01 02 40 10" +
			"fe800000000000000002c90300000001" +
			"00012345 0100 000000000000",
		hdr: umadHeader{AgentID: 1, Length: 256, QPN: 0x42, QKey: ib.QKeyIPoIBDefault, LID: 7, SL: 5,
			PathBits: 1, GRHPresent: true, GIDIndex: 2, HopLimit: 64, TClass: 0x10,
			GID: ib.GIDFromParts(0xfe80000000000000, 0x0002c90300000001), FlowLabel: 0x12345, PKeyIndex: 1},
	},
}

func TestUMADHeaderGolden(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden vectors are written for a little-endian host")
	}
	for _, tc := range umadGolden {
		t.Run(tc.name, func(t *testing.T) {
			want := hextest.Bytes(t, tc.hex)
			if len(want) != umadHeaderLen {
				t.Fatalf("golden vector is %d bytes, want %d", len(want), umadHeaderLen)
			}
			var h umadHeader
			if err := h.Decode(want); err != nil {
				t.Fatal(err)
			}
			if h != tc.hdr {
				t.Errorf("Decode = %+v\nwant     %+v", h, tc.hdr)
			}
			got := make([]byte, umadHeaderLen)
			for i := range got {
				got[i] = 0xAA // Encode must write every byte, reserved ones too
			}
			if err := tc.hdr.Encode(got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Encode =\n% x\nwant\n% x", got, want)
			}
		})
	}
}

func TestUMADHeaderShort(t *testing.T) {
	var h umadHeader
	for _, n := range []int{0, 1, umadHeaderLen - 1} {
		if err := h.Decode(make([]byte, n)); !errors.Is(err, ErrUMADShort) {
			t.Errorf("Decode(%d bytes) = %v, want ErrUMADShort", n, err)
		}
		if err := h.Encode(make([]byte, n)); !errors.Is(err, ErrUMADShort) {
			t.Errorf("Encode(%d bytes) = %v, want ErrUMADShort", n, err)
		}
	}
}

// TestUMADLayoutMatchesC checks the hand-written offsets against the C
// compiler's view of struct ib_user_mad.
func TestUMADLayoutMatchesC(t *testing.T) {
	if !cBuiltWithRDMA() {
		t.Skip("built without the rdma-core headers: no C layout to compare with")
	}
	want := []int{
		umadOffAgentID, umadOffStatus, umadOffTimeout, umadOffRetries, umadOffLength,
		umadOffQPN, umadOffQKey, umadOffLID, umadOffSL, umadOffPathBits, umadOffGRH,
		umadOffGIDIndex, umadOffHopLimit, umadOffTClass, umadOffGID, umadOffFlowLabel,
		umadOffPKeyIndex, umadHeaderLen,
	}
	got := cUMADOffsets()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: C offset %d, Go offset %d", i, got[i], want[i])
		}
	}
}

// madBytes builds a 256-byte MAD with the given method and TID.
func madBytes(method ib.Method, tid uint64) []byte {
	m := make([]byte, ib.MADLen)
	m[0] = 1 // base version
	m[1] = byte(ib.MgmtClassSubnAdm)
	m[2] = ib.SAClassVersion
	m[madOffMethod] = byte(method)
	binary.BigEndian.PutUint64(m[madOffTID:], tid)
	return m
}

func TestTIDTable(t *testing.T) {
	var tt tidTable
	tt.remember(0xCAFEBABE_00000005)
	tt.remember(0x11111111_00000006)
	tests := []struct {
		in, want uint64
	}{
		{0x00000003_00000005, 0xCAFEBABE_00000005}, // kernel's high half replaced
		{0x00000003_00000006, 0x11111111_00000006},
		{0x00000003_00000007, 0x00000003_00000007}, // unknown: unchanged
	}
	for _, tc := range tests {
		if got := tt.restore(tc.in); got != tc.want {
			t.Errorf("restore(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
	// A newer request with the same low half wins.
	tt.remember(0x22222222_00000005)
	if got := tt.restore(0x3_00000005); got != 0x22222222_00000005 {
		t.Errorf("after re-remember: %#x", got)
	}
	// The table forgets the oldest once full.
	for i := uint64(0); i < tidSlots; i++ {
		tt.remember(0x44444444_00001000 + i)
	}
	if got := tt.restore(0x3_00000006); got != 0x3_00000006 {
		t.Errorf("evicted entry still restored: %#x", got)
	}
	if got := tt.restore(0x3_00001000 + tidSlots - 1); got != 0x44444444_00001000+tidSlots-1 {
		t.Errorf("newest entry lost: %#x", got)
	}
}

func TestMADPortReceived(t *testing.T) {
	type got struct {
		src ib.MADAddress
		tid uint64
	}
	var calls []got
	m := &madPort{handler: func(src ib.MADAddress, mad []byte) {
		if len(mad) != ib.MADLen {
			t.Fatalf("handler got %d bytes", len(mad))
		}
		calls = append(calls, got{src, binary.BigEndian.Uint64(mad[madOffTID:])})
	}}
	m.tids.remember(0xCAFEBABE_00000005)
	msg := func(status uint32, mad []byte) []byte {
		h := umadHeader{AgentID: 3, Status: status, QPN: 1, QKey: ib.QKeyGSI, LID: 1, SL: 2, PKeyIndex: 0}
		b := make([]byte, umadHeaderLen, umadHeaderLen+len(mad))
		if err := h.Encode(b); err != nil {
			t.Fatal(err)
		}
		return append(b, mad...)
	}
	tests := []struct {
		name    string
		b       []byte
		handled bool
		tid     uint64
	}{
		{"reply restored", msg(0, madBytes(ib.MethodGetResp, 0x3_00000005)), true, 0xCAFEBABE_00000005},
		{"unknown reply unchanged", msg(0, madBytes(ib.MethodGetResp, 0x3_00000009)), true, 0x3_00000009},
		{"request untouched", msg(0, madBytes(ib.MethodGet, 0x3_00000005)), true, 0x3_00000005},
		{"timed-out send dropped", msg(110, madBytes(ib.MethodGet, 0x3_00000005)), false, 0},
		{"short MAD dropped", msg(0, madBytes(ib.MethodGetResp, 5)[:100]), false, 0},
		{"header only dropped", msg(0, nil), false, 0},
		{"truncated header dropped", make([]byte, 10), false, 0},
	}
	for _, tc := range tests {
		calls = nil
		if h := m.received(tc.b); h != tc.handled {
			t.Errorf("%s: handled = %v, want %v", tc.name, h, tc.handled)
			continue
		}
		if !tc.handled {
			continue
		}
		want := ib.MADAddress{LID: 1, SL: 2, QPN: 1, QKey: ib.QKeyGSI}
		if len(calls) != 1 || calls[0].src != want || calls[0].tid != tc.tid {
			t.Errorf("%s: handler calls %+v, want one from %+v with TID %#x", tc.name, calls, want, tc.tid)
		}
	}
}

func FuzzDecodeUMAD(f *testing.F) {
	for _, tc := range umadGolden {
		b := hextest.Bytes(f, tc.hex)
		f.Add(b)
		f.Add(append(b, madBytes(ib.MethodGetResp, 0x3_00000005)...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h umadHeader
		if err := h.Decode(b); err != nil {
			if len(b) >= umadHeaderLen {
				t.Fatalf("Decode failed on %d bytes: %v", len(b), err)
			}
			return
		}
		out := make([]byte, umadHeaderLen)
		if err := h.Encode(out); err != nil {
			t.Fatal(err)
		}
		// Canonical except the GRH flag (any non-zero byte means true)
		// and the reserved tail.
		want := bytes.Clone(b[:umadHeaderLen])
		if want[umadOffGRH] != 0 {
			want[umadOffGRH] = 1
		}
		clear(want[umadOffPKeyIndex+2:])
		if !bytes.Equal(out, want) {
			t.Fatalf("re-encode differs:\n% x\n% x", out, want)
		}
		var h2 umadHeader
		if err := h2.Decode(out); err != nil || h2 != h {
			t.Fatalf("decode(encode(h)) = %+v, %v; want %+v", h2, err, h)
		}
		// The receive path must take anything without panicking, and hand
		// on only whole MADs.
		m := &madPort{handler: func(_ ib.MADAddress, mad []byte) {
			if len(mad) != ib.MADLen {
				t.Fatalf("handler got %d bytes", len(mad))
			}
		}}
		m.tids.remember(0xCAFEBABE_00000005)
		m.received(bytes.Clone(b))
	})
}

func BenchmarkUMADHeaderEncodeDecode(b *testing.B) {
	h := umadGolden[2].hdr
	buf := make([]byte, umadHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Encode(buf)
		_ = h.Decode(buf)
	}
}
