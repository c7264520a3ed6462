package ib

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/internal/hextest"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// pktCapturePath is a real capture: two ConnectX HCAs and a switch in 2008,
// running IPoIB (datagram and connected mode), SM polling and SA queries,
// captured as ERF records of type InfiniBand.
const pktCapturePath = "testdata/softroce-demo-infiniband.pcap"

// ERF framing of the capture (the ERF record format, as libpcap's
// LINKTYPE_ERF carries it): a 16-byte header whose byte 8 is the record
// type and bytes 14-15 the wire length, then the packet.
const (
	pktERFLinkType   = 197
	pktERFHeaderLen  = 16
	pktERFTypeIB     = 21
	pktCaptureFrames = 43
)

// pktCaptureFrames reads every IB packet of the capture, in order.
func pktReadCapture(t testing.TB) [][]byte {
	t.Helper()
	var frames [][]byte
	for _, data := range pcaptest.Read(t, pktCapturePath, pktERFLinkType) {
		if len(data) < pktERFHeaderLen || data[8]&0x7F != pktERFTypeIB {
			t.Fatalf("record %d is not an ERF InfiniBand record", len(frames)+1)
		}
		wlen := int(binary.BigEndian.Uint16(data[14:16]))
		if len(data) < pktERFHeaderLen+wlen {
			t.Fatalf("record %d: wlen %d, only %d bytes", len(frames)+1, wlen, len(data)-pktERFHeaderLen)
		}
		frames = append(frames, data[pktERFHeaderLen:pktERFHeaderLen+wlen])
	}
	if len(frames) != pktCaptureFrames {
		t.Fatalf("capture has %d frames, want %d", len(frames), pktCaptureFrames)
	}
	return frames
}

// pktFixCRCs rewrites the ICRC (when the LNH has one) and the VCRC at the
// end of frame, so a test can change a header field and still reach the
// check it means to exercise. The CRC functions are checked against the
// real capture separately, which is what makes this safe.
func pktFixCRCs(frame []byte) []byte {
	if len(frame) < LRHLen+ICRCLen+VCRCLen {
		return frame
	}
	end := len(frame) - VCRCLen
	if icrc, err := ICRC(frame[:end-ICRCLen]); err == nil {
		binary.LittleEndian.PutUint32(frame[end-ICRCLen:], icrc)
	}
	binary.LittleEndian.PutUint16(frame[end:], VCRC(frame[:end]))
	return frame
}

