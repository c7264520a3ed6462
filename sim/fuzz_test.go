package sim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
)

// fuzzEnv is a star of two hosts with endpoints, for one fuzz input.
func fuzzEnv(t *testing.T) (*env, *ep, *ep) {
	e := newEnv(t, Config{})
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{LID: 1})
	a, _ := e.f.AddHost("a", HostConfig{PortGUIDs: []ib.GUID{0x0002c9020024f636}, LIDs: []ib.LID{4}})
	b, _ := e.f.AddHost("b", HostConfig{PortGUIDs: []ib.GUID{0x0002c90300001895}, LIDs: []ib.LID{2}})
	e.f.Connect(a, sw, CableConfig{})
	e.f.Connect(b, sw, CableConfig{})
	if err := e.f.Start(); err != nil {
		t.Fatal(err)
	}
	a.nextQPN, b.nextQPN = 0x405, 0x405
	return e, e.open(a, ib.QKeyIPoIBDefault), e.open(b, ib.QKeyIPoIBDefault)
}

// outcomes is what a frame can end as: delivered somewhere or dropped.
func outcomes(c Counters) uint64 { return c.Delivered + c.TotalDrops() }

// FuzzReceiveFrame puts arbitrary bytes on host a's link. Whatever they
// are, the fabric must not panic, must account for the frame (delivered or
// dropped under some reason), and must deliver only what ib.DecodePacket
// accepts, with the payload it decodes.
func FuzzReceiveFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > maxFrameLen {
			return
		}
		e, a, b := fuzzEnv(t)
		before := outcomes(e.f.Counters())
		e.inject(a.h, 1, frame)
		c := e.f.Counters()
		if outcomes(c) == before {
			t.Fatalf("frame not accounted for: %v", c)
		}
		var pkt ib.Packet
		err := ib.DecodePacket(frame, &pkt)
		for _, r := range append(b.recv, a.recv...) {
			if err != nil {
				t.Fatalf("delivered a frame DecodePacket rejects (%v)", err)
			}
			if r.wc.Status == ib.StatusSuccess && !bytes.Equal(r.payload, pkt.Payload) {
				t.Fatalf("delivered payload %x, frame carries %x", r.payload, pkt.Payload)
			}
		}
		if err == nil {
			// A decodable frame re-encodes to a frame that decodes to the
			// same packet (the bytes may differ only in pad and reserved
			// bits).
			re, err := pkt.AppendTo(nil)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			var again ib.Packet
			if err := ib.DecodePacket(re, &again); err != nil || !bytes.Equal(again.Payload, pkt.Payload) ||
				again.LRH.DLID != pkt.LRH.DLID || again.BTH.DestQP != pkt.BTH.DestQP || again.DETH != pkt.DETH {
				t.Fatalf("re-encoded frame decodes to %+v, %v", again, err)
			}
		} else if !errors.Is(err, ib.ErrTruncated) && c.Drops[DropBadCRC]+c.Drops[DropMalformed]+c.Drops[DropNoRoute]+
			c.Drops[DropLinkDown]+c.Drops[DropOversize]+c.Drops[DropWrongDLID]+c.Drops[DropPortNotActive] == 0 {
			t.Fatalf("undecodable frame (%v) counted as %v", err, c)
		}
		// The fabric still works.
		b.send(unicastAV(a.attr().LID), a.qp.QPN(), ib.QKeyIPoIBDefault, []byte("still alive"))
		e.settle()
		if n := len(a.recv); n == 0 || string(a.recv[n-1].payload) != "still alive" {
			t.Fatalf("fabric wedged after the frame: %v", e.f.Counters())
		}
	})
}

