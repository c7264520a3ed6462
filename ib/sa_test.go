package ib

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"
)

// goldenSAJoin is the MCMemberRecord Set an IPoIB interface sends to join
// its broadcast group, laid out by hand from IBA 13.4.2 (common header),
// 13.6.2.1 (RMPP header), 15.2.1.1 (SA header) and 15.2.5.17 (record).
func goldenSAJoin(t testing.TB) []byte {
	return madHex(t, MADLen,
		"01 03 02 02",             // BaseVersion 1, SubnAdm, class version 2, Set
		"00 00 00 00",             // Status, ClassSpecific
		"00 00 00 00 12 34 56 78", // TransactionID
		"00 38 00 00",             // AttributeID MCMemberRecord, reserved
		"00 00 00 00",             // AttributeModifier
		"01 00 00 00",             // RMPPVersion 1, RMPPType 0, RRespTime 0 + flags 0, RMPPStatus 0
		"00 00 00 00 00 00 00 00", // Data1, Data2
		"00 00 00 00 00 00 00 00", // SM_Key
		"00 00 00 00",             // AttributeOffset 0 (a request), reserved
		"00 00 00 00 00 01 30 c7", // ComponentMask bits 0 1 2 6 7 12 13 16: MGID PortGID Q_Key TClass P_Key SL FlowLabel JoinState
		// MCMemberRecord:
		"ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff", // MGID (broadcast, P_Key 0xffff)
		"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // PortGID
		"00 00 0b 1b", // Q_Key
		"00 00",       // MLID
		"00 00",       // MTU, TClass
		"ff ff",       // P_Key
		"00 00",       // Rate, PacketLifeTime
		"00 00 00 00", // SL, FlowLabel, HopLimit
		"01",          // Scope 0, JoinState full member
	)
}

func TestSAMADGoldenJoin(t *testing.T) {
	want := goldenSAJoin(t)
	var m SAMAD
	m.InitRequest(MethodSet, SAAttrMCMemberRecord, 0x12345678,
		MCMemberCompMGID|MCMemberCompPortGID|MCMemberCompQKey|MCMemberCompPKey|
			MCMemberCompSL|MCMemberCompFlowLabel|MCMemberCompTClass|MCMemberCompJoinState)
	m.RMPP.Version = RMPPVersion
	rec := MCMemberRecord{
		MGID:      testBroadcastMGID,
		PortGID:   GIDFromParts(0xfe80000000000000, 0x0002c9020024f636),
		QKey:      QKeyIPoIBDefault,
		PKey:      PKeyDefault,
		JoinState: JoinFullMember,
	}
	if out := encodeSA(t, &m, &rec); !bytes.Equal(out, want) {
		t.Fatalf("encoded join:\n got %x\nwant %x", out, want)
	}
	var back SAMAD
	if err := back.Decode(want); err != nil {
		t.Fatal(err)
	}
	if back != m {
		t.Errorf("Decode = %+v, want %+v", back, m)
	}
	var rback MCMemberRecord
	if err := rback.Decode(back.Data[:]); err != nil || rback != rec {
		t.Errorf("record = %+v, %v; want %+v", rback, err, rec)
	}

	// The SA's answer echoes TID, attribute and mask and pads the 52-byte
	// record to 7 words.
	var resp SAMAD
	resp.InitResponse(&back, SAStatusOK, MCMemberRecordLen)
	if resp.Method != MethodGetResp || resp.TransactionID != 0x12345678 ||
		resp.AttributeID != SAAttrMCMemberRecord || resp.ComponentMask != back.ComponentMask ||
		resp.AttributeOffset != 7 || resp.Status != 0 {
		t.Errorf("InitResponse = %+v", resp)
	}
	resp.InitResponse(&back, SAErrReqInvalid, MCMemberRecordLen)
	if resp.Status != 0x0200 || resp.StatusErr() == nil {
		t.Errorf("InitResponse with ERR_REQ_INVALID: status %v", resp.Status)
	}
}