// TestCaptureAllFrames decodes every frame of the real capture: the shared
// headers and both CRCs of all 43, the UD ones as Packets, and checks that
// re-encoding a UD packet reproduces the bytes the HCA sent.
func TestCaptureAllFrames(t *testing.T) {
	frames := pktReadCapture(t)
	ops := map[Opcode]int{}
	for i, frame := range frames {
		var f Frame
		if err := DecodeFrame(frame, &f); err != nil {
			t.Errorf("frame %d: DecodeFrame: %v", i+1, err)
			continue
		}
		ops[f.BTH.OpCode]++
		var p Packet
		err := DecodePacket(frame, &p)
		if f.BTH.OpCode != OpUDSendOnly {
			if !errors.Is(err, ErrUnsupportedOpcode) {
				t.Errorf("frame %d (%v): DecodePacket error %v, want ErrUnsupportedOpcode", i+1, f.BTH.OpCode, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("frame %d: DecodePacket: %v", i+1, err)
			continue
		}
		out, err := p.AppendTo(nil)
		if err != nil {
			t.Errorf("frame %d: AppendTo: %v", i+1, err)
			continue
		}
		if !bytes.Equal(out, frame) {
			t.Errorf("frame %d: re-encoded\n%x\nwant\n%x", i+1, out, frame)
		}
	}
	// What the capture holds, by opcode, read with tshark: SMPs, SA and CM
	// MADs, IPoIB datagrams; IPoIB-CM data on RC with its acknowledgements.
	want := map[Opcode]int{OpUDSendOnly: 24, 0x04: 10, 0x11: 9}
	for op, n := range want {
		if ops[op] != n {
			t.Errorf("%d frames with %v, want %d", ops[op], op, n)
		}
	}
}

// TestCaptureGolden checks fields read by hand from the capture's bytes
// (and agreed with tshark's dissection) against what the decoders make of
// them.
func TestCaptureGolden(t *testing.T) {
	frames := pktReadCapture(t)
	sgid3, _ := ParseGID("fe80::2:c903:0:1f2d")
	bcast, _ := ParseGID("ff12:401b:ffff::ffff:ffff")
	sgid26, _ := ParseGID("fe80::2:c902:24:f636")
	mgid26, _ := ParseGID("ff12:601b:ffff::1:ff00:1895")
	tests := []struct {
		name    string
		frame   int // 1-based, as tshark numbers them
		want    Frame
		deth    DETH
		payload int    // payload length, -1 when not a UD packet
		head    string // first payload bytes, hex
	}{
		{
			name:  "SubnGet(SMInfo) on VL15 to the permissive LID",
			frame: 1,
			want: Frame{
				LRH: LRH{VL: 15, LNH: LNHIBALocal, DLID: LIDPermissive, PktLen: 72, SLID: LIDPermissive},
				BTH: BTH{OpCode: OpUDSendOnly, PKey: PKeyDefault, DestQP: QPNSMI, PSN: 489},
				// On the wire 10 65 ef 88, then 00 37.
				ICRC: 0x88ef6510, VCRC: 0x3700,
			},
			deth:    DETH{QKey: 0, SrcQP: QPNSMI},
			payload: 256,
			head:    "0181 0101", // BaseVersion 1, SM class 0x81 directed route, ClassVersion 1, Get
		},
		{
			name:  "IPoIB broadcast with GRH",
			frame: 3,
			want: Frame{
				LRH:    LRH{LNH: LNHIBAGlobal, DLID: 0xc000, PktLen: 43, SLID: 5},
				HasGRH: true,
				GRH:    GRH{IPVer: 6, PayLen: 124, NxtHdr: NxtHdrIBA, SGID: sgid3, DGID: bcast},
				BTH:    BTH{OpCode: OpUDSendOnly, M: true, PKey: PKeyDefault, DestQP: QPNMulticast, PSN: 0x0de6f8},
				ICRC:   0x4dd56605, VCRC: 0xdf35,
			},
			deth:    DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x48},
			payload: 100,
			head:    "0800 0000 4500", // IPoIB header: IPv4, then the IP header
		},
		{
			name:  "IPoIB unicast ARP reply, no GRH",
			frame: 6,
			want: Frame{
				LRH:  LRH{LNH: LNHIBALocal, DLID: 4, PktLen: 23, SLID: 1},
				BTH:  BTH{OpCode: OpUDSendOnly, M: true, PKey: PKeyDefault, DestQP: 0x405, PSN: 0x0d43bc},
				ICRC: 0xdb7be806, VCRC: 0x5c68,
			},
			deth:    DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x404},
			payload: 60,
			head:    "0806 0000 0020 0800 14 04 0002", // ARP, htype 32, IPv4, hlen 20, reply
		},
		{
			name:  "IPv6 multicast neighbour solicitation",
			frame: 26,
			want: Frame{
				LRH:    LRH{LNH: LNHIBAGlobal, DLID: 0xc007, PktLen: 41, SLID: 4},
				HasGRH: true,
				GRH:    GRH{IPVer: 6, PayLen: 116, NxtHdr: NxtHdrIBA, SGID: sgid26, DGID: mgid26},
				BTH:    BTH{OpCode: OpUDSendOnly, M: true, PKey: PKeyDefault, DestQP: QPNMulticast, PSN: 0x2291},
				ICRC:   0xb1efebee, VCRC: 0x75a3,
			},
			deth:    DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x405},
			payload: 92,
			head:    "86dd 0000 6000",
		},
		{
			name:  "IPoIB-CM data on RC SEND Only with AckReq",
			frame: 30,
			want: Frame{
				LRH:  LRH{LNH: LNHIBALocal, DLID: 4, PktLen: 29, SLID: 2},
				BTH:  BTH{OpCode: 0x04, M: true, PKey: PKeyDefault, DestQP: 0x890407, AckReq: true, PSN: 0xbd15cb},
				ICRC: 0x7eef9eb5, VCRC: 0xdd57,
			},
			payload: -1,
			head:    "86dd 0000 6000",
		},
		{
			name:  "RC Acknowledge",
			frame: 11,
			want: Frame{
				LRH:  LRH{LNH: LNHIBALocal, DLID: 4, PktLen: 7, SLID: 1},
				BTH:  BTH{OpCode: 0x11, M: true, PKey: PKeyDefault, DestQP: 0x870408, PSN: 0xd40a55},
				ICRC: 0x505503a8, VCRC: 0x8130,
			},
			payload: -1,
			head:    "1f000001", // AETH: syndrome ACK with credits, MSN 1
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := frames[tc.frame-1]
			var f Frame
			if err := DecodeFrame(frame, &f); err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			head := hextest.Bytes(t, tc.head)
			if tc.payload < 0 && !bytes.HasPrefix(f.Transport, head) {
				t.Errorf("transport bytes %x, want prefix %x", f.Transport, head)
			}
			tc.want.Transport = f.Transport
			if f.LRH != tc.want.LRH || f.HasGRH != tc.want.HasGRH || f.GRH != tc.want.GRH ||
				f.BTH != tc.want.BTH || f.ICRC != tc.want.ICRC || f.VCRC != tc.want.VCRC {
				t.Errorf("decoded\n%+v\nwant\n%+v", f, tc.want)
			}
			if tc.payload < 0 {
				return
			}
			var p Packet
			if err := DecodePacket(frame, &p); err != nil {
				t.Fatalf("DecodePacket: %v", err)
			}
			if p.DETH != tc.deth {
				t.Errorf("DETH %+v, want %+v", p.DETH, tc.deth)
			}
			if len(p.Payload) != tc.payload || !bytes.HasPrefix(p.Payload, head) {
				t.Errorf("payload %d bytes starting %x, want %d starting %x",
					len(p.Payload), p.Payload[:min(len(p.Payload), len(head))], tc.payload, head)
			}
		})
	}
}

