package ib

import (
	"bytes"
	"math"
	"testing"
	"time"
)

// goldenPathRecord has every field non-zero and distinct, so a field in
// the wrong place or bits in the wrong order shows. Laid out from IBA
// 15.2.5.16.
func goldenPathRecord(t testing.TB) ([]byte, PathRecord) {
	b := madHex(t, PathRecordLen,
		"11 22 33 44 55 66 77 88",                         // ServiceID
		"fe 80 00 00 00 00 00 00 00 02 c9 03 00 00 18 95", // DGID
		"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // SGID
		"00 02",             // DLID
		"00 04",             // SLID
		"8a bc de 40",       // RawTraffic 1, reserved 000, FlowLabel 0xabcde, HopLimit 0x40
		"12",                // TClass
		"85",                // Reversible 1, NumbPath 5
		"ff ff",             // P_Key
		"12 37",             // QoSClass 0x123, SL 7
		"84",                // MTUSelector 2 (exactly), MTU 4 (2048)
		"50",                // RateSelector 1 (less than), Rate 16 (100 Gb/s)
		"d2",                // PacketLifeTimeSelector 3 (largest), PacketLifeTime 0x12
		"01",                // Preference
		"00 00 00 00 00 00", // reserved
	)
	r := PathRecord{
		ServiceID:  0x1122334455667788,
		DGID:       GIDFromParts(0xfe80000000000000, 0x0002c90300001895),
		SGID:       GIDFromParts(0xfe80000000000000, 0x0002c9020024f636),
		DLID:       2,
		SLID:       4,
		RawTraffic: true, FlowLabel: 0xabcde, HopLimit: 0x40,
		TClass:     0x12,
		Reversible: true, NumbPath: 5,
		PKey:     PKeyDefault,
		QoSClass: 0x123, SL: 7,
		MTUSelector: SelectorExactly, MTU: MTU2048,
		RateSelector: SelectorLessThan, Rate: Rate100Gbps,
		PacketLifeTimeSelector: SelectorLargest, PacketLifeTime: 0x12,
		Preference: 1,
	}
	return b, r
}

// goldenMCMemberRecord is a broadcast-group record as an SA returns it,
// laid out from IBA 15.2.5.17.
func goldenMCMemberRecord(t testing.TB) ([]byte, MCMemberRecord) {
	b := madHex(t, MCMemberRecordLen,
		"ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff", // MGID
		"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // PortGID
		"00 00 0b 1b", // Q_Key
		"c0 01",       // MLID
		"84",          // MTUSelector 2, MTU 4
		"05",          // TClass
		"ff ff",       // P_Key
		"83",          // RateSelector 2, Rate 3 (10 Gb/s)
		"92",          // PacketLifeTimeSelector 2, PacketLifeTime 0x12
		"31 23 45 01", // SL 3, FlowLabel 0x12345, HopLimit 1
		"21",          // Scope 2, JoinState 1 (full member)
		"80 00 00",    // ProxyJoin 1, reserved
	)
	r := MCMemberRecord{
		MGID:        testBroadcastMGID,
		PortGID:     GIDFromParts(0xfe80000000000000, 0x0002c9020024f636),
		QKey:        QKeyIPoIBDefault,
		MLID:        0xc001,
		MTUSelector: SelectorExactly, MTU: MTU2048,
		TClass:       5,
		PKey:         PKeyDefault,
		RateSelector: SelectorExactly, Rate: Rate10Gbps,
		PacketLifeTimeSelector: SelectorExactly, PacketLifeTime: 0x12,
		SL: 3, FlowLabel: 0x12345, HopLimit: 1,
		Scope: MGIDScopeLinkLocal, JoinState: JoinFullMember,
		ProxyJoin: true,
	}
	return b, r
}

func TestPathRecordGolden(t *testing.T) {
	b, want := goldenPathRecord(t)
	checkVector(t, PathRecordLen, b, want)
	// Reserved bits set on the wire are ignored.
	dirty := bytes.Clone(b)
	dirty[44] |= 0x70
	dirty[63] = 0xff
	var got PathRecord
	if err := got.Decode(dirty); err != nil || got != want {
		t.Errorf("Decode with reserved bits set = %+v, %v", got, err)
	}
}

func TestMCMemberRecordGolden(t *testing.T) {
	b, want := goldenMCMemberRecord(t)
	checkVector(t, MCMemberRecordLen, b, want)
}

