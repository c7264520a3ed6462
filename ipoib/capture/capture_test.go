package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/pcap"
	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/ipoib"
)

// ipoibCapture is a real LINKTYPE_IPOIB capture from tcpdump's test suite:
// 192.168.56.10 pinging, ARPing and opening TCP connections to
// 192.168.56.24 over Linux IPoIB.
const ipoibCapture = "testdata/tcpdump-tests-ipoib.pcap"

func ipoibMustGID(t testing.TB, s string) ib.GID {
	t.Helper()
	g, err := ib.ParseGID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// ipoibReadCapture returns the frames of the tcpdump capture.
func ipoibReadCapture(t testing.TB) [][]byte {
	t.Helper()
	return pcaptest.Read(t, ipoibCapture, pcap.LinkTypeIPoIB)
}

func TestIPoIBGolden(t *testing.T) {
	payload := []byte{0x45, 0x00}
	dst := ipoib.Addr{Flags: 0x80, QPN: 0x550, GID: ipoibMustGID(t, "fe80::10:e000:664a:b451")}
	tx := hextest.Bytes(t,
		"00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", // bytes 0-19 zero
		"80 00 05 50", // destination flags + QPN
		"fe 80 00 00 00 00 00 00 00 10 e0 00 66 4a b4 51", // destination GID
		"08 00 00 00", // IPoIB header: IPv4, reserved
		"45 00",       // payload
	)
	got, err := AppendTransmit(nil, dst, 0x0800, payload)
	if err != nil || !bytes.Equal(got, tx) {
		t.Errorf("AppendTransmit = %x, %v\nwant %x", got, err, tx)
	}
	grh := ib.GRH{TClass: 0xa5, FlowLabel: 0x12345, PayLen: 999, NxtHdr: 0x1b, HopLmt: 9,
		SGID: ipoibMustGID(t, "fe80::10:e000:14a:d211"), DGID: ipoib.BroadcastGID(0xffff)}
	rx := hextest.Bytes(t,
		"6a 51 23 45", // IPVer 6, TClass 0xa5, FlowLabel 0x12345
		"00 00 00 4f", // zero, source QPN 0x4f (where a GRH has PayLen, NxtHdr, HopLmt)
		"fe 80 00 00 00 00 00 00 00 10 e0 00 01 4a d2 11", // SGID
		"ff 12 40 1b ff ff 00 00 00 00 00 00 ff ff ff ff", // DGID
		"08 06 00 00", // IPoIB header: ARP
		"45 00",
	)
	got, err = AppendReceive([]byte("pre"), &grh, 0x4f, 0x0806, payload)
	if err != nil || !bytes.Equal(got, append([]byte("pre"), rx...)) {
		t.Errorf("AppendReceive = %x, %v\nwant pre+%x", got, err, rx)
	}

	tests := []struct {
		name  string
		frame []byte
		want  Frame
	}{
		{"transmit", tx, Frame{Form: FormAddress, Dest: dst, EtherType: 0x0800, Payload: payload}},
		{"receive", rx, Frame{Form: FormGRH, GRH: ib.GRH{IPVer: 6, TClass: 0xa5, FlowLabel: 0x12345,
			SGID: grh.SGID, DGID: grh.DGID}, SrcQPN: 0x4f, EtherType: 0x0806, Payload: payload}},
	}
	for _, tt := range tests {
		var f Frame
		if err := Decode(tt.frame, &f); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !ipoibFrameEqual(&f, &tt.want) {
			t.Errorf("%s: decoded %+v\nwant %+v", tt.name, f, tt.want)
		}
	}
}

func ipoibFrameEqual(a, b *Frame) bool {
	return a.Form == b.Form && a.Dest == b.Dest && a.GRH == b.GRH && a.SrcQPN == b.SrcQPN &&
		a.EtherType == b.EtherType && a.Reserved == b.Reserved && bytes.Equal(a.Payload, b.Payload)
}

func TestIPoIBErrors(t *testing.T) {
	var f Frame
	for _, n := range []int{0, 1, 40, 43} {
		err := Decode(make([]byte, n), &f)
		if !errors.Is(err, ErrFrame) || !errors.Is(err, ib.ErrTruncated) {
			t.Errorf("Decode(%d bytes) = %v", n, err)
		}
	}
	if err := Decode(make([]byte, 44), &f); err != nil || f.Form != FormAddress || len(f.Payload) != 0 {
		t.Errorf("Decode(44 zero bytes) = %+v, %v", f, err)
	}
	bad := []Frame{
		{},
		{Form: FormAddress, Dest: ipoib.Addr{QPN: 1 << 24}},
		{Form: FormGRH, SrcQPN: 1 << 24},
		{Form: FormGRH, GRH: ib.GRH{FlowLabel: 1 << 20}},
	}
	for _, fr := range bad {
		out, err := fr.AppendTo([]byte("keep"))
		if !errors.Is(err, ib.ErrFieldRange) || string(out) != "keep" {
			t.Errorf("AppendTo(%+v) = %q, %v; want ErrFieldRange and b unchanged", fr, out, err)
		}
	}
}

// TestIPoIBCapture decodes every frame of the tcpdump capture and checks
// it against what tshark and a reading of the bytes show: all frames are
// the address form; 7 and 26 are received ARP replies whose bytes 0-19
// hold leftover kernel memory and whose address is the one the kernel
// stored there, a broadcast MGID (ff10:401b::ffff:ffff). tshark misreads
// those two as a GRH; we follow the Linux layout.
func TestIPoIBCapture(t *testing.T) {
	frames := ipoibReadCapture(t)
	if len(frames) != 30 {
		t.Fatalf("capture has %d frames, want 30", len(frames))
	}
	peer, err := ipoib.ParseAddr("80:00:05:50:fe:80:00:00:00:00:00:00:00:10:e0:00:66:4a:b4:51")
	if err != nil {
		t.Fatal(err)
	}
	bcast := ipoib.Addr{QPN: ib.QPNMulticast, GID: ipoibMustGID(t, "ff10:401b::ffff:ffff")}
	arp := map[int]bool{6: true, 7: true, 25: true, 26: true}
	junk := map[int]bool{7: true, 26: true}
	for i, frame := range frames {
		n := i + 1
		var f Frame
		if err := Decode(frame, &f); err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		wantDest, wantType := peer, uint16(0x0800)
		if junk[n] {
			wantDest = bcast
		}
		if arp[n] {
			wantType = 0x0806
		}
		if f.Form != FormAddress || f.Dest != wantDest || f.EtherType != wantType || f.Reserved != 0 {
			t.Errorf("frame %d: form %v dest %v type %#04x reserved %#x; want address form, %v, %#04x",
				n, f.Form, f.Dest, f.EtherType, f.Reserved, wantDest, wantType)
		}
		switch wantType {
		case 0x0800: // IPv4 from .10 to .24
			p := f.Payload
			if len(p) < 20 || p[0]>>4 != 4 || !bytes.Equal(p[12:20], []byte{192, 168, 56, 10, 192, 168, 56, 24}) {
				t.Errorf("frame %d: payload is not IPv4 .10 -> .24: %x", n, p[:min(20, len(p))])
			}
		case 0x0806: // IPoIB ARP: hardware type 32, 20-byte addresses
			p := f.Payload
			if len(p) != 8+2*(20+4) || binary.BigEndian.Uint16(p) != 32 || p[4] != 20 || p[5] != 4 {
				t.Errorf("frame %d: payload is not IPoIB ARP: %x", n, p)
			}
		}
		// Re-encoding keeps everything from the address on and zeroes the
		// headroom.
		out, err := f.AppendTo(nil)
		if err != nil {
			t.Fatalf("frame %d: AppendTo: %v", n, err)
		}
		if !bytes.Equal(out[20:], frame[20:]) || !bytes.Equal(out[:20], make([]byte, 20)) {
			t.Errorf("frame %d re-encoded:\n got %x\nwant %x", n, out, frame)
		}
	}
}

// TestIPoIBTshark writes every payload of the real capture again, once in
// each form, plus a hand-built ARP request to the broadcast address, and
// checks that tshark reads addresses, ethertypes and payloads back with no
// malformed-packet or error expert info.
func TestIPoIBTshark(t *testing.T) {
	pcaptest.NeedTshark(t)
	src := ipoibReadCapture(t)
	me := ipoib.Addr{Flags: 0x80, QPN: 0x4f, GID: ipoibMustGID(t, "fe80::10:e000:14a:d211")}
	peer := ipoib.Addr{Flags: 0x80, QPN: 0x550, GID: ipoibMustGID(t, "fe80::10:e000:664a:b451")}
	path := filepath.Join(t.TempDir(), "ipoib.pcap")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	w, err := NewWriter(file)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	var wants [][]string
	for _, fr := range src {
		var f Frame
		if err := Decode(fr, &f); err != nil {
			t.Fatal(err)
		}
		if f.EtherType != 0x0800 {
			continue
		}
		ts = ts.Add(time.Millisecond)
		if err := w.WriteTransmit(ts, peer, f.EtherType, f.Payload); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, []string{"0x000550", "fe80::10:e000:664a:b451", "", "", "0x0800", "192.168.56.10", "", ""})
		grh := ib.GRH{TClass: 3, FlowLabel: 0xbeef, SGID: peer.GID, DGID: me.GID}
		if err := w.WriteReceive(ts, &grh, peer.QPN, f.EtherType, f.Payload); err != nil {
			t.Fatal(err)
		}
		wants = append(wants, []string{"", "fe80::10:e000:14a:d211", "0x000550", "fe80::10:e000:664a:b451", "0x0800", "192.168.56.10", "", ""})
	}
	// ARP request who-has 192.168.56.24 tell .10, broadcast (RFC 4391
	// section 8: hardware type 32, hardware length 20).
	var arp []byte
	arp = binary.BigEndian.AppendUint16(arp, 32)     // hardware type InfiniBand
	arp = binary.BigEndian.AppendUint16(arp, 0x0800) // protocol IPv4
	arp = append(arp, ipoib.AddrLen, 4)              // sizes
	arp = binary.BigEndian.AppendUint16(arp, 1)      // request
	sha := make([]byte, ipoib.AddrLen)
	if err := me.Encode(sha); err != nil {
		t.Fatal(err)
	}
	arp = append(arp, sha...)
	arp = append(arp, 192, 168, 56, 10)
	arp = append(arp, make([]byte, ipoib.AddrLen)...)
	arp = append(arp, 192, 168, 56, 24)
	if err := w.WriteTransmit(ts, ipoib.BroadcastAddr(0xffff), 0x0806, arp); err != nil {
		t.Fatal(err)
	}
	wants = append(wants, []string{"0xffffff", "ff12:401b:ffff::ffff:ffff", "", "", "0x0806", "", "32", "20"})
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}

	lines := pcaptest.Fields(t, path, "", "ipoib.daddr.qpn", "ipoib.dgid", "ipoib.grh.sqpn", "ipoib.grh.sgid",
		"ipoib.type", "ip.src", "arp.hw.type", "arp.hw.size",
		"_ws.malformed", "_ws.expert.severity", "frame.protocols")
	out := strings.Join(lines, "\n")
	t.Logf("tshark:\n%s", out)
	if len(lines) != len(wants) {
		t.Fatalf("tshark printed %d lines for %d frames:\n%s", len(lines), len(wants), out)
	}
	for i, line := range lines {
		got := strings.Split(line, "|")
		if len(got) != 11 {
			t.Fatalf("frame %d: tshark line %q", i+1, line)
		}
		for j, w := range wants[i] {
			if got[j] != w {
				t.Errorf("frame %d field %d = %q, want %q (line %q)", i+1, j, got[j], w, line)
			}
		}
		if got[8] != "" {
			t.Errorf("frame %d malformed: %q", i+1, line)
		}
		if sev := pcaptest.ExpertWarning(got[9]); sev != "" {
			t.Errorf("frame %d expert severity %s: %q", i+1, sev, line)
		}
		if !strings.HasPrefix(got[10], "ipoib:") {
			t.Errorf("frame %d protocols %q, want ipoib first", i+1, got[10])
		}
	}
}