// pktUDLocal is a UD SEND Only packet built by hand from the field layouts
// of IBA 7.7, 9.2 and 9.3.3 (the trailing CRCs are filled in by
// pktFixCRCs, whose functions are checked against the real capture):
//
//	LRH: VL 0, LVer 0, SL 3, LNH 2; DLID 0x0012; PktLen 9 words; SLID 0x0034
//	BTH: UD SEND Only; SE, PadCnt 3, TVer 0; P_Key 0x8001; DestQP 0x000102;
//	     PSN 0x000abc
//	DETH: Q_Key 0x00000b1b; SrcQP 0x000048
//	payload 1 byte 0x99, 3 bytes pad
func pktUDLocal(t testing.TB) []byte {
	return pktFixCRCs(hextest.Bytes(t, `
		0032 0012 0009 0034
		64b0 8001 00000102 00000abc
		00000b1b 00000048
		99 000000
		00000000 0000`))
}

// pktUDGlobalImm is a UD SEND Only with Immediate with a GRH, built by hand
// like pktUDLocal:
//
//	LRH: VL 1, SL 0, LNH 3; DLID 0xc001; PktLen 20 words; SLID 0x0001
//	GRH: IPVer 6, TClass 0xa5, FlowLabel 0x12345; PayLen 32; NxtHdr 0x1b;
//	     HopLmt 0x40; SGID fe80::1; DGID ff12:401b:ffff::1
//	BTH: UD SEND Only with Immediate; PadCnt 0; P_Key 0xffff;
//	     DestQP 0xffffff; PSN 1
//	DETH: Q_Key 0x80010000; SrcQP 0x000001
//	ImmDt 0xdeadbeef; payload 4 bytes
func pktUDGlobalImm(t testing.TB) []byte {
	return pktFixCRCs(hextest.Bytes(t, `
		1003 c001 0014 0001
		6a51 2345 0020 1b 40
		fe800000000000000000000000000001
		ff12401bffff00000000000000000001
		6500 ffff 00ffffff 00000001
		80010000 00000001
		deadbeef
		01020304
		00000000 0000`))
}

// TestPacketGoldenVectors decodes the hand-built vectors and re-encodes the
// decoded packets, which must give the same bytes.
func TestPacketGoldenVectors(t *testing.T) {
	sgid, _ := ParseGID("fe80::1")
	dgid, _ := ParseGID("ff12:401b:ffff::1")
	tests := []struct {
		name  string
		frame []byte
		want  Packet
	}{
		{
			name:  "local, 3 bytes pad",
			frame: pktUDLocal(t),
			want: Packet{
				LRH:     LRH{SL: 3, LNH: LNHIBALocal, DLID: 0x12, PktLen: 9, SLID: 0x34},
				BTH:     BTH{OpCode: OpUDSendOnly, SE: true, PadCnt: 3, PKey: 0x8001, DestQP: 0x102, PSN: 0xabc},
				DETH:    DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x48},
				Payload: []byte{0x99},
			},
		},
		{
			name:  "global with immediate",
			frame: pktUDGlobalImm(t),
			want: Packet{
				LRH:    LRH{VL: 1, LNH: LNHIBAGlobal, DLID: 0xc001, PktLen: 20, SLID: 1},
				HasGRH: true,
				GRH: GRH{IPVer: 6, TClass: 0xa5, FlowLabel: 0x12345, PayLen: 32, NxtHdr: NxtHdrIBA,
					HopLmt: 0x40, SGID: sgid, DGID: dgid},
				BTH:     BTH{OpCode: OpUDSendOnlyImm, PKey: PKeyDefault, DestQP: QPNMulticast, PSN: 1},
				DETH:    DETH{QKey: QKeyGSI, SrcQP: QPNGSI},
				ImmDt:   0xdeadbeef,
				Payload: []byte{1, 2, 3, 4},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.frame)
			tc.want.ICRC = binary.LittleEndian.Uint32(tc.frame[n-6:])
			tc.want.VCRC = binary.LittleEndian.Uint16(tc.frame[n-2:])
			var p Packet
			if err := DecodePacket(tc.frame, &p); err != nil {
				t.Fatalf("DecodePacket: %v", err)
			}
			if !pktEqual(&p, &tc.want) {
				t.Errorf("decoded\n%+v\nwant\n%+v", p, tc.want)
			}
			// Derived fields are recomputed: zero them to prove it.
			in := tc.want
			in.LRH.PktLen, in.LRH.LNH, in.GRH.PayLen, in.GRH.IPVer, in.GRH.NxtHdr, in.BTH.PadCnt = 0, 0, 0, 0, 0, 0
			in.ICRC, in.VCRC = 0, 0
			if got := in.Len(); got != len(tc.frame) {
				t.Errorf("Len %d, want %d", got, len(tc.frame))
			}
			out, err := in.AppendTo([]byte("prefix"))
			if err != nil {
				t.Fatalf("AppendTo: %v", err)
			}
			if !bytes.Equal(out[:6], []byte("prefix")) || !bytes.Equal(out[6:], tc.frame) {
				t.Errorf("encoded\n%x\nwant\nprefix + %x", out, tc.frame)
			}
		})
	}
}