func TestSAMADRMPPHeader(t *testing.T) {
	// A middle DATA segment of a GetTableResp: RRespTime 0x1f, flags Active
	// only, segment 2, PayloadLength field unused (0).
	b := madHex(t, MADLen,
		"01 03 02 92 00 00 00 00", // GetTableResp
		"00 00 00 00 00 00 00 09", // TID
		"00 35 00 00 00 00 00 00", // PathRecord
		"01 01 f9 00",             // RMPP v1, DATA, RRespTime 31 | Active
		"00 00 00 02",             // SegmentNumber 2
		"00 00 00 00",             // PayloadLength
		"00 00 00 00 00 00 00 00", // SM_Key
		"00 08 00 00",             // AttributeOffset 8 words = 64 bytes
	)
	var m SAMAD
	if err := m.Decode(b); err != nil {
		t.Fatal(err)
	}
	want := RMPPHeader{Version: 1, Type: RMPPTypeData, RespTime: 31, Flags: RMPPActive, Data1: 2}
	if m.RMPP != want {
		t.Errorf("RMPP = %+v, want %+v", m.RMPP, want)
	}
	if m.RecordLen() != PathRecordLen {
		t.Errorf("RecordLen = %d", m.RecordLen())
	}
	out := make([]byte, MADLen)
	if err := m.Encode(out); err != nil || !bytes.Equal(out, b) {
		t.Errorf("re-encode = %x, %v", out, err)
	}
}

