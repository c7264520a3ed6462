package ib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/internal/looptest"
)

// The SA exchange of frames 32 and 33 of softroce-demo-infiniband.pcap
// (a real capture, also in ../shared/captures): Linux IPoIB on the port
// with LID 4 and GID fe80::2:c902:24:f636 asks the SA at LID 1 for the
// path to fe80::2:c903:0:1895, over SL 0, QP1, Q_Key 0x80010000. The hex
// below is copied from the capture's MADs (frame offset 28) and annotated
// field by field against IBA 13.4.2 Table 97, 15.2.1.1 Table 181 and
// 15.2.5.16 Table 205.
const (
	saCapTIDHigh = 0x0000000b
	saCapTIDLow  = 0xb9647f9e
	saCapTID     = 0x0000000bb9647f9e
)

var (
	saCapSGID  = GIDFromParts(0xfe80000000000000, 0x0002c9020024f636)
	saCapDGID  = GIDFromParts(0xfe80000000000000, 0x0002c90300001895)
	saCapBcast = GIDFromParts(0xff12401bffff0000, 0x00000000ffffffff)
)

// saCapFrame32 is the SubnAdmGet(PathRecord) request.
var saCapFrame32 = []string{
	"01 03 02 01",                         // BaseVersion 1, SubnAdm, ClassVersion 2, Get
	"00 00 00 00",                         // Status, ClassSpecific
	"00 00 00 0b b9 64 7f 9e",             // TransactionID
	"00 35 00 00",                         // AttributeID PathRecord, reserved
	"00 00 00 00",                         // AttributeModifier
	"00 00 00 00 00 00 00 00 00 00 00 00", // RMPP header: not active
	"00 00 00 00 00 00 00 00",             // SM_Key
	"00 00 00 00",                         // AttributeOffset 0 in requests, reserved
	"00 00 00 00 00 00 34 0c",             // ComponentMask DGID|SGID|TClass|NumbPath|P_Key
	"00 00 00 00 00 00 00 00",             // ServiceID
	"fe 80 00 00 00 00 00 00 00 02 c9 03 00 00 18 95", // DGID
	"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // SGID
	"00 00 00 00", // DLID, SLID
	"00 00 00 00", // RawTraffic, FlowLabel, HopLimit
	"00 01 ff ff", // TClass 0; Reversible 0, NumbPath 1; P_Key
}

// saCapFrame33 is the SA's SubnAdmGetResp(PathRecord) answer.
var saCapFrame33 = []string{
	"01 03 02 81",                         // BaseVersion 1, SubnAdm, ClassVersion 2, GetResp
	"00 00 00 00",                         // Status 0, ClassSpecific
	"00 00 00 0b b9 64 7f 9e",             // TransactionID, copied back
	"00 35 00 00",                         // AttributeID PathRecord, reserved
	"00 00 00 00",                         // AttributeModifier
	"00 00 00 00 00 00 00 00 00 00 00 00", // RMPP header: not active
	"00 00 00 00 00 00 00 00",             // SM_Key
	"00 08 00 00",                         // AttributeOffset 8 words (64 bytes), reserved
	"00 00 00 00 00 00 34 0c",             // ComponentMask, copied back
	"00 00 00 00 00 00 00 00",             // ServiceID
	"fe 80 00 00 00 00 00 00 00 02 c9 03 00 00 18 95", // DGID
	"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // SGID
	"00 02 00 04", // DLID 2, SLID 4
	"00 00 00 00", // RawTraffic 0, FlowLabel 0, HopLimit 0
	"00 80 ff ff", // TClass 0; Reversible 1, NumbPath 0; P_Key
	"00 00",       // QoSClass 0, SL 0
	"84 83 92 00", // MTU =2048, Rate =10 Gb/s, PacketLifeTime =0x12, Preference 0
}

// saCapFrame33Record is saCapFrame33's PathRecord as the spec reads it.
var saCapFrame33Record = PathRecord{
	DGID: saCapDGID, SGID: saCapSGID, DLID: 2, SLID: 4,
	Reversible: true, PKey: PKeyDefault,
	MTUSelector: SelectorExactly, MTU: MTU2048,
	RateSelector: SelectorExactly, Rate: Rate10Gbps,
	PacketLifeTimeSelector: SelectorExactly, PacketLifeTime: 0x12,
}

// saMCRequestGolden is a hand-laid MCMemberRecord request (IBA 15.2.5.17
// Table 206) for the IPoIB broadcast group of the default partition,
// joining or leaving as a full member, with the given method byte.
func saMCRequestGolden(t testing.TB, method string, tid uint64) []byte {
	return saHexMAD(t,
		"01 03 02 "+method, // BaseVersion 1, SubnAdm, ClassVersion 2, method
		"00 00 00 00",      // Status, ClassSpecific
		fmt.Sprintf("%016x", tid),
		"00 38 00 00",                         // AttributeID MCMemberRecord, reserved
		"00 00 00 00",                         // AttributeModifier
		"00 00 00 00 00 00 00 00 00 00 00 00", // RMPP header
		"00 00 00 00 00 00 00 00",             // SM_Key
		"00 00 00 00",                         // AttributeOffset, reserved
		"00 00 00 00 00 01 00 83",             // ComponentMask MGID|PortGID|P_Key|JoinState
		"ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff", // MGID
		"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // PortGID
		"00 00 00 00", // Q_Key
		"00 00",       // MLID
		"00 00",       // MTUSelector/MTU, TClass
		"ff ff",       // P_Key
		"00 00",       // RateSelector/Rate, PacketLifeTimeSelector/PacketLifeTime
		"00 00 00 00", // SL, FlowLabel, HopLimit
		"01",          // Scope 0, JoinState full member
	)
}

// saMCReplyGolden is the SA's answer to saMCRequestGolden: the group's
// parameters as an SM running IPoIB's broadcast group hands them out.
func saMCReplyGolden(t testing.TB, method string, tid uint64) []byte {
	return saHexMAD(t,
		"01 03 02 "+method, // response method
		"00 00 00 00",
		fmt.Sprintf("%016x", tid),
		"00 38 00 00",
		"00 00 00 00",
		"00 00 00 00 00 00 00 00 00 00 00 00",
		"00 00 00 00 00 00 00 00",
		"00 07 00 00",             // AttributeOffset 7 words (56 bytes)
		"00 00 00 00 00 01 00 83", // ComponentMask, copied back
		"ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff", // MGID
		"fe 80 00 00 00 00 00 00 00 02 c9 02 00 24 f6 36", // PortGID
		"00 00 0b 1b", // Q_Key 0xb1b
		"c0 01",       // MLID 0xc001
		"84 00",       // MTU =2048, TClass 0
		"ff ff",       // P_Key
		"83 92",       // Rate =10 Gb/s, PacketLifeTime =0x12
		"00 00 00 00", // SL 0, FlowLabel 0, HopLimit 0
		"21",          // Scope 2 (link-local), JoinState full member
	)
}