// pktEqual compares two packets field by field, payload by content.
func pktEqual(a, b *Packet) bool {
	return a.LRH == b.LRH && a.HasGRH == b.HasGRH && a.GRH == b.GRH && a.BTH == b.BTH &&
		a.DETH == b.DETH && a.ImmDt == b.ImmDt && bytes.Equal(a.Payload, b.Payload) &&
		a.ICRC == b.ICRC && a.VCRC == b.VCRC
}

// TestDecodePacketErrors breaks one thing at a time in valid frames and
// checks the decoder names it with the right sentinel.
func TestDecodePacketErrors(t *testing.T) {
	local := func(t *testing.T) []byte { return pktUDLocal(t) }
	global := func(t *testing.T) []byte { return pktUDGlobalImm(t) }
	tests := []struct {
		name  string
		base  func(*testing.T) []byte
		edit  func([]byte) []byte // returns the frame to decode
		fix   bool                // recompute CRCs after the edit
		want  error
		inMsg string
	}{
		{"empty", local, func(b []byte) []byte { return nil }, false, ErrTruncated, "0 bytes"},
		{"shorter than LRH+BTH", local, func(b []byte) []byte { return b[:20] }, false, ErrTruncated, ""},
		{"VCRC flipped", local, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, false, ErrBadVCRC, "VCRC"},
		{"ICRC flipped", local, func(b []byte) []byte {
			b[len(b)-3] ^= 1
			binary.LittleEndian.PutUint16(b[len(b)-2:], VCRC(b[:len(b)-2]))
			return b
		}, false, ErrBadICRC, "ICRC"},
		{"payload bit flipped, VCRC redone", local, func(b []byte) []byte {
			b[28] ^= 0x80
			binary.LittleEndian.PutUint16(b[len(b)-2:], VCRC(b[:len(b)-2]))
			return b
		}, false, ErrBadICRC, ""},
		{"PktLen one word short", local, func(b []byte) []byte { b[5]--; return b }, true, ErrLength, "PktLen"},
		{"frame longer than PktLen", local, func(b []byte) []byte {
			return append(b[:len(b)-2:len(b)-2], 0, 0, 0, 0, 0, 0)
		}, true, ErrLength, "PktLen"},
		{"LNH raw", local, func(b []byte) []byte { b[1] &^= 3; return b }, true, ErrNotIBATransport, "LNH 0"},
		{"LNH IP non-IBA", local, func(b []byte) []byte { b[1] = b[1]&^3 | 1; return b }, true, ErrNotIBATransport, ""},
		{"LVer 1", local, func(b []byte) []byte { b[0] |= 1; return b }, true, ErrVersion, "LVer"},
		{"TVer 1", local, func(b []byte) []byte { b[9] |= 1; return b }, true, ErrVersion, "TVer"},
		{"opcode RC SEND Only", local, func(b []byte) []byte { b[8] = 0x04; return b }, true, ErrUnsupportedOpcode, "RC SEND Only"},
		{"opcode UD unknown", local, func(b []byte) []byte { b[8] = 0x66; return b }, true, ErrUnsupportedOpcode, "0x66"},
		{"PadCnt beyond payload", local, func(b []byte) []byte {
			// Drop the payload word, keep PadCnt 3 but set it where there
			// is nothing: with the SE bit the byte becomes 0xb0 | 0x30.
			b = append(b[:28:28], b[len(b)-6:]...)
			b[5] = byte((len(b) - 2) / 4)
			return b
		}, true, ErrLength, "PadCnt"},
		{"global too short for GRH", global, func(b []byte) []byte {
			b = append(b[:8:8], make([]byte, 24+6)...)
			b[5] = byte((len(b) - 2) / 4)
			return b
		}, true, ErrTruncated, ""},
		{"GRH IPVer 4", global, func(b []byte) []byte { b[8] = b[8]&0x0F | 0x40; return b }, true, ErrVersion, "IPVer"},
		{"GRH NxtHdr UDP", global, func(b []byte) []byte { b[14] = 17; return b }, true, ErrNotIBATransport, "NxtHdr"},
		{"GRH PayLen off by 4", global, func(b []byte) []byte { b[13] += 4; return b }, true, ErrLength, "PayLen"},
		{"immediate opcode without room for ImmDt", local, func(b []byte) []byte {
			// 8 bytes of DETH and 4 of payload+pad: relabel as SEND
			// with Immediate and drop the payload word.
			b[8] = 0x65
			b[9] &^= 0x30
			b = append(b[:28:28], b[len(b)-6:]...)
			b[5] = byte((len(b) - 2) / 4)
			return b
		}, true, ErrTruncated, "needs 12"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.edit(tc.base(t))
			if tc.fix {
				frame = pktFixCRCs(frame)
			}
			var p Packet
			err := DecodePacket(frame, &p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			// The sealed decoder makes every check but the CRCs'.
			var sp Packet
			serr := DecodeSealedPacket(frame, &sp)
			if crc := errors.Is(tc.want, ErrBadVCRC) || errors.Is(tc.want, ErrBadICRC); crc == errors.Is(serr, tc.want) {
				t.Errorf("DecodeSealedPacket: %v (want %v unless it is a CRC error)", serr, tc.want)
			}
			if !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("error %q does not mention %q", err, tc.inMsg)
			}
		})
	}
}