// FuzzDecode decodes arbitrary frames and checks that re-encoding
// gives back the frame (up to the bytes the form leaves undefined) and
// decodes to the same value.
func FuzzDecode(f *testing.F) {
	payload := []byte{0x45, 0, 0, 20}
	tx, _ := AppendTransmit(nil, ipoib.BroadcastAddr(0xffff), 0x0800, payload)
	f.Add(tx)
	grh := ib.GRH{SGID: ib.GIDFromParts(0xfe80<<48, 1), DGID: ib.GIDFromParts(0xfe80<<48, 2)}
	rx, _ := AppendReceive(nil, &grh, 0x48, 0x86dd, payload)
	f.Add(rx)
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		err := Decode(b, &fr)
		if (err != nil) != (len(b) < FrameHeaderLen) {
			t.Fatalf("Decode(%d bytes) = %v", len(b), err)
		}
		if err != nil {
			return
		}
		out, err := fr.AppendTo(nil)
		if err != nil {
			t.Fatalf("AppendTo after decode: %v", err)
		}
		want := bytes.Clone(b)
		switch fr.Form {
		case FormAddress:
			clear(want[:20])
		case FormGRH:
			want[4] = 0
		default:
			t.Fatalf("form %v", fr.Form)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("re-encode:\n got %x\nwant %x", out, want)
		}
		var again Frame
		if err := Decode(out, &again); err != nil || !ipoibFrameEqual(&again, &fr) {
			t.Fatalf("decode(encode(x)) = %+v, %v; want %+v", again, err, fr)
		}
	})
}