var saMCReplyRecord = MCMemberRecord{
	MGID: saCapBcast, PortGID: saCapSGID, QKey: QKeyIPoIBDefault, MLID: 0xc001,
	MTUSelector: SelectorExactly, MTU: MTU2048, PKey: PKeyDefault,
	RateSelector: SelectorExactly, Rate: Rate10Gbps,
	PacketLifeTimeSelector: SelectorExactly, PacketLifeTime: 0x12,
	Scope: MGIDScopeLinkLocal, JoinState: JoinFullMember,
}

// saHexMAD turns annotated hex lines into a 256-byte MAD, zero-padded.
func saHexMAD(t testing.TB, lines ...string) []byte {
	t.Helper()
	return madHex(t, MADLen, lines...)
}

// saMADPatch returns a copy of b with bytes at off replaced by v.
func saMADPatch(b []byte, off int, v ...byte) []byte {
	b = bytes.Clone(b)
	copy(b[off:], v)
	return b
}

// saMADWithTID returns a copy of b carrying tid.
func saMADWithTID(b []byte, tid uint64) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint64(b[8:], tid)
	return b
}

// saMADWithStatus returns a copy of b with the Status field set.
func saMADWithStatus(b []byte, st uint16) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint16(b[4:], st)
	return b
}

// saFakePort is a MADPort that records what is sent and lets the test
// play the SA by calling the handler.
type saFakePort struct {
	loop    *aio.Context
	handler func(MADAddress, []byte)
	sent    []saSentMAD
	keep    bool // record sends (off in the allocation test)
	nsent   int
	sendErr error
	onSend  func(dst MADAddress, mad []byte) // runs inside Send, after recording
}

type saSentMAD struct {
	dst MADAddress
	mad []byte
	at  time.Time
}

func (p *saFakePort) SetHandler(fn func(MADAddress, []byte)) { p.handler = fn }

func (p *saFakePort) Send(dst MADAddress, mad []byte) error {
	if len(mad) != MADLen {
		return fmt.Errorf("fake MAD port: %d-byte MAD: %w", len(mad), ErrMADLength)
	}
	if p.sendErr != nil {
		return p.sendErr
	}
	p.nsent++
	if p.keep {
		p.sent = append(p.sent, saSentMAD{dst: dst, mad: bytes.Clone(mad), at: p.loop.Now()})
	}
	if p.onSend != nil {
		p.onSend(dst, mad)
	}
	return nil
}

func (p *saFakePort) Close() error { return nil }

// saEnv is one client on a manual-clock loop that the test goroutine
// holds, with the fake port under it.
type saEnv struct {
	t    testing.TB
	clk  *aio.ManualClock
	loop *aio.Context
	port *saFakePort
	c    *SAClient
	t0   time.Time
}

var saTestStart = time.Date(2008, 5, 14, 19, 52, 9, 0, time.UTC)

// saTestPort is the capture's port: LID 4, SM at LID 1 with SL 0.
var saTestPort = PortAttr{
	Num: 1, State: PortActive, LinkLayer: LinkLayerInfiniBand,
	LID: 4, SMLID: 1, SMSL: 0, ActiveMTU: MTU2048, MaxMTU: MTU4096, Rate: Rate10Gbps,
	GIDs:  []GID{saCapSGID},
	PKeys: []PKey{PKeyDefault, 0x8001},
}

// saFromSM is where the SA's answers come from in these tests.
var saFromSM = MADAddress{LID: 1, SL: 0, QPN: QPNGSI, QKey: QKeyGSI}

func newSAEnv(t testing.TB, cfg SAClientConfig) *saEnv {
	t.Helper()
	clk := aio.NewManualClock(saTestStart)
	loop := looptest.Home(t, aio.WithClock(clk), aio.WithName("sa-test"))
	if cfg.TIDHigh == 0 {
		cfg.TIDHigh = saCapTIDHigh
	}
	port := &saFakePort{loop: loop, keep: true}
	c, err := NewSAClient(loop, port, saTestPort, cfg)
	if err != nil {
		t.Fatalf("NewSAClient: %v", err)
	}
	c.tidLow = saCapTIDLow // the capture's TID comes first
	return &saEnv{t: t, clk: clk, loop: loop, port: port, c: c, t0: saTestStart}
}

// advanceTo moves the clock to t0+d and runs whatever became due.
func (e *saEnv) advanceTo(d time.Duration) {
	e.clk.Set(e.t0.Add(d))
	for e.loop.Poll(false) {
	}
}

func (e *saEnv) deliver(src MADAddress, mad []byte) { e.port.handler(src, mad) }

type saResult[R any] struct {
	rec R
	err error
	at  time.Duration
}

func saCollect[R any](e *saEnv, out *[]saResult[R]) func(R, error) {
	return func(r R, err error) {
		*out = append(*out, saResult[R]{rec: r, err: err, at: e.loop.Now().Sub(e.t0)})
	}
}

// getCapturePath starts the query of frame 32.
func (e *saEnv) getCapturePath(out *[]saResult[PathRecord]) SAQuery {
	e.t.Helper()
	q, mask := PathQueryByGID(e.c.PortGID(), saCapDGID, PKeyDefault)
	mask |= PathRecCompTClass // Linux adds the broadcast group's TClass
	h, err := e.c.GetPathRecord(q, mask, saCollect(e, out))
	if err != nil {
		e.t.Fatalf("GetPathRecord: %v", err)
	}
	return h
}