// TestICRCIgnoresVariantFields changes every field IBA 7.8.1 calls variant
// in real frames: the ICRC on the wire must still verify (only the VCRC is
// redone). Changing any invariant byte must break it.
func TestICRCIgnoresVariantFields(t *testing.T) {
	frames := pktReadCapture(t)
	local, global := frames[5], frames[2] // ARP reply; IPoIB broadcast with GRH
	tests := []struct {
		name    string
		frame   []byte
		at      int
		xor     byte
		variant bool
	}{
		{"local LRH VL", local, 0, 0xF0, true},
		{"local LRH LVer", local, 0, 0x01, false},
		{"local LRH SL", local, 1, 0x10, false},
		{"local LRH DLID", local, 3, 0x01, false},
		{"local BTH reserved byte", local, 8 + 4, 0xFF, true},
		{"local BTH P_Key", local, 8 + 3, 0x01, false},
		{"local DETH Q_Key", local, 20 + 3, 0x01, false},
		{"global LRH VL", global, 0, 0xF0, true},
		{"global LRH SL", global, 1, 0xF0, true},
		{"global LRH DLID", global, 2, 0xFF, true},
		{"global LRH SLID", global, 7, 0x01, true},
		{"global GRH IPVer", global, 8, 0x10, false},
		{"global GRH TClass high", global, 8, 0x0F, true},
		{"global GRH TClass low and FlowLabel", global, 9, 0xFF, true},
		{"global GRH FlowLabel", global, 11, 0x5A, true},
		{"global GRH PayLen", global, 13, 0x04, false},
		{"global GRH NxtHdr", global, 14, 0x01, false},
		{"global GRH HopLmt", global, 15, 0x40, true},
		{"global GRH SGID", global, 16, 0x01, false},
		{"global BTH reserved byte", global, 48 + 4, 0xFF, true},
		{"global BTH DestQP", global, 48 + 7, 0x01, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(tc.frame)
			b[tc.at] ^= tc.xor
			end := len(b) - 2
			onWire := binary.LittleEndian.Uint32(b[end-4:])
			got, err := ICRC(b[:end-4])
			if err != nil {
				t.Fatal(err)
			}
			if (got == onWire) != tc.variant {
				t.Errorf("ICRC %#08x, on wire %#08x; variant=%v", got, onWire, tc.variant)
			}
			if tc.variant {
				binary.LittleEndian.PutUint16(b[end:], VCRC(b[:end]))
				var f Frame
				err := DecodeFrame(b, &f)
				// A changed SL or LID stays legal; so does a variant
				// GRH field. Nothing else may fail.
				if err != nil {
					t.Errorf("DecodeFrame: %v", err)
				}
			}
		})
	}
}