// saCaptureMADs returns the SA MADs on QP1 in the soft-RoCE capture, with the
// frame number tshark gives each. The capture is ERF (LINKTYPE_ERF) with
// records of type 21 (InfiniBand): a 16-byte ERF header, then the packet,
// whose length is the header's wlen (bytes 14-15).
func saCaptureMADs(t testing.TB) map[int][]byte {
	t.Helper()
	f, err := os.Open("testdata/softroce-demo-infiniband.pcap")
	if err != nil {
		t.Skipf("capture not present: %v", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	mads := map[int][]byte{}
	for n := 1; ; n++ {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if len(data) < 16 || data[8]&0x7f != 21 {
			t.Fatalf("frame %d: not an ERF InfiniBand record", n)
		}
		wlen := int(binary.BigEndian.Uint16(data[14:]))
		var p Packet
		if err := DecodePacket(data[16:16+wlen], &p); err != nil {
			continue // RC traffic, not UD
		}
		if p.BTH.DestQP == QPNGSI && len(p.Payload) > 1 && MgmtClass(p.Payload[1]) == MgmtClassSubnAdm {
			mads[n] = p.Payload
		}
	}
	return mads
}

func TestSAMADCapture(t *testing.T) {
	mads := saCaptureMADs(t)
	if len(mads) != 2 || mads[32] == nil || mads[33] == nil {
		t.Fatalf("want the SA MADs of frames 32 and 33, got frames %v", keys(mads))
	}
	dgid := GIDFromParts(0xfe80000000000000, 0x0002c90300001895)
	sgid := GIDFromParts(0xfe80000000000000, 0x0002c9020024f636)
	// Values read by hand from tshark -V of frames 32 and 33.
	tests := []struct {
		frame  int
		header MADHeader
		offset uint16
		rec    PathRecord
	}{
		{32, MADHeader{BaseVersion: 1, MgmtClass: MgmtClassSubnAdm, ClassVersion: 2, Method: MethodGet,
			TransactionID: 0x0bb9647f9e, AttributeID: SAAttrPathRecord}, 0,
			PathRecord{DGID: dgid, SGID: sgid, NumbPath: 1, PKey: 0xffff}},
		{33, MADHeader{BaseVersion: 1, MgmtClass: MgmtClassSubnAdm, ClassVersion: 2, Method: MethodGetResp,
			TransactionID: 0x0bb9647f9e, AttributeID: SAAttrPathRecord}, 8,
			PathRecord{DGID: dgid, SGID: sgid, DLID: 2, SLID: 4, Reversible: true, PKey: 0xffff,
				MTUSelector: SelectorExactly, MTU: MTU2048, RateSelector: SelectorExactly, Rate: Rate10Gbps,
				PacketLifeTimeSelector: SelectorExactly, PacketLifeTime: 0x12}},
	}
	for _, tt := range tests {
		b := mads[tt.frame]
		var m SAMAD
		if err := m.Decode(b); err != nil {
			t.Fatalf("frame %d: %v", tt.frame, err)
		}
		if m.MADHeader != tt.header {
			t.Errorf("frame %d header = %+v, want %+v", tt.frame, m.MADHeader, tt.header)
		}
		if m.RMPP != (RMPPHeader{}) || m.SMKey != 0 || m.AttributeOffset != tt.offset ||
			m.ComponentMask != PathRecCompDGID|PathRecCompSGID|PathRecCompTClass|PathRecCompNumbPath|PathRecCompPKey {
			t.Errorf("frame %d: RMPP %+v, SA header %+v", tt.frame, m.RMPP, m.SAHeader)
		}
		if err := m.StatusErr(); err != nil {
			t.Errorf("frame %d: %v", tt.frame, err)
		}
		var pr PathRecord
		if err := pr.Decode(m.Data[:]); err != nil {
			t.Fatal(err)
		}
		if pr != tt.rec {
			t.Errorf("frame %d PathRecord =\n%+v\nwant\n%+v", tt.frame, pr, tt.rec)
		}
		// Rebuild the MAD from the decoded values: same bytes.
		var again SAMAD
		again.MADHeader, again.RMPP, again.SAHeader = m.MADHeader, m.RMPP, m.SAHeader
		if out := encodeSA(t, &again, &pr); !bytes.Equal(out, b) {
			t.Errorf("frame %d re-encoded:\n got %x\nwant %x", tt.frame, out, b)
		}
	}
}

// encodeSA puts rec in m's data and returns m's wire bytes.
func encodeSA(tb testing.TB, m *SAMAD, rec interface{ Encode([]byte) error }) []byte {
	tb.Helper()
	if err := rec.Encode(m.Data[:]); err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, MADLen)
	if err := m.Encode(out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func keys(m map[int][]byte) []int {
	var k []int
	for n := range m {
		k = append(k, n)
	}
	return k
}

// BenchmarkSAPathRecordEncode builds a PathRecord query MAD, the SA client's
// per-peer hot path.
func BenchmarkSAPathRecordEncode(b *testing.B) {
	_, rec := goldenPathRecord(b)
	var m SAMAD
	out := make([]byte, MADLen)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.InitRequest(MethodGet, SAAttrPathRecord, uint64(i), PathRecCompDGID|PathRecCompSGID|PathRecCompPKey)
		if err := rec.Encode(m.Data[:]); err != nil {
			b.Fatal(err)
		}
		if err := m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSAPathRecordDecode decodes a PathRecord response MAD and its
// record.
func BenchmarkSAPathRecordDecode(b *testing.B) {
	_, rec := goldenPathRecord(b)
	var m SAMAD
	m.InitRequest(MethodGetResp, SAAttrPathRecord, 1, 0)
	in := encodeSA(b, &m, &rec)
	var pr PathRecord
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Decode(in); err != nil {
			b.Fatal(err)
		}
		if err := pr.Decode(m.Data[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSANoAlloc holds the codecs to the no-allocation rule of the data
// path: decode into a caller's struct, encode into a caller's buffer.
func TestSANoAlloc(t *testing.T) {
	_, pr := goldenPathRecord(t)
	_, mc := goldenMCMemberRecord(t)
	var m SAMAD
	var g MAD
	buf := make([]byte, MADLen)
	in := goldenSAJoin(t)
	tests := []struct {
		name string
		f    func()
	}{
		{"SAMAD.Decode", func() { _ = m.Decode(in) }},
		{"SAMAD.Encode", func() { _ = m.Encode(buf) }},
		{"MAD.Decode", func() { _ = g.Decode(in) }},
		{"MAD.Encode", func() { _ = g.Encode(buf) }},
		{"PathRecord.Encode", func() { _ = pr.Encode(buf) }},
		{"PathRecord.Decode", func() { _ = pr.Decode(buf) }},
		{"MCMemberRecord.Encode", func() { _ = mc.Encode(buf) }},
		{"MCMemberRecord.Decode", func() { _ = mc.Decode(buf) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tt.name, n)
		}
	}
}

// testBroadcastMGID is the IPoIB broadcast group of the default partition
// (RFC 4391 section 4), which the SA tests join; package ipoib derives it.
var testBroadcastMGID = func() GID {
	g, err := ParseGID("ff12:401b:ffff::ffff:ffff")
	if err != nil {
		panic(err)
	}
	return g
}()