func TestJoinStates(t *testing.T) {
	b, r := goldenMCMemberRecord(t)
	tests := []struct {
		js   JoinState
		wire byte
	}{
		{JoinFullMember, 0x21},
		{JoinNonMember, 0x22},
		{JoinSendOnlyNonMember, 0x24},
		{JoinSendOnlyFullMember, 0x28},
		{JoinFullMember | JoinSendOnlyNonMember, 0x25},
	}
	for _, tt := range tests {
		r.JoinState = tt.js
		if err := r.Encode(b); err != nil {
			t.Fatal(err)
		}
		if b[48] != tt.wire {
			t.Errorf("JoinState %#x: byte 48 = %#02x, want %#02x", uint8(tt.js), b[48], tt.wire)
		}
	}
}

func TestSARecordErrors(t *testing.T) {
	checkCodecErrors(t, PathRecordLen, PathRecord{FlowLabel: 1 << 20}, PathRecord{NumbPath: 128},
		PathRecord{QoSClass: 0x1000}, PathRecord{SL: 16}, PathRecord{MTUSelector: 4}, PathRecord{MTU: 64},
		PathRecord{Rate: 64}, PathRecord{PacketLifeTime: 64})
	checkCodecErrors(t, MCMemberRecordLen, MCMemberRecord{FlowLabel: 1 << 20}, MCMemberRecord{SL: 16},
		MCMemberRecord{Scope: 16}, MCMemberRecord{JoinState: 16}, MCMemberRecord{RateSelector: 4},
		MCMemberRecord{PacketLifeTimeSelector: 4})
}

func TestComponentMasks(t *testing.T) {
	// The mask Linux IPoIB sends with its PathRecord query, read from frame
	// 32 of the soft-RoCE capture: DGID, SGID, TClass, NumbPath, P_Key.
	m := PathRecCompDGID | PathRecCompSGID | PathRecCompTClass | PathRecCompNumbPath | PathRecCompPKey
	if m != 0x340c {
		t.Errorf("IPoIB PathRecord mask = %v, want 0x340c", m)
	}
	if !m.Has(PathRecCompDGID|PathRecCompPKey) || m.Has(PathRecCompSL) {
		t.Errorf("Has misreads %v", m)
	}
	if PathRecCompServiceID != 0x3 || PathRecCompPreference != 1<<22 {
		t.Errorf("PathRecord mask ends: ServiceID %v, Preference %v", PathRecCompServiceID, PathRecCompPreference)
	}
	// A broadcast join: MGID, PortGID, Q_Key, P_Key, SL, FlowLabel,
	// TClass, JoinState ... each bit in the order IBA 15.2.5.17 lists the fields.
	bits := []ComponentMask{
		MCMemberCompMGID, MCMemberCompPortGID, MCMemberCompQKey, MCMemberCompMLID,
		MCMemberCompMTUSelector, MCMemberCompMTU, MCMemberCompTClass, MCMemberCompPKey,
		MCMemberCompRateSelector, MCMemberCompRate, MCMemberCompPacketLifeTimeSelector,
		MCMemberCompPacketLifeTime, MCMemberCompSL, MCMemberCompFlowLabel,
		MCMemberCompHopLimit, MCMemberCompScope, MCMemberCompJoinState, MCMemberCompProxyJoin,
	}
	for i, b := range bits {
		if b != 1<<i {
			t.Errorf("MCMemberRecord component %d = %v, want bit %d", i, b, i)
		}
	}
}

func TestPacketLifeTimeDuration(t *testing.T) {
	tests := []struct {
		v    uint8
		want time.Duration
	}{
		{0, 4096 * time.Nanosecond},
		{0x12, 4096 * time.Nanosecond << 18}, // ~1.07 s, what OpenSM hands out
		{40, 4096 * time.Nanosecond << 40},
		{41, math.MaxInt64},
		{63, math.MaxInt64},
	}
	for _, tt := range tests {
		if got := PacketLifeTimeDuration(tt.v); got != tt.want {
			t.Errorf("PacketLifeTimeDuration(%d) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

// pathRecordReserved clears the reserved bits of a PathRecord's bytes:
// what re-encoding a decoded record cannot reproduce.
func pathRecordReserved(b []byte) {
	b[44] &^= 0x70
	clear(b[58:])
}

// mcMemberRecordReserved does the same for an MCMemberRecord.
func mcMemberRecordReserved(b []byte) {
	b[49] &= 0x80
	b[50], b[51] = 0, 0
}

func FuzzDecodePathRecord(f *testing.F) {
	b, _ := goldenPathRecord(f)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReencode[PathRecord](t, b, PathRecordLen, nil, pathRecordReserved)
	})
}

func FuzzDecodeMCMemberRecord(f *testing.F) {
	b, _ := goldenMCMemberRecord(f)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReencode[MCMemberRecord](t, b, MCMemberRecordLen, nil, mcMemberRecordReserved)
	})
}