// FuzzSAMAD sends an arbitrary MAD to the SA from host a. The SA must not
// panic; it either drops the MAD (counted) or answers with a 256-byte SA
// MAD that has the response bit, the request's TID and attribute; and it
// keeps answering a known-good query afterwards.
func FuzzSAMAD(f *testing.F) {
	f.Fuzz(func(t *testing.T, mad []byte) {
		if len(mad) > 4096 {
			return
		}
		e, a, _ := fuzzEnv(t)
		var pkt ib.Packet
		pkt.LRH.DLID, pkt.LRH.SLID = 1, 4
		pkt.BTH = ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: ib.QPNGSI}
		pkt.DETH = ib.DETH{QKey: ib.QKeyGSI, SrcQP: ib.QPNGSI}
		pkt.Payload = mad
		frame, err := pkt.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		before := e.f.Counters()
		e.inject(a.h, 1, frame)
		after := e.f.Counters()
		if len(a.mads) > 1 {
			t.Fatalf("%d answers to one request", len(a.mads))
		}
		if len(a.mads) == 0 {
			if after.TotalDrops() == before.TotalDrops() {
				t.Fatalf("request neither answered nor counted: %v", after)
			}
		} else {
			ans := a.mads[0].mad
			var hdr, req ib.MAD
			if err := hdr.Decode(ans); err != nil {
				t.Fatalf("answer: %v", err)
			}
			if err := req.Decode(mad); err != nil {
				t.Fatalf("answered a request that does not decode: %v", err)
			}
			if !hdr.Method.IsResponse() || hdr.TransactionID != req.TransactionID ||
				hdr.AttributeID != req.AttributeID || hdr.MgmtClass != ib.MgmtClassSubnAdm {
				t.Fatalf("answer header %+v to request %+v", hdr.MADHeader, req.MADHeader)
			}
			var m ib.SAMAD
			if hdr.Status&0x1c == 0 && m.Decode(ans) != nil {
				t.Fatalf("answer with good version does not decode as an SA MAD")
			}
		}
		a.mads = nil
		if _, st := e.path(a, a.h.ports[1].gids[0]); st != 0 {
			t.Fatalf("SA broken after the request: status %v", st)
		}
	})
}

// TestWriteFuzzSeeds regenerates the checked-in seed corpora from the
// captured frames and from frames of a simulated exchange. Run with
// SIM_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SIM_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set SIM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	var capture bytes.Buffer
	e := newEnv(t, Config{Capture: &capture, MTU: ib.MTU2048, Rate: ib.Rate10Gbps})
	sw, _ := e.f.AddSwitch("sw0", SwitchConfig{LID: 1})
	ha, _ := e.f.AddHost("a", HostConfig{PortGUIDs: []ib.GUID{0x0002c9020024f636}, LIDs: []ib.LID{4}})
	hb, _ := e.f.AddHost("b", HostConfig{PortGUIDs: []ib.GUID{0x0002c90300001895}, LIDs: []ib.LID{2}})
	e.f.Connect(ha, sw, CableConfig{})
	e.f.Connect(hb, sw, CableConfig{})
	e.f.Start()
	ha.nextQPN, hb.nextQPN = 0x405, 0x405
	a, b := e.open(ha, ib.QKeyIPoIBDefault), e.open(hb, ib.QKeyIPoIBDefault)
	r, m := createJoin(broadcastMGID, a.gid(), ib.PKeyDefault, ib.QKeyIPoIBDefault)
	g, _ := e.join(a, r, m)
	r.PortGID = b.gid()
	e.join(b, r, m)
	b.qp.AttachMcast(broadcastMGID, g.MLID)
	pr, _ := e.path(a, b.gid())
	lq, lm := ib.MCMemberQuery(broadcastMGID, b.gid(), ib.PKeyDefault, ib.JoinFullMember)
	b.saRequest(ib.MethodDelete, ib.SAAttrMCMemberRecord, lm, &lq)
	gq := ib.MCMemberRecord{MGID: broadcastMGID}
	a.saRequest(ib.MethodGet, ib.SAAttrMCMemberRecord, ib.MCMemberCompMGID, &gq)
	a.send(unicastAV(pr.DLID), b.qp.QPN(), ib.QKeyIPoIBDefault, []byte{0x08, 0x00, 0, 0}, []byte("ipv4 would go here"))
	a.send(mcastAV(broadcastMGID, g.MLID), ib.QPNMulticast, ib.QKeyIPoIBDefault, []byte{0x08, 0x06, 0, 0}, []byte("arp"))
	e.settle()
	frames := readERF(t, capture.Bytes())
	// The captured frames of TestRealSAExchange and TestRealMulticastFrame.
	real := [][]byte{captureFrame5(t), captureFrame32(t)}
	frameSeeds := append(append([][]byte{}, real...), frames...)
	var madSeeds [][]byte
	for _, fr := range frameSeeds {
		var p ib.Packet
		if ib.DecodePacket(fr, &p) == nil && p.BTH.DestQP == ib.QPNGSI && len(p.Payload) == ib.MADLen && p.Payload[3]&0x80 == 0 {
			madSeeds = append(madSeeds, p.Payload)
		}
	}
	write := func(target string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzReceiveFrame", frameSeeds)
	write("FuzzSAMAD", madSeeds)
	t.Logf("%d frame seeds, %d MAD seeds", len(frameSeeds), len(madSeeds))
}