func TestSAClientPathRecordGetCapture(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	var res []saResult[PathRecord]
	h := e.getCapturePath(&res)
	if h.TID() != saCapTID || !h.Pending() || e.c.Outstanding() != 1 {
		t.Fatalf("handle TID %#x pending %v outstanding %d", h.TID(), h.Pending(), e.c.Outstanding())
	}
	if len(e.port.sent) != 1 {
		t.Fatalf("sent %d MADs, want 1", len(e.port.sent))
	}
	s := e.port.sent[0]
	if want := saHexMAD(t, saCapFrame32...); !bytes.Equal(s.mad, want) {
		t.Errorf("request differs from the capture's frame 32:\n got %x\nwant %x", s.mad, want)
	}
	wantDst := MADAddress{LID: 1, SL: 0, QPN: QPNGSI, QKey: QKeyGSI, PKeyIndex: 0}
	if s.dst != wantDst {
		t.Errorf("sent to %+v, want %+v", s.dst, wantDst)
	}
	e.advanceTo(47 * time.Millisecond)
	e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
	if len(res) != 1 || res[0].err != nil {
		t.Fatalf("results %+v, want one success", res)
	}
	if res[0].rec != saCapFrame33Record {
		t.Errorf("record\n got %+v\nwant %+v", res[0].rec, saCapFrame33Record)
	}
	if h.Pending() || e.c.Outstanding() != 0 || h.Cancel() {
		t.Errorf("query still pending after its answer")
	}
	// No retransmission after the answer, and a duplicate is ignored.
	e.advanceTo(time.Minute)
	e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
	if len(e.port.sent) != 1 || len(res) != 1 {
		t.Errorf("after the answer: %d sends, %d results", len(e.port.sent), len(res))
	}
	want := SAClientStats{Sent: 1, Replies: 1, Unsolicited: 1}
	if got := e.c.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func TestSAClientQueryHelpers(t *testing.T) {
	dlid := LID(0x0012)
	tests := []struct {
		name     string
		start    func(e *saEnv, out *[]saResult[PathRecord]) (SAQuery, error)
		wantMask ComponentMask
		check    func(t *testing.T, data []byte)
		wantName string
	}{{
		name: "by GID",
		start: func(e *saEnv, out *[]saResult[PathRecord]) (SAQuery, error) {
			q, m := PathQueryByGID(e.c.PortGID(), saCapDGID, 0x8001)
			return e.c.GetPathRecord(q, m, saCollect(e, out))
		},
		wantMask: 0x300c, // DGID, SGID, NumbPath, P_Key
		check: func(t *testing.T, d []byte) {
			if !bytes.Equal(d[8:24], saCapDGID[:]) || !bytes.Equal(d[24:40], saCapSGID[:]) ||
				d[49] != 1 || d[50] != 0x80 || d[51] != 0x01 {
				t.Errorf("record bytes %x", d[:64])
			}
		},
		wantName: "PathRecord Get DGID fe80::2:c903:0:1895",
	}, {
		name: "by LID",
		start: func(e *saEnv, out *[]saResult[PathRecord]) (SAQuery, error) {
			q, m := PathQueryByLID(e.c.PortGID(), dlid, PKeyDefault)
			return e.c.GetPathRecord(q, m, saCollect(e, out))
		},
		wantMask: 0x3018, // SGID, DLID, NumbPath, P_Key
		check: func(t *testing.T, d []byte) {
			if d[40] != 0x00 || d[41] != 0x12 || !bytes.Equal(d[24:40], saCapSGID[:]) ||
				!bytes.Equal(d[8:24], make([]byte, 16)) {
				t.Errorf("record bytes %x", d[:64])
			}
		},
		wantName: "PathRecord Get DLID 0x0012",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, SAClientConfig{Tries: 1})
			var res []saResult[PathRecord]
			if _, err := tt.start(e, &res); err != nil {
				t.Fatal(err)
			}
			m := e.port.sent[0].mad
			if got := ComponentMask(binary.BigEndian.Uint64(m[48:])); got != tt.wantMask {
				t.Errorf("component mask %v, want %v", got, tt.wantMask)
			}
			tt.check(t, m[SADataOffset:])
			e.advanceTo(time.Second)
			if len(res) != 1 || !strings.HasPrefix(res[0].err.Error(), tt.wantName+": ") {
				t.Errorf("results %+v, want a timeout naming %q", res, tt.wantName)
			}
		})
	}
}

func TestSAClientMCMemberRecord(t *testing.T) {
	tests := []struct {
		name               string
		start              func(c *SAClient, r MCMemberRecord, m ComponentMask, done func(MCMemberRecord, error)) (SAQuery, error)
		reqMethod, respHex string
	}{
		{"Set", (*SAClient).SetMCMemberRecord, "02", "81"},
		{"Delete", (*SAClient).DeleteMCMemberRecord, "15", "95"},
		{"Get", (*SAClient).GetMCMemberRecord, "01", "81"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, SAClientConfig{})
			var res []saResult[MCMemberRecord]
			r, m := MCMemberQuery(testBroadcastMGID, e.c.PortGID(), PKeyDefault, JoinFullMember)
			h, err := tt.start(e.c, r, m, saCollect(e, &res))
			if err != nil {
				t.Fatal(err)
			}
			if want := saMCRequestGolden(t, tt.reqMethod, saCapTID); !bytes.Equal(e.port.sent[0].mad, want) {
				t.Errorf("request\n got %x\nwant %x", e.port.sent[0].mad, want)
			}
			// The answer to another method is not ours.
			wrong := "81"
			if tt.respHex == "81" {
				wrong = "95"
			}
			e.deliver(saFromSM, saMCReplyGolden(t, wrong, saCapTID))
			if len(res) != 0 || !h.Pending() {
				t.Fatalf("completed by a %s answer: %+v", wrong, res)
			}
			e.deliver(saFromSM, saMCReplyGolden(t, tt.respHex, saCapTID))
			if len(res) != 1 || res[0].err != nil || res[0].rec != saMCReplyRecord {
				t.Fatalf("results %+v, want %+v", res, saMCReplyRecord)
			}
			want := SAClientStats{Sent: 1, Replies: 1, Mismatched: 1}
			if got := e.c.Stats(); got != want {
				t.Errorf("stats %+v, want %+v", got, want)
			}
		})
	}
}