// TestAppendToRoundTrip encodes packets of every pad count, with and
// without GRH and immediate data, and decodes them back.
func TestAppendToRoundTrip(t *testing.T) {
	gid, _ := ParseGID("fe80::2:c903:0:1f2d")
	for _, grh := range []bool{false, true} {
		for _, op := range []Opcode{OpUDSendOnly, OpUDSendOnlyImm} {
			for _, n := range []int{0, 1, 2, 3, 4, 5, 255, 256, 2044, 4092} {
				p := Packet{
					LRH:    LRH{VL: 2, SL: 5, DLID: 0x1234, SLID: 0x0042},
					HasGRH: grh,
					GRH:    GRH{TClass: 0x12, FlowLabel: 0xABCDE, HopLmt: 3, SGID: gid, DGID: gid},
					BTH:    BTH{OpCode: op, SE: n%2 == 0, PKey: 0xFFFF, DestQP: 0xABCDEF, PSN: 0xFEDCBA},
					DETH:   DETH{QKey: 0x12345678, SrcQP: 0x0F0E0D},
					ImmDt:  0xCAFEF00D,
				}
				p.Payload = make([]byte, n)
				for i := range p.Payload {
					p.Payload[i] = byte(i*7 + 1)
				}
				out, err := p.AppendTo(nil)
				if err != nil {
					t.Fatalf("grh=%v %v n=%d: AppendTo: %v", grh, op, n, err)
				}
				if len(out) != p.Len() || len(out)%4 != 2 {
					t.Fatalf("grh=%v %v n=%d: %d bytes, Len %d", grh, op, n, len(out), p.Len())
				}
				var q Packet
				if err := DecodePacket(out, &q); err != nil {
					t.Fatalf("grh=%v %v n=%d: DecodePacket: %v", grh, op, n, err)
				}
				want := p
				if op == OpUDSendOnly {
					want.ImmDt = 0
				}
				want.LRH.LNH, want.LRH.PktLen = LNHIBALocal, uint16((len(out)-2)/4)
				if grh {
					want.LRH.LNH = LNHIBAGlobal
					want.GRH.IPVer, want.GRH.NxtHdr, want.GRH.PayLen = 6, NxtHdrIBA, uint16(len(out)-2-48)
				} else {
					want.GRH = GRH{}
				}
				want.BTH.PadCnt = uint8((4 - n%4) % 4)
				want.ICRC, want.VCRC = q.ICRC, q.VCRC
				if !pktEqual(&q, &want) {
					t.Errorf("grh=%v %v n=%d: decoded\n%+v\nwant\n%+v", grh, op, n, q, want)
				}
			}
		}
	}
}

// TestAppendToErrors checks the encoder refuses what the decoder would.
func TestAppendToErrors(t *testing.T) {
	base := Packet{BTH: BTH{OpCode: OpUDSendOnly}, Payload: []byte{1}}
	tests := []struct {
		name string
		edit func(*Packet)
		want error
	}{
		{"RC opcode", func(p *Packet) { p.BTH.OpCode = 0x04 }, ErrUnsupportedOpcode},
		{"LVer", func(p *Packet) { p.LRH.LVer = 1 }, ErrVersion},
		{"TVer", func(p *Packet) { p.BTH.TVer = 2 }, ErrVersion},
		{"payload too big", func(p *Packet) { p.Payload = make([]byte, MaxPacketLen) }, ErrLength},
		{"VL 16", func(p *Packet) { p.LRH.VL = 16 }, ErrFieldRange},
		{"SL 16", func(p *Packet) { p.LRH.SL = 16 }, ErrFieldRange},
		{"DestQP 25 bits", func(p *Packet) { p.BTH.DestQP = 1 << 24 }, ErrFieldRange},
		{"PSN 25 bits", func(p *Packet) { p.BTH.PSN = 1 << 24 }, ErrFieldRange},
		{"SrcQP 25 bits", func(p *Packet) { p.DETH.SrcQP = 1 << 24 }, ErrFieldRange},
		{"FlowLabel 21 bits", func(p *Packet) { p.HasGRH = true; p.GRH.FlowLabel = 1 << 20 }, ErrFieldRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.edit(&p)
			in := []byte("keep")
			out, err := p.AppendTo(in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if string(out) != "keep" {
				t.Errorf("buffer changed to %q on error", out)
			}
		})
	}
	// The largest payload that fits: PktLen 2047 words.
	p := base
	p.Payload = make([]byte, MaxPacketLen-LRHLen-BTHLen-DETHLen-ICRCLen-VCRCLen)
	if _, err := p.AppendTo(nil); err != nil {
		t.Errorf("largest packet: %v", err)
	}
}

