package pcap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// erfCapture is a real ERF capture of InfiniBand traffic between two HCAs
// (2008, 43 frames); ib's tests check its packets, these its ERF framing.
const erfCapture = "../testdata/softroce-demo-infiniband.pcap"

// erfReadRecords returns the pcap records of an ERF capture.
func erfReadRecords(t testing.TB, path string) [][]byte {
	t.Helper()
	return pcaptest.Read(t, path, LinkTypeERF)
}

// TestERFHeaderGolden decodes the first record header of the real capture,
// read by hand: timestamp 0x482b41ef_7febea60 (2008-05-14 19:47:59.4997
// UTC), type 21, flags 0x05 (interface 1, varying length), rlen 312 (the
// DAG card pads to 8 bytes; the padding is not in the pcap record), lctr
// 0, wlen 290.
func TestERFHeaderGolden(t *testing.T) {
	raw := hextest.Bytes(t, "60eaeb7fef412b48 15 05 0138 0000 0122")
	want := ERFHeader{Timestamp: 0x482b41ef7febea60, Type: ERFTypeInfiniBand, Flags: 0x05, RLen: 312, WLen: 290}
	recs := erfReadRecords(t, erfCapture)
	if len(recs) != 43 {
		t.Fatalf("%d records, want 43", len(recs))
	}
	if !bytes.Equal(recs[0][:ERFHeaderLen], raw) {
		t.Fatalf("first header %x, want %x", recs[0][:ERFHeaderLen], raw)
	}
	var h ERFHeader
	pkt, err := DecodeERFRecord(recs[0], &h)
	if err != nil {
		t.Fatal(err)
	}
	if h != want {
		t.Errorf("decoded %+v, want %+v", h, want)
	}
	if len(pkt) != 290 || pkt[0] != 0xf0 {
		t.Errorf("packet %d bytes starting %#x, want 290 starting 0xf0 (VL15)", len(pkt), pkt[0])
	}
	out := make([]byte, ERFHeaderLen)
	if err := want.Encode(out); err != nil || !bytes.Equal(out, raw) {
		t.Errorf("encoded %x, %v; want %x", out, err, raw)
	}
	at := ERFTime(h.Timestamp)
	if want := time.Date(2008, 5, 14, 19, 47, 59, 499693535, time.UTC); !at.Equal(want) {
		t.Errorf("time %v, want %v (tshark's reading)", at, want)
	}
	for i, rec := range recs {
		var h ERFHeader
		pkt, err := DecodeERFRecord(rec, &h)
		if err != nil || h.Type != ERFTypeInfiniBand || int(h.WLen) != len(pkt) || len(pkt) != len(rec)-ERFHeaderLen {
			t.Errorf("record %d: %+v, %d-byte packet, %v", i+1, h, len(pkt), err)
		}
		if ib.VCRC(pkt[:len(pkt)-2]) != uint16(pkt[len(pkt)-2])|uint16(pkt[len(pkt)-1])<<8 {
			t.Errorf("record %d: packet VCRC does not verify", i+1)
		}
	}
}

func TestERFHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
	}{
		{"short", "00000000000000001500001000"},
		{"extension header", "0000000000000000 95 00 0018 0000 0008"},
		{"rlen below header", "0000000000000000 15 00 000f 0000 0000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h ERFHeader
			if _, err := DecodeERFRecord(hextest.Bytes(t, tc.hex), &h); !errors.Is(err, ErrERF) {
				t.Errorf("error %v, want ErrERF", err)
			}
		})
	}
	if err := (&ERFHeader{Type: 0x80}).Encode(make([]byte, 16)); !errors.Is(err, ErrERF) {
		t.Errorf("type 0x80: %v, want ErrERF", err)
	}
	if err := (&ERFHeader{}).Encode(make([]byte, 15)); !errors.Is(err, ErrERF) {
		t.Errorf("15-byte buffer: %v, want ErrERF", err)
	}
	if _, err := ERFTimestamp(time.Unix(-1, 0)); !errors.Is(err, ErrERF) {
		t.Errorf("1969: %v, want ErrERF", err)
	}
	if _, err := ERFTimestamp(time.Unix(1<<32, 0)); !errors.Is(err, ErrERF) {
		t.Errorf("2106: %v, want ErrERF", err)
	}
}