func BenchmarkAppendIPoIBTransmit(b *testing.B) {
	payload := make([]byte, 1400)
	buf := make([]byte, 0, 2048)
	dst := ipoib.BroadcastAddr(0xffff)
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		out, err := AppendTransmit(buf[:0], dst, 0x0800, payload)
		if err != nil {
			b.Fatal(err)
		}
		if err := Decode(out, &f); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIPoIBNoAlloc checks that decoding, encoding into a buffer with room,
// and writing a capture record (once the writer's scratch buffer has grown)
// allocate nothing.
func TestIPoIBNoAlloc(t *testing.T) {
	frames := ipoibReadCapture(t)
	var f Frame
	buf := make([]byte, 0, 4096)
	w, err := NewWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	grh := ib.GRH{SGID: ib.GIDFromParts(0xfe80<<48, 1)}
	ts := time.Unix(1700000000, 0)
	tests := []struct {
		name string
		f    func()
	}{
		{"Decode", func() { _ = Decode(frames[0], &f) }},
		{"AppendTo", func() { _, _ = f.AppendTo(buf[:0]) }},
		{"AppendReceive", func() { _, _ = AppendReceive(buf[:0], &grh, 1, 0x0800, frames[0][44:]) }},
		{"WriteTransmit", func() { _ = w.WriteTransmit(ts, f.Dest, 0x0800, frames[0][44:]) }},
		{"WriteReceive", func() { _ = w.WriteReceive(ts, &grh, 1, 0x0800, frames[0][44:]) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tt.name, n)
		}
	}
}