func TestSAClientRetransmitAndTimeout(t *testing.T) {
	tests := []struct {
		name     string
		cfg      SAClientConfig
		sendsAt  []time.Duration
		failAt   time.Duration
		wantText string
	}{{
		name:     "defaults",
		cfg:      SAClientConfig{},
		sendsAt:  []time.Duration{0, 1 * time.Second, 3 * time.Second, 7 * time.Second},
		failAt:   11 * time.Second,
		wantText: "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 4 tries (11s): SA timeout",
	}, {
		name:     "500ms capped at 3s",
		cfg:      SAClientConfig{Timeout: 500 * time.Millisecond, MaxTimeout: 3 * time.Second},
		sendsAt:  []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 3500 * time.Millisecond},
		failAt:   6500 * time.Millisecond,
		wantText: "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 4 tries (6.5s): SA timeout",
	}, {
		name:     "one try",
		cfg:      SAClientConfig{Tries: 1, Timeout: 250 * time.Millisecond},
		sendsAt:  []time.Duration{0},
		failAt:   250 * time.Millisecond,
		wantText: "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 1 tries (250ms): SA timeout",
	}, {
		name: "six tries, cap below first doubling",
		cfg:  SAClientConfig{Tries: 6, Timeout: time.Second, MaxTimeout: 1500 * time.Millisecond},
		sendsAt: []time.Duration{0, 1000 * time.Millisecond, 2500 * time.Millisecond,
			4000 * time.Millisecond, 5500 * time.Millisecond, 7000 * time.Millisecond},
		failAt:   8500 * time.Millisecond,
		wantText: "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 6 tries (8.5s): SA timeout",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, tt.cfg)
			var res []saResult[PathRecord]
			e.getCapturePath(&res)
			// Step in 50 ms ticks so early or late timers show.
			for d := time.Duration(0); d < tt.failAt; d += 50 * time.Millisecond {
				e.advanceTo(d)
			}
			if len(res) != 0 {
				t.Fatalf("failed early: %+v", res)
			}
			e.advanceTo(tt.failAt)
			if len(e.port.sent) != len(tt.sendsAt) {
				t.Fatalf("%d transmissions, want %d", len(e.port.sent), len(tt.sendsAt))
			}
			first := e.port.sent[0].mad
			for i, s := range e.port.sent {
				if at := s.at.Sub(e.t0); at != tt.sendsAt[i] {
					t.Errorf("transmission %d at %v, want %v", i, at, tt.sendsAt[i])
				}
				if !bytes.Equal(s.mad, first) {
					t.Errorf("transmission %d differs from the first (TID %#x)", i, binary.BigEndian.Uint64(s.mad[8:]))
				}
			}
			if len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			r := res[0]
			if r.at != tt.failAt || !errors.Is(r.err, ErrSATimeout) || r.err.Error() != tt.wantText {
				t.Errorf("at %v: %v\nwant at %v: %s", r.at, r.err, tt.failAt, tt.wantText)
			}
			if r.rec != (PathRecord{}) {
				t.Errorf("failed query returned a record: %+v", r.rec)
			}
			// A late answer is ignored.
			e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
			want := SAClientStats{Sent: 1, Retransmitted: uint64(len(tt.sendsAt) - 1), Timeouts: 1, Unsolicited: 1}
			if got := e.c.Stats(); got != want || len(res) != 1 {
				t.Errorf("stats %+v, want %+v", got, want)
			}
		})
	}
}