// TestERFTimestampRoundTrip: every nanosecond survives the 32.32 form.
func TestERFTimestampRoundTrip(t *testing.T) {
	for _, ns := range []int{0, 1, 2, 499_999_999, 500_000_000, 999_999_998, 999_999_999, 123_456_789} {
		in := time.Unix(1_700_000_000, int64(ns)).UTC()
		ts, err := ERFTimestamp(in)
		if err != nil {
			t.Fatal(err)
		}
		if ts>>32 != 1_700_000_000 {
			t.Errorf("%d ns: seconds %d", ns, ts>>32)
		}
		if out := ERFTime(ts); !out.Equal(in) {
			t.Errorf("%d ns: back as %v", ns, out)
		}
	}
	if ts, _ := ERFTimestamp(time.Unix(5, 500_000_000)); ts != 5<<32|1<<31 {
		t.Errorf("half a second: %#x, want %#x", ts, uint64(5<<32|1<<31))
	}
}

// TestWriterConcurrent writes from several goroutines at once and checks
// every record comes back whole.
func TestWriterConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, layersLinkTypeUser0, 64)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 200
	done := make(chan error, writers)
	for g := range writers {
		go func() {
			for i := range each {
				rec := bytes.Repeat([]byte{byte(g)}, 1+i%40)
				var err error
				if i%2 == 0 {
					err = w.WritePacket(time.Unix(1, 0), rec)
				} else {
					err = w.WriteJoined(time.Unix(1, 0), rec[:1], rec[1:])
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range writers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	recs := pcaptest.Read(t, path, layersLinkTypeUser0)
	for i, data := range recs {
		if len(data) == 0 || !bytes.Equal(data, bytes.Repeat(data[:1], len(data))) {
			t.Fatalf("record %d mixed: %x", i+1, data)
		}
	}
	if len(recs) != writers*each {
		t.Errorf("%d records, want %d", len(recs), writers*each)
	}
}

// layersLinkTypeUser0 is LINKTYPE_USER0 (147), a link type with no
// meaning, for tests of the generic writer.
const layersLinkTypeUser0 = 147

// TestWriterSnaplen checks a record longer than the snaplen is cut, with
// its original length kept.
func TestWriterSnaplen(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, layersLinkTypeUser0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if w.LinkType() != layersLinkTypeUser0 || w.Snaplen() != 8 {
		t.Errorf("LinkType %d Snaplen %d", w.LinkType(), w.Snaplen())
	}
	if err := w.WritePacket(time.Unix(1, 2), []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := r.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "01234567" || ci.Length != 10 || !ci.Timestamp.Equal(time.Unix(1, 2)) {
		t.Errorf("record %q, length %d, at %v", data, ci.Length, ci.Timestamp)
	}
	if _, err := NewWriter(&buf, layersLinkTypeUser0, 0); err == nil {
		t.Error("snaplen 0 accepted")
	}
}

// erfTestPacket is one packet the tshark test writes, with the fields
// tshark must read back.
type erfTestPacket struct {
	name string
	pkt  ib.Packet
	want []string // in erfTsharkFields order, after frame.number
}

// erfTsharkFields are the tshark fields the test compares.
var erfTsharkFields = []string{
	"erf.types.type", "erf.flags.cap", "infiniband.lrh.vl", "infiniband.lrh.sl", "infiniband.lrh.lnh",
	"infiniband.lrh.dlid", "infiniband.lrh.slid", "infiniband.lrh.pktlen",
	"infiniband.grh.tclass", "infiniband.grh.flowlabel", "infiniband.grh.paylen", "infiniband.grh.hoplmt", "infiniband.grh.sgid", "infiniband.grh.dgid",
	"infiniband.bth.opcode", "infiniband.bth.padcnt", "infiniband.bth.p_key", "infiniband.bth.destqp",
	"infiniband.bth.psn", "infiniband.deth.q_key", "infiniband.deth.srcqp",
	"infiniband.invariant.crc", "infiniband.variant.crc",
}

// TestERFTshark builds UD packets with ib's encoder (local and global,
// padded and not, a MAD to QP1, IPoIB ARP, opaque data), writes them with
// ERFWriter, and checks tshark reads every field back, finds no malformed
// packet or warning, and shows the ICRC and VCRC we computed. tshark 4.0
// displays the CRCs but does not verify them; ib's tests verify our CRCs
// against real HCA traffic instead.
func TestERFTshark(t *testing.T) {
	pcaptest.NeedTshark(t)
	sgid, _ := ib.ParseGID("fe80::2:c903:0:1f2d")
	bcast, _ := ib.ParseGID("ff12:401b:ffff::ffff:ffff")
	// An SA PathRecord Get, the MAD of the capture's frame 32 cut to its
	// header: BaseVersion 1, class 3 (SA), version 2, method Get,
	// TID, attribute 0x0035 PathRecord.
	mad := make([]byte, 256)
	copy(mad, hextest.Bytes(t, "01 03 02 01 0000 0000 0000000bb9647f9e 0035 0000 00000000"))
	// IPoIB ARP request over IB (RFC 4391): hardware type 32, IPv4,
	// lengths 20 and 4, request; sender QPN 0x48 and GID, target zero.
	arp := hextest.Bytes(t, `0806 0000  0020 0800 14 04 0001
		00000048 fe800000000000000002c90300001f2d 0a000024
		00000000 00000000000000000000000000000000 0a00003a`)
	opaque := bytes.Repeat([]byte{0x5a}, 13) // 3 bytes of pad
	packets := []erfTestPacket{
		{"SA MAD to QP1, local", ib.Packet{
			LRH:     ib.LRH{SL: 0, DLID: 1, SLID: 4},
			BTH:     ib.BTH{OpCode: ib.OpUDSendOnly, PKey: 0xffff, DestQP: ib.QPNGSI, PSN: 0x2f1e},
			DETH:    ib.DETH{QKey: ib.QKeyGSI, SrcQP: ib.QPNGSI},
			Payload: mad,
		}, nil},
		{"IPoIB ARP broadcast, GRH", ib.Packet{
			LRH:     ib.LRH{VL: 0, DLID: 0xc000, SLID: 5},
			HasGRH:  true,
			GRH:     ib.GRH{TClass: 0, FlowLabel: 0, HopLmt: 0, SGID: sgid, DGID: bcast},
			BTH:     ib.BTH{OpCode: ib.OpUDSendOnly, PKey: 0xffff, DestQP: ib.QPNMulticast, PSN: 7},
			DETH:    ib.DETH{QKey: ib.QKeyIPoIBDefault, SrcQP: 0x48},
			Payload: arp,
		}, nil},
		{"opaque data with pad, local, SL 5 VL 2", ib.Packet{
			LRH:     ib.LRH{VL: 2, SL: 5, DLID: 0x12, SLID: 0x34},
			BTH:     ib.BTH{OpCode: ib.OpUDSendOnly, PKey: 0x8001, DestQP: 0x000405, PSN: 0xfffffe},
			DETH:    ib.DETH{QKey: 0x12345678, SrcQP: 0x000404},
			Payload: opaque,
		}, nil},
		{"opaque data with pad, GRH, hop limit", ib.Packet{
			LRH:     ib.LRH{DLID: 0x12, SLID: 0x34},
			HasGRH:  true,
			GRH:     ib.GRH{TClass: 0x0a, FlowLabel: 0x12345, HopLmt: 64, SGID: sgid, DGID: sgid},
			BTH:     ib.BTH{OpCode: ib.OpUDSendOnly, PKey: 0xffff, DestQP: 0x000405, PSN: 1},
			DETH:    ib.DETH{QKey: 0x12345678, SrcQP: 0x000404},
			Payload: opaque[:10],
		}, nil},
	}
	path := filepath.Join(t.TempDir(), "ib.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewERFWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	var frames [][]byte
	for i := range packets {
		p := &packets[i]
		frame, err := p.pkt.AppendTo(nil)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		frames = append(frames, frame)
		var d ib.Packet
		if err := ib.DecodePacket(frame, &d); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		grh := []string{"", "", "", "", "", ""}
		if d.HasGRH {
			grh = []string{strconv.Itoa(int(d.GRH.TClass)), strconv.Itoa(int(d.GRH.FlowLabel)), strconv.Itoa(int(d.GRH.PayLen)), strconv.Itoa(int(d.GRH.HopLmt)), d.GRH.SGID.String(), d.GRH.DGID.String()}
		}
		// tshark reads the CRCs big-endian; they are stored
		// least-significant byte first, so it shows them byte-swapped.
		n := len(frame)
		p.want = append([]string{"21", strconv.Itoa(i % 4),
			fmt.Sprintf("0x%02x", d.LRH.VL), strconv.Itoa(int(d.LRH.SL)), fmt.Sprintf("0x%02x", uint8(d.LRH.LNH)),
			strconv.Itoa(int(d.LRH.DLID)), strconv.Itoa(int(d.LRH.SLID)), strconv.Itoa(int(d.LRH.PktLen))},
			grh...)
		p.want = append(p.want,
			strconv.Itoa(int(d.BTH.OpCode)), strconv.Itoa(int(d.BTH.PadCnt)), strconv.Itoa(int(d.BTH.PKey)),
			fmt.Sprintf("0x%06x", uint32(d.BTH.DestQP)), strconv.Itoa(int(d.BTH.PSN)),
			fmt.Sprintf("0x%016x", uint32(d.DETH.QKey)), fmt.Sprintf("0x%08x", uint32(d.DETH.SrcQP)),
			fmt.Sprintf("0x%02x%02x%02x%02x", frame[n-6], frame[n-5], frame[n-4], frame[n-3]),
			fmt.Sprintf("0x%02x%02x", frame[n-2], frame[n-1]))
		if err := w.WriteInfiniBand(ts.Add(time.Duration(i)*time.Millisecond), uint8(i%4), frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	fields := append([]string{"frame.number"}, erfTsharkFields...)
	fields = append(fields, "_ws.malformed", "_ws.expert.severity", "frame.protocols", "frame.time_epoch")
	lines := pcaptest.Fields(t, path, "", fields...)
	t.Logf("tshark:\n%s", strings.Join(lines, "\n"))
	if len(lines) != len(packets) {
		t.Fatalf("tshark printed %d lines for %d packets", len(lines), len(packets))
	}
	for i, line := range lines {
		p := packets[i]
		got := strings.Split(line, "|")
		if len(got) != 1+len(erfTsharkFields)+4 {
			t.Fatalf("%s: tshark line %q", p.name, line)
		}
		for j, want := range p.want {
			if got[1+j] != want {
				t.Errorf("%s: %s = %q, want %q", p.name, erfTsharkFields[j], got[1+j], want)
			}
		}
		rest := got[1+len(erfTsharkFields):]
		if rest[0] != "" {
			t.Errorf("%s: malformed: %q", p.name, line)
		}
		if sev := pcaptest.ExpertWarning(rest[1]); sev != "" {
			t.Errorf("%s: expert severity %s", p.name, sev)
		}
		if !strings.HasPrefix(rest[2], "erf:infiniband") {
			t.Errorf("%s: protocols %q, want erf:infiniband...", p.name, rest[2])
		}
		wantTime := ts.Add(time.Duration(i) * time.Millisecond)
		if rest[3] != fmt.Sprintf("%d.%09d", wantTime.Unix(), wantTime.Nanosecond()) {
			t.Errorf("%s: time %s, want %v", p.name, rest[3], wantTime)
		}
	}
	// Protocol-specific dissection: the MAD as an SA PathRecord Get, the
	// ARP as IPoIB ARP.
	verbose := pcaptest.Tshark(t, path, "-V")
	for _, want := range []string{"SubnAdmGet(PathRecord)", "Address Resolution Protocol (request)", "Hardware type: InfiniBand (32)", "Sender IP address: 10.0.0.36"} {
		if !strings.Contains(verbose, want) {
			t.Errorf("tshark -V does not show %q:\n%s", want, verbose)
		}
	}
	for _, bad := range []string{"Malformed", "Expert Info (Error", "Expert Info (Warning"} {
		if strings.Contains(verbose, bad) {
			t.Errorf("tshark -V reports %q:\n%s", bad, verbose)
		}
	}
}

// FuzzDecodeERF decodes arbitrary records: no panic, a packet that never
// runs past the record or WLen, and a header that re-encodes to its bytes.
func FuzzDecodeERF(f *testing.F) {
	f.Add(hextest.Bytes(f, "60eaeb7fef412b48 15 05 0138 0000 0004 f002ffff"))
	f.Fuzz(func(t *testing.T, rec []byte) {
		var h ERFHeader
		pkt, err := DecodeERFRecord(rec, &h)
		if err != nil {
			if !errors.Is(err, ErrERF) {
				t.Fatalf("error %v does not wrap ErrERF", err)
			}
			return
		}
		if len(pkt) > int(h.WLen) || len(pkt) > len(rec)-ERFHeaderLen {
			t.Fatalf("%d-byte packet from a %d-byte record with wlen %d", len(pkt), len(rec), h.WLen)
		}
		out := make([]byte, ERFHeaderLen)
		if err := h.Encode(out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, rec[:ERFHeaderLen]) {
			t.Fatalf("re-encoded %x, want %x", out, rec[:ERFHeaderLen])
		}
	})
}

func BenchmarkERFWriteInfiniBand(b *testing.B) {
	w, err := NewERFWriter(discard{})
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 2082)
	ts := time.Unix(1_700_000_000, 0)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteInfiniBand(ts, 0, pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// discard is io.Discard without the ReaderFrom fast path, so the benchmark
// measures what writing to a file costs us.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