// TestPacketNoAlloc holds the data path to its promise: encoding into a
// buffer with room and decoding allocate nothing.
func TestPacketNoAlloc(t *testing.T) {
	for _, grh := range []bool{false, true} {
		p := pktBenchPacket(grh)
		buf := make([]byte, 0, p.Len())
		var q Packet
		var err error
		allocs := testing.AllocsPerRun(100, func() {
			buf, err = p.AppendTo(buf[:0])
			if err == nil {
				err = DecodePacket(buf, &q)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if allocs != 0 {
			t.Errorf("grh=%v: %v allocations per encode+decode, want 0", grh, allocs)
		}
	}
}

// pktBenchPacket is a full-size IPoIB datagram: 2044 bytes of payload, the
// largest a 2048-byte IB MTU leaves after the 4-byte IPoIB header.
func pktBenchPacket(grh bool) *Packet {
	gid, _ := ParseGID("fe80::2:c903:0:1f2d")
	return &Packet{
		LRH:     LRH{DLID: 4, SLID: 1},
		HasGRH:  grh,
		GRH:     GRH{HopLmt: 1, SGID: gid, DGID: gid},
		BTH:     BTH{OpCode: OpUDSendOnly, PKey: PKeyDefault, DestQP: 0x405, PSN: 1},
		DETH:    DETH{QKey: QKeyIPoIBDefault, SrcQP: 0x404},
		Payload: bytes.Repeat([]byte{0x5A}, 2044),
	}
}

func BenchmarkPacketAppendTo(b *testing.B) {
	for _, grh := range []bool{false, true} {
		b.Run(map[bool]string{false: "local", true: "global"}[grh], func(b *testing.B) {
			p := pktBenchPacket(grh)
			buf := make([]byte, 0, p.Len())
			b.SetBytes(int64(p.Len()))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = p.AppendTo(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodePacket(b *testing.B) {
	for _, grh := range []bool{false, true} {
		b.Run(map[bool]string{false: "local", true: "global"}[grh], func(b *testing.B) {
			frame, err := pktBenchPacket(grh).AppendTo(nil)
			if err != nil {
				b.Fatal(err)
			}
			var p Packet
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if err := DecodePacket(frame, &p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDecodePacket feeds arbitrary frames, and the same frames with their
// CRCs made right so the fuzzer reaches the header checks. Whatever
// decodes must encode back to a frame that decodes to the same packet, and
// to the very same bytes when the input had zero reserved bits and pad.
func FuzzDecodePacket(f *testing.F) {
	f.Add(pktUDLocal(f))
	f.Add(pktUDGlobalImm(f))
	f.Fuzz(func(t *testing.T, frame []byte) {
		pktFuzzOne(t, frame)
		pktFuzzOne(t, pktFixCRCs(bytes.Clone(frame)))
	})
}

func pktFuzzOne(t *testing.T, frame []byte) {
	var f Frame
	ferr := DecodeFrame(frame, &f)
	var p Packet
	err := DecodePacket(frame, &p)
	// Where the CRCs are right, the sealed decoder (which does not
	// recompute them) agrees in every other check and in the packet.
	var s Packet
	serr := DecodeSealedPacket(frame, &s)
	if !errors.Is(err, ErrBadVCRC) && !errors.Is(err, ErrBadICRC) {
		if (serr == nil) != (err == nil) || (err == nil && !pktEqual(&p, &s)) {
			t.Fatalf("DecodeSealedPacket: %v, DecodePacket: %v\n%+v\n%+v", serr, err, s, p)
		}
	}
	if err != nil {
		if ferr == nil && !errors.Is(err, ErrUnsupportedOpcode) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrLength) {
			t.Fatalf("DecodeFrame accepted what DecodePacket refused with %v", err)
		}
		return
	}
	if ferr != nil {
		t.Fatalf("DecodePacket accepted what DecodeFrame refused with %v", ferr)
	}
	out, err := p.AppendTo(nil)
	if err != nil {
		t.Fatalf("AppendTo of a decoded packet: %v", err)
	}
	var q Packet
	if err := DecodePacket(out, &q); err != nil {
		t.Fatalf("decode of re-encoded packet: %v\n%x", err, out)
	}
	q.ICRC, q.VCRC = p.ICRC, p.VCRC
	if !pktEqual(&p, &q) {
		t.Fatalf("round trip changed the packet\n%+v\n%+v", p, q)
	}
	if pktCanonical(frame, &p) && !bytes.Equal(out, frame) {
		t.Fatalf("canonical frame re-encoded differently\n%x\n%x", frame, out)
	}
}

// pktCanonical reports whether frame has every reserved bit and pad byte
// zero, the only form an encoder produces.
func pktCanonical(frame []byte, p *Packet) bool {
	bth := LRHLen
	if p.HasGRH {
		bth += GRHLen
	}
	deth := bth + BTHLen
	pad := len(frame) - ICRCLen - VCRCLen - int(p.BTH.PadCnt)
	return frame[1]&0x0C == 0 && frame[4]&0xF8 == 0 &&
		frame[bth+4] == 0 && frame[bth+8]&0x7F == 0 && frame[deth+4] == 0 &&
		!slicesContainNonZero(frame[pad:len(frame)-ICRCLen-VCRCLen])
}

func slicesContainNonZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}

// golden is one golden byte vector of a header codec: its bytes as hex
// (spaces and newlines ignored) and the value they decode to.
type golden[T any] struct {
	name string
	hex  string
	want T
}

// headerCodec is what every fixed-size header of this package offers.
type headerCodec[T any] interface {
	*T
	Decode([]byte) error
	Encode([]byte) error
}

// checkReencode is the body of the codecs' fuzz targets, run on the
// fuzzer's bytes b: fewer than size bytes fail to decode with
// ErrTruncated; size bytes or more decode, encode again to their first
// size bytes with the reserved fields cleared (by clearReserved, if any:
// what a decoded value does not keep), and those bytes decode to the same
// value. decode, if not nil, decodes in place of the codec's Decode.
func checkReencode[T comparable, P headerCodec[T]](t *testing.T, b []byte, size int, decode func(P, []byte) error, clearReserved func(want []byte)) {
	t.Helper()
	if decode == nil {
		decode = func(h P, b []byte) error { return h.Decode(b) }
	}
	var h T
	err := decode(&h, b)
	if len(b) < size {
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("%d bytes: %v, want ErrTruncated", len(b), err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, size)
	if err := P(&h).Encode(out); err != nil {
		t.Fatalf("re-encode %+v: %v", h, err)
	}
	want := bytes.Clone(b[:size])
	if clearReserved != nil {
		clearReserved(want)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("re-encoded %x, want %x", out, want)
	}
	var h2 T
	if err := decode(&h2, out); err != nil || h2 != h {
		t.Fatalf("decode(encode(x)) = %+v, %v; want %+v", h2, err, h)
	}
}

// checkCodecErrors checks what a header codec must refuse: decoding from,
// or encoding into, one byte less than size (ErrTruncated), and encoding
// each of bad, values with a field out of its range (ErrFieldRange).
func checkCodecErrors[T any, P headerCodec[T]](t *testing.T, size int, bad ...T) {
	t.Helper()
	var h T
	if err := P(&h).Decode(make([]byte, size-1)); !errors.Is(err, ErrTruncated) {
		t.Errorf("Decode of %d bytes: %v, want ErrTruncated", size-1, err)
	}
	if err := P(&h).Encode(make([]byte, size-1)); !errors.Is(err, ErrTruncated) {
		t.Errorf("Encode into %d bytes: %v, want ErrTruncated", size-1, err)
	}
	for _, b := range bad {
		if err := P(&b).Encode(make([]byte, size)); !errors.Is(err, ErrFieldRange) {
			t.Errorf("Encode %+v: %v, want ErrFieldRange", b, err)
		}
	}
}

// checkGolden runs checkVector on each vector.
func checkGolden[T comparable, P headerCodec[T]](t *testing.T, size int, tests []golden[T]) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkVector[T, P](t, size, hextest.Bytes(t, tc.hex), tc.want)
		})
	}
}

// checkVector decodes the golden bytes b and compares the value with
// want, then encodes want into size bytes and one more and compares the
// bytes: the codec must read and write the wire format both ways, and
// write nothing past its size bytes.
func checkVector[T comparable, P headerCodec[T]](t *testing.T, size int, b []byte, want T) {
	t.Helper()
	var got T
	if err := P(&got).Decode(b); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got != want {
		t.Errorf("Decode =\n%+v\nwant\n%+v", got, want)
	}
	out := bytes.Repeat([]byte{0xee}, size+1)
	if err := P(&want).Encode(out); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !bytes.Equal(out[:size], b) || out[size] != 0xee {
		t.Errorf("Encode =\n%x\nwant\n%x (and the byte after untouched)", out, b)
	}
}

// TestAppendToLeavingCRCs checks that the frame without its CRCs, once
// PutCRCs has filled them, is AppendTo's frame byte for byte.
func TestAppendToLeavingCRCs(t *testing.T) {
	for _, frame := range [][]byte{pktUDLocal(t), pktUDGlobalImm(t)} {
		var p Packet
		if err := DecodePacket(frame, &p); err != nil {
			t.Fatal(err)
		}
		want, err := p.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.AppendToLeavingCRCs(nil)
		if err != nil {
			t.Fatal(err)
		}
		crcs := len(got) - VCRCLen - ICRCLen
		if !bytes.Equal(got[:crcs], want[:crcs]) || !bytes.Equal(got[crcs:], make([]byte, ICRCLen+VCRCLen)) {
			t.Fatalf("frame without CRCs\n%x, want\n%x with both CRCs zero", got, want)
		}
		PutCRCs(got)
		if !bytes.Equal(got, want) {
			t.Fatalf("after PutCRCs\n%x, want\n%x", got, want)
		}
		if err := DecodePacket(got, &p); err != nil {
			t.Fatalf("after PutCRCs: %v", err)
		}
	}
	for _, short := range [][]byte{make([]byte, 3), make([]byte, 7), {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		b := slices.Clone(short)
		PutCRCs(b) // too short for its headers and CRCs: left alone, no panic
		if !bytes.Equal(b, short) {
			t.Errorf("PutCRCs(%x) wrote %x", short, b)
		}
	}
}