func TestSAClientBusy(t *testing.T) {
	busy := saMADWithStatus(saHexMAD(t, saCapFrame33...), 0x0001)
	t.Run("retry later", func(t *testing.T) {
		e := newSAEnv(t, SAClientConfig{})
		var res []saResult[PathRecord]
		e.getCapturePath(&res)
		e.advanceTo(300 * time.Millisecond)
		e.deliver(saFromSM, busy)
		if len(res) != 0 {
			t.Fatalf("busy completed the query: %+v", res)
		}
		// The retry waits a full interval from the busy answer.
		e.advanceTo(1299 * time.Millisecond)
		if len(e.port.sent) != 1 {
			t.Fatalf("retried before the interval: %d sends", len(e.port.sent))
		}
		e.advanceTo(1300 * time.Millisecond)
		if len(e.port.sent) != 2 || !bytes.Equal(e.port.sent[1].mad, e.port.sent[0].mad) {
			t.Fatalf("no identical retry at 1.3s: %d sends", len(e.port.sent))
		}
		e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
		if len(res) != 1 || res[0].err != nil || res[0].rec != saCapFrame33Record {
			t.Fatalf("results %+v", res)
		}
		want := SAClientStats{Sent: 1, Retransmitted: 1, Replies: 2, Busy: 1}
		if got := e.c.Stats(); got != want {
			t.Errorf("stats %+v, want %+v", got, want)
		}
	})
	t.Run("busy to the end", func(t *testing.T) {
		e := newSAEnv(t, SAClientConfig{Tries: 2})
		var res []saResult[PathRecord]
		e.getCapturePath(&res)
		e.deliver(saFromSM, busy)
		e.advanceTo(time.Second)
		e.advanceTo(1500 * time.Millisecond)
		e.deliver(saFromSM, busy)
		if len(res) != 1 {
			t.Fatalf("results %+v, want the final busy failure", res)
		}
		err := res[0].err
		const want = "PathRecord Get DGID fe80::2:c903:0:1895: SA still busy after 2 tries (1.5s): SA timeout " +
			"(SubnAdm GetResp(PathRecord): MAD status 0x0001 (busy))"
		if !errors.Is(err, ErrSATimeout) || !errors.Is(err, ErrMADBusy) || err.Error() != want {
			t.Errorf("error %q\nwant  %q", err, want)
		}
		if st := e.c.Stats(); st.Busy != 2 || st.Timeouts != 1 || st.Replies != 2 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestSAClientStatusErrors(t *testing.T) {
	pathReply := saHexMAD(t, saCapFrame33...)
	tests := []struct {
		name   string
		mc     bool
		status uint16
		want   string
		is     []error
	}{{
		name: "no records", status: 0x0300,
		want: "PathRecord Get DGID fe80::2:c903:0:1895: SA status ERR_NO_RECORDS (3)",
		is:   []error{SAErrNoRecords},
	}, {
		name: "join refused", mc: true, status: 0x0200,
		want: "MCMemberRecord Set MGID ff12:401b:ffff::ffff:ffff: SA status ERR_REQ_INVALID (2)",
		is:   []error{SAErrReqInvalid},
	}, {
		name: "insufficient components", mc: true, status: 0x0600,
		want: "MCMemberRecord Set MGID ff12:401b:ffff::ffff:ffff: SA status ERR_REQ_INSUFFICIENT_COMPONENTS (6)",
		is:   []error{SAErrReqInsufficientComponents},
	}, {
		name: "redirect", status: 0x0002,
		want: "PathRecord Get DGID fe80::2:c903:0:1895: MAD status 0x0002 (redirect required)",
		is:   []error{ErrMADRedirect},
	}, {
		name: "method/attribute unsupported", status: 0x000c,
		want: "PathRecord Get DGID fe80::2:c903:0:1895: MAD status 0x000c (method/attribute combination not supported)",
		is:   []error{InvalidFieldMethodAttr},
	}, {
		name: "invalid value and SA code", mc: true, status: 0x051c,
		want: "MCMemberRecord Set MGID ff12:401b:ffff::ffff:ffff: MAD status 0x051c (invalid attribute or modifier value, class code 5): SA status ERR_REQ_INVALID_GID (5)",
		is:   []error{InvalidFieldValue, SAErrReqInvalidGID},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, SAClientConfig{})
			var err error
			calls := 0
			if tt.mc {
				r, m := MCMemberQuery(saCapBcast, e.c.PortGID(), PKeyDefault, JoinFullMember)
				if _, serr := e.c.SetMCMemberRecord(r, m, func(rec MCMemberRecord, e error) {
					calls++
					err = e
					if rec != (MCMemberRecord{}) {
						t.Errorf("failed join returned a record: %+v", rec)
					}
				}); serr != nil {
					t.Fatal(serr)
				}
				e.deliver(saFromSM, saMADWithStatus(saMCReplyGolden(t, "81", saCapTID), tt.status))
			} else {
				var res []saResult[PathRecord]
				e.getCapturePath(&res)
				e.deliver(saFromSM, saMADWithStatus(pathReply, tt.status))
				calls = len(res)
				if calls == 1 {
					err = res[0].err
				}
			}
			if calls != 1 || err == nil {
				t.Fatalf("%d calls, error %v", calls, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error %q\nwant  %q", err, tt.want)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v) false", target)
				}
			}
			var mse *MADStatusError
			if !errors.As(err, &mse) || uint16(mse.Status) != tt.status || mse.Class != MgmtClassSubnAdm {
				t.Errorf("errors.As MADStatusError: %+v", mse)
			}
			if errors.Is(err, ErrSATimeout) || errors.Is(err, ErrMADBusy) {
				t.Errorf("a status error matches timeout or busy")
			}
			e.advanceTo(time.Minute)
			if len(e.port.sent) != 1 {
				t.Errorf("%d sends after a final status", len(e.port.sent))
			}
			if st := e.c.Stats(); st.Errors != 1 || st.Replies != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestSAClientIgnoresStrayMADs(t *testing.T) {
	good := saHexMAD(t, saCapFrame33...)
	var cm [MADLen]byte
	copy(cm[:], good)
	cm[1], cm[2] = byte(MgmtClassComMgmt), 2
	tests := []struct {
		name string
		src  MADAddress
		mad  []byte
		want SAClientStats
	}{
		{"unknown TID", saFromSM, saMADWithTID(good, saCapTID+1), SAClientStats{Unsolicited: 1}},
		{"other client's high half", saFromSM, saMADWithTID(good, 0x0000000cb9647f9e), SAClientStats{Unsolicited: 1}},
		{"request method", saFromSM, saMADPatch(good, 3, byte(MethodGet)), SAClientStats{Unsolicited: 1}},
		{"report", saFromSM, saMADPatch(good, 3, byte(MethodReport)), SAClientStats{Unsolicited: 1}},
		{"CM class", saFromSM, cm[:], SAClientStats{Unsolicited: 1}},
		{"wrong method", saFromSM, saMADPatch(good, 3, byte(MethodGetTableResp)), SAClientStats{Mismatched: 1}},
		{"wrong attribute", saFromSM, saMADPatch(good, 16, 0x00, 0x38), SAClientStats{Mismatched: 1}},
		{"wrong source LID", MADAddress{LID: 2, QPN: QPNGSI}, good, SAClientStats{Mismatched: 1}},
		{"LID 0", MADAddress{LID: 0, QPN: QPNGSI}, good, SAClientStats{Mismatched: 1}},
		{"wrong source QP", MADAddress{LID: 1, QPN: 0}, good, SAClientStats{Mismatched: 1}},
		{"short", saFromSM, good[:255], SAClientStats{Malformed: 1}},
		{"long", saFromSM, append(bytes.Clone(good), 0), SAClientStats{Malformed: 1}},
		{"empty", saFromSM, nil, SAClientStats{Malformed: 1}},
		{"base version 2", saFromSM, saMADPatch(good, 0, 2), SAClientStats{Malformed: 1}},
		{"class version 1", saFromSM, saMADPatch(good, 2, 1), SAClientStats{Malformed: 1}},
		{"AttributeOffset 26 words", saFromSM, saMADPatch(good, 44, 0x00, 26), SAClientStats{Malformed: 1}},
		{"RMPP version 2", saFromSM, saMADPatch(good, 24, 2, 1, 1), SAClientStats{Malformed: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, SAClientConfig{})
			var res []saResult[PathRecord]
			h := e.getCapturePath(&res)
			e.deliver(tt.src, tt.mad)
			if len(res) != 0 || !h.Pending() {
				t.Fatalf("stray MAD completed the query: %+v", res)
			}
			tt.want.Sent = 1
			if got := e.c.Stats(); got != tt.want {
				t.Errorf("stats %+v, want %+v", got, tt.want)
			}
			// The real answer still gets through.
			e.deliver(saFromSM, good)
			if len(res) != 1 || res[0].err != nil {
				t.Errorf("real answer after the stray: %+v", res)
			}
		})
	}
}

func TestSAClientCancel(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	var res []saResult[PathRecord]
	h := e.getCapturePath(&res)
	e.advanceTo(500 * time.Millisecond)
	if !h.Cancel() {
		t.Fatal("Cancel of a pending query returned false")
	}
	if h.Cancel() || h.Pending() || e.c.Outstanding() != 0 {
		t.Error("query still pending after Cancel")
	}
	e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
	e.advanceTo(time.Minute)
	if len(res) != 0 || len(e.port.sent) != 1 {
		t.Errorf("after Cancel: %d results, %d sends", len(res), len(e.port.sent))
	}
	// The next query reuses the query object; the old handle must not
	// reach it.
	h2 := e.getCapturePath(&res)
	if h2.q != h.q {
		t.Log("query object not reused; stale-handle check is weaker")
	}
	if h2.TID() == h.TID() || h.Cancel() || !h2.Pending() {
		t.Errorf("stale handle touched the new query (TIDs %#x, %#x)", h.TID(), h2.TID())
	}
	if (SAQuery{}).Cancel() || (SAQuery{}).Pending() {
		t.Error("zero SAQuery claims a query")
	}
	if st := e.c.Stats(); st.Cancelled != 1 || st.Unsolicited != 1 || st.Sent != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestSAClientClose(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	var paths []saResult[PathRecord]
	var groups []saResult[MCMemberRecord]
	e.getCapturePath(&paths)
	r, m := MCMemberQuery(saCapBcast, e.c.PortGID(), PKeyDefault, JoinFullMember)
	var order []string
	if _, err := e.c.DeleteMCMemberRecord(r, m, func(rec MCMemberRecord, err error) {
		order = append(order, "delete")
		groups = append(groups, saResult[MCMemberRecord]{rec: rec, err: err})
		// A callback run by Close cannot start anything new.
		if _, err := e.c.GetMCMemberRecord(r, m, func(MCMemberRecord, error) { t.Error("called") }); !errors.Is(err, ErrClosed) {
			t.Errorf("query from a Close callback: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(paths) != 1 || len(groups) != 1 || len(order) != 1 {
		t.Fatalf("Close completed %d paths, %d groups", len(paths), len(groups))
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{paths[0].err, "PathRecord Get DGID fe80::2:c903:0:1895: SA client closed: closed"},
		{groups[0].err, "MCMemberRecord Delete MGID ff12:401b:ffff::ffff:ffff: SA client closed: closed"},
	} {
		if !errors.Is(c.err, ErrClosed) || c.err.Error() != c.want {
			t.Errorf("error %q, want %q", c.err, c.want)
		}
	}
	if e.port.handler != nil {
		t.Error("Close left the port handler installed")
	}
	e.advanceTo(time.Minute)
	if len(e.port.sent) != 2 {
		t.Errorf("%d sends after Close, want the 2 first transmissions", len(e.port.sent))
	}
	q, mask := PathQueryByGID(saCapSGID, saCapDGID, PKeyDefault)
	if _, err := e.c.GetPathRecord(q, mask, func(PathRecord, error) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("GetPathRecord after Close: %v", err)
	}
	if err := e.c.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if st := e.c.Stats(); st.Cancelled != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestSAClientSetSM(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	var res []saResult[PathRecord]
	e.getCapturePath(&res)
	if err := e.c.SetSM(7, 3); err != nil {
		t.Fatal(err)
	}
	if lid, sl := e.c.SM(); lid != 7 || sl != 3 {
		t.Errorf("SM() = %v, %d", lid, sl)
	}
	e.advanceTo(time.Second)
	if len(e.port.sent) != 2 {
		t.Fatalf("%d sends, want 2", len(e.port.sent))
	}
	want := MADAddress{LID: 7, SL: 3, QPN: QPNGSI, QKey: QKeyGSI}
	if d := e.port.sent[1].dst; d != want {
		t.Errorf("retry went to %+v, want %+v", d, want)
	}
	if !bytes.Equal(e.port.sent[1].mad, e.port.sent[0].mad) {
		t.Error("retry to the new SM changed the MAD")
	}
	// Only the SMs the query went to may answer it.
	e.deliver(MADAddress{LID: 9, QPN: QPNGSI}, saHexMAD(t, saCapFrame33...))
	if len(res) != 0 {
		t.Fatal("answer from a third LID accepted")
	}
	e.deliver(MADAddress{LID: 7, SL: 3, QPN: QPNGSI, QKey: QKeyGSI}, saHexMAD(t, saCapFrame33...))
	if len(res) != 1 || res[0].err != nil {
		t.Fatalf("results %+v", res)
	}

	// UpdatePort re-reads the SM, the P_Key index and the GID.
	attr := saTestPort
	attr.SMLID, attr.SMSL = 0x20, 1
	attr.PKeys = []PKey{0x8001, 0x7fff}
	attr.GIDs = []GID{saCapDGID}
	if err := e.c.UpdatePort(attr); err != nil {
		t.Fatal(err)
	}
	e.getCapturePath(&res)
	want = MADAddress{LID: 0x20, SL: 1, QPN: QPNGSI, QKey: QKeyGSI, PKeyIndex: 1}
	if d := e.port.sent[2].dst; d != want || e.c.PortGID() != saCapDGID {
		t.Errorf("after UpdatePort: sent to %+v (want %+v), port GID %v", d, want, e.c.PortGID())
	}

	for _, bad := range []struct {
		lid LID
		sl  SL
	}{{0xc001, 0}, {LIDPermissive, 0}, {1, 16}} {
		if err := e.c.SetSM(bad.lid, bad.sl); !errors.Is(err, ErrFieldRange) {
			t.Errorf("SetSM(%v, %d) = %v", bad.lid, bad.sl, err)
		}
	}
	attr.SMSL = 20
	if err := e.c.UpdatePort(attr); !errors.Is(err, ErrFieldRange) {
		t.Errorf("UpdatePort with SL 20 = %v", err)
	}
	if lid, sl := e.c.SM(); lid != 0x20 || sl != 1 {
		t.Errorf("a refused update changed the SM to %v/%d", lid, sl)
	}
}

func TestSAClientSendFailures(t *testing.T) {
	errDown := errors.New("port down")
	tests := []struct {
		name    string
		setup   func(e *saEnv)
		wantErr error
		want    string
	}{{
		name:    "port refuses",
		setup:   func(e *saEnv) { e.port.sendErr = fmt.Errorf("umad send: %w", errDown) },
		wantErr: errDown,
		want:    "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 2 tries (3s): SA timeout; last send failed: umad send: port down",
	}, {
		name:    "no SM",
		setup:   func(e *saEnv) { _ = e.c.SetSM(0, 0) },
		wantErr: ErrSANoSM,
		want:    "PathRecord Get DGID fe80::2:c903:0:1895: no reply after 2 tries (3s): SA timeout; last send failed: no subnet manager LID known",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSAEnv(t, SAClientConfig{Tries: 2})
			tt.setup(e)
			var res []saResult[PathRecord]
			e.getCapturePath(&res)
			e.advanceTo(time.Second)
			e.advanceTo(3 * time.Second)
			if len(res) != 1 {
				t.Fatalf("results %+v", res)
			}
			err := res[0].err
			if !errors.Is(err, ErrSATimeout) || !errors.Is(err, tt.wantErr) || err.Error() != tt.want {
				t.Errorf("error %q\nwant  %q", err, tt.want)
			}
			if st := e.c.Stats(); st.SendErrors != 2 || st.Sent != 1 || st.Retransmitted != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	t.Run("recovers", func(t *testing.T) {
		e := newSAEnv(t, SAClientConfig{})
		e.port.sendErr = errDown
		var res []saResult[PathRecord]
		e.getCapturePath(&res)
		e.port.sendErr = nil
		e.advanceTo(time.Second)
		e.deliver(saFromSM, saHexMAD(t, saCapFrame33...))
		if len(res) != 1 || res[0].err != nil || len(e.port.sent) != 1 {
			t.Errorf("results %+v after %d sends", res, len(e.port.sent))
		}
	})
}

func TestSAClientBadInput(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	q, m := PathQueryByGID(saCapSGID, saCapDGID, PKeyDefault)
	if _, err := e.c.GetPathRecord(q, m, nil); err == nil {
		t.Error("nil callback accepted")
	}
	q.FlowLabel = 1 << 20
	if _, err := e.c.GetPathRecord(q, m, func(PathRecord, error) {}); !errors.Is(err, ErrFieldRange) {
		t.Errorf("bad FlowLabel: %v", err)
	}
	mc, mm := MCMemberQuery(saCapBcast, saCapSGID, PKeyDefault, 0x10)
	if _, err := e.c.SetMCMemberRecord(mc, mm, func(MCMemberRecord, error) {}); !errors.Is(err, ErrFieldRange) {
		t.Errorf("bad JoinState: %v", err)
	}
	if _, err := e.c.DeleteMCMemberRecord(mc, mm, nil); err == nil {
		t.Error("nil callback accepted")
	}
	if e.c.Outstanding() != 0 || len(e.port.sent) != 0 {
		t.Errorf("refused queries left %d outstanding, %d sent", e.c.Outstanding(), len(e.port.sent))
	}
	if _, err := NewSAClient(e.loop, e.port, saTestPort, SAClientConfig{Tries: -1}); err == nil {
		t.Error("negative Tries accepted")
	}
	attr := saTestPort
	attr.SMLID = 0xc000
	if _, err := NewSAClient(e.loop, e.port, attr, SAClientConfig{}); !errors.Is(err, ErrFieldRange) {
		t.Errorf("multicast SM LID: %v", err)
	}
	if _, err := NewSAClient(nil, e.port, saTestPort, SAClientConfig{}); err == nil {
		t.Error("nil loop accepted")
	}
}

func TestSAClientTIDs(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{TIDHigh: 0x1234})
	e.c.tidLow = 0xffffffff // wrap: 0 is skipped
	var res []saResult[PathRecord]
	seen := map[uint64]bool{}
	var want []uint64
	for i := range 4 {
		q, m := PathQueryByLID(saCapSGID, LID(i+1), PKeyDefault)
		h, err := e.c.GetPathRecord(q, m, saCollect(e, &res))
		if err != nil {
			t.Fatal(err)
		}
		if seen[h.TID()] {
			t.Errorf("TID %#x reused", h.TID())
		}
		seen[h.TID()] = true
		want = append(want, h.TID())
	}
	if want[0] != 0x00001234ffffffff || want[1] != 0x0000123400000001 || want[3] != 0x0000123400000003 {
		t.Errorf("TIDs %#x", want)
	}
	for i, s := range e.port.sent {
		if tid := binary.BigEndian.Uint64(s.mad[8:]); tid != want[i] {
			t.Errorf("MAD %d carries TID %#x, handle says %#x", i, tid, want[i])
		}
	}
	// A counter that comes round to a TID still outstanding skips it.
	e.c.tidLow = 1
	if tid := e.c.nextTID(); tid != 0x0000123400000004 {
		t.Errorf("after wrap onto live TIDs: %#x", tid)
	}
	// Clients with a random high half differ from each other.
	a, err := NewSAClient(e.loop, &saFakePort{loop: e.loop}, saTestPort, SAClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSAClient(e.loop, &saFakePort{loop: e.loop}, saTestPort, SAClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if a.tidHigh == 0 || a.tidHigh == b.tidHigh {
		t.Errorf("random TID high halves %#x, %#x", a.tidHigh, b.tidHigh)
	}
}

// A port that answers from inside Send (a loopback or a synchronous
// simulator) and callbacks that start the next query must both work.
func TestSAClientReentrant(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	reply := saHexMAD(t, saCapFrame33...)
	e.port.onSend = func(dst MADAddress, mad []byte) {
		e.deliver(saFromSM, saMADWithTID(reply, binary.BigEndian.Uint64(mad[8:])))
	}
	var got []PathRecord
	q, m := PathQueryByGID(saCapSGID, saCapDGID, PKeyDefault)
	var next func(PathRecord, error)
	next = func(r PathRecord, err error) {
		if err != nil {
			t.Errorf("query %d: %v", len(got), err)
			return
		}
		got = append(got, r)
		if len(got) < 3 {
			if _, err := e.c.GetPathRecord(q, m, next); err != nil {
				t.Error(err)
			}
		}
	}
	h, err := e.c.GetPathRecord(q, m, next)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || h.Pending() || e.c.Outstanding() != 0 {
		t.Fatalf("got %d records, outstanding %d", len(got), e.c.Outstanding())
	}
	e.advanceTo(time.Minute)
	if len(e.port.sent) != 3 {
		t.Errorf("%d sends, want 3 (no retries after synchronous answers)", len(e.port.sent))
	}
}

func TestSAClientReplyAllocs(t *testing.T) {
	e := newSAEnv(t, SAClientConfig{})
	e.port.keep = false
	reply := saHexMAD(t, saCapFrame33...)
	q, m := PathQueryByGID(saCapSGID, saCapDGID, PKeyDefault)
	var last PathRecord
	done := func(r PathRecord, err error) { last = r }
	roundTrip := func() {
		h, err := e.c.GetPathRecord(q, m, done)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(reply[8:], h.TID())
		e.deliver(saFromSM, reply)
	}
	roundTrip() // warm the free list and the map
	if n := testing.AllocsPerRun(200, roundTrip); n != 0 {
		t.Errorf("query and answer allocate %v times, want 0", n)
	}
	if last != saCapFrame33Record {
		t.Errorf("record %+v", last)
	}
}

func BenchmarkSAClientRoundTrip(b *testing.B) {
	e := newSAEnv(b, SAClientConfig{})
	e.port.keep = false
	reply := saHexMAD(b, saCapFrame33...)
	q, m := PathQueryByGID(saCapSGID, saCapDGID, PKeyDefault)
	done := func(PathRecord, error) {}
	b.ReportAllocs()
	for b.Loop() {
		h, err := e.c.GetPathRecord(q, m, done)
		if err != nil {
			b.Fatal(err)
		}
		binary.BigEndian.PutUint64(reply[8:], h.TID())
		e.deliver(saFromSM, reply)
	}
}

func BenchmarkSAClientStrayReply(b *testing.B) {
	e := newSAEnv(b, SAClientConfig{})
	reply := saMADWithTID(saHexMAD(b, saCapFrame33...), 42)
	b.ReportAllocs()
	for b.Loop() {
		e.deliver(saFromSM, reply)
	}
}

// FuzzSAClientReply delivers arbitrary bytes, from an arbitrary source LID,
// to a client with a PathRecord Get (TID saCapTID) and an MCMemberRecord
// Delete (TID saCapTID+1) outstanding. It checks that nothing panics,
// that a query completes exactly when the bytes are a well-formed,
// non-busy answer to it from the SM, with the record or status the bytes
// carry, that every MAD is counted once, and that a repeat changes
// nothing.
func FuzzSAClientReply(f *testing.F) {
	path := saHexMAD(f, saCapFrame33...)
	f.Add(path, uint16(1))
	f.Add(path, uint16(4))
	f.Add(saMCReplyGolden(f, "95", saCapTID+1), uint16(1))
	f.Add(saMADWithStatus(path, 0x0300), uint16(1))
	f.Add(saMADWithStatus(path, 0x0001), uint16(1))
	f.Add(saHexMAD(f, saCapFrame32...), uint16(1))
	f.Add(path[:100], uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, srcLID uint16) {
		e := newSAEnv(t, SAClientConfig{})
		var paths []saResult[PathRecord]
		var groups []saResult[MCMemberRecord]
		e.getCapturePath(&paths)
		r, m := MCMemberQuery(saCapBcast, saCapSGID, PKeyDefault, JoinFullMember)
		if _, err := e.c.DeleteMCMemberRecord(r, m, saCollect(e, &groups)); err != nil {
			t.Fatal(err)
		}
		src := MADAddress{LID: LID(srcLID), QPN: QPNGSI}
		e.deliver(src, data)

		// The oracle decodes with the MAD codec, whose own tests pin it to
		// the spec, and applies the matching rules independently.
		var mad SAMAD
		wellFormed := mad.Decode(data) == nil
		answers := func(tid uint64, method Method, attr AttributeID) bool {
			return wellFormed && srcLID == 1 && mad.TransactionID == tid &&
				mad.Method == method && mad.AttributeID == attr
		}
		check := func(what string, n int, err error, answered bool, rec, want any) {
			switch {
			case !answered || mad.Status.Busy():
				if n != 0 {
					t.Fatalf("%s completed by a non-answer: err %v", what, err)
				}
			case mad.Status != 0:
				var mse *MADStatusError
				if n != 1 || !errors.As(err, &mse) || mse.Status != mad.Status {
					t.Fatalf("%s: %d calls, error %v, want status %v", what, n, err, mad.Status)
				}
			default:
				if n != 1 || err != nil || rec != want {
					t.Fatalf("%s: %d calls, error %v, record %+v, want %+v", what, n, err, rec, want)
				}
			}
		}
		var pathErr, groupErr error
		var pathRec PathRecord
		var groupRec MCMemberRecord
		if len(paths) > 0 {
			pathRec, pathErr = paths[0].rec, paths[0].err
		}
		if len(groups) > 0 {
			groupRec, groupErr = groups[0].rec, groups[0].err
		}
		var wantPath PathRecord
		var wantGroup MCMemberRecord
		if wellFormed && mad.Status == 0 {
			_ = wantPath.Decode(data[SADataOffset:])
			_ = wantGroup.Decode(data[SADataOffset:])
		}
		pathAnswered := answers(saCapTID, MethodGetResp, SAAttrPathRecord)
		groupAnswered := answers(saCapTID+1, MethodDeleteResp, SAAttrMCMemberRecord)
		check("PathRecord Get", len(paths), pathErr, pathAnswered, pathRec, wantPath)
		check("MCMemberRecord Delete", len(groups), groupErr, groupAnswered, groupRec, wantGroup)
		if len(paths)+len(groups) > 1 {
			t.Fatalf("one MAD completed two queries")
		}

		st := e.c.Stats()
		if n := st.Replies + st.Unsolicited + st.Mismatched + st.Malformed; n != 1 {
			t.Fatalf("one MAD counted %d times: %+v", n, st)
		}
		before := len(paths) + len(groups)
		e.deliver(src, data)
		if len(paths)+len(groups) != before {
			t.Fatalf("a repeated MAD completed another query")
		}
		if e.c.Outstanding() != 2-(len(paths)+len(groups)) {
			t.Fatalf("%d outstanding after %d completions", e.c.Outstanding(), len(paths)+len(groups))
		}
	})
}

var saUpdateCorpus = flag.Bool("update-sa-corpus", false,
	"rewrite testdata/fuzz/FuzzSAClientReply from the golden MADs")

// TestSAClientFuzzCorpus writes the checked-in seed corpus of
// FuzzSAClientReply when run with -update-sa-corpus, so the files come
// from the same real and hand-laid MADs as the tests; otherwise it checks
// that the corpus is there.
func TestSAClientFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSAClientReply")
	path := saHexMAD(t, saCapFrame33...)
	seeds := map[string]struct {
		mad []byte
		lid uint16
	}{
		"capture-frame33":              {path, 1},
		"capture-frame33-wrong-source": {path, 4},
		"capture-frame32-request":      {saHexMAD(t, saCapFrame32...), 1},
		"no-records":                   {saMADWithStatus(path, 0x0300), 1},
		"busy":                         {saMADWithStatus(path, 0x0001), 1},
		"redirect":                     {saMADWithStatus(path, 0x0002), 1},
		"mc-delete-resp":               {saMCReplyGolden(t, "95", saCapTID+1), 1},
		"mc-get-resp-for-delete":       {saMCReplyGolden(t, "81", saCapTID+1), 1},
		"mc-req-invalid":               {saMADWithStatus(saMCReplyGolden(t, "95", saCapTID+1), 0x0200), 1},
		"truncated":                    {path[:100], 1},
		"bad-attribute-offset":         {saMADPatch(path, 44, 0x00, 26), 1},
		"rmpp-active":                  {saMADPatch(path, 24, 1, 1, 1), 1},
	}
	for name, s := range seeds {
		file := filepath.Join(dir, name)
		content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s.mad)) + ")\nuint16(" + strconv.Itoa(int(s.lid)) + ")\n"
		if *saUpdateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("seed corpus: %v (regenerate with -update-sa-corpus)", err)
		} else if string(got) != content {
			t.Errorf("seed %s is stale (regenerate with -update-sa-corpus)", name)
		}
	}
}
