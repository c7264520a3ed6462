package sim

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/pcap"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
)

// readERF returns the IB frames of an ERF pcap.
func readERF(t testing.TB, file []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, data := range pcaptest.ReadFrom(t, "capture", bytes.NewReader(file), pcap.LinkTypeERF) {
		var h pcap.ERFHeader
		pkt, err := pcap.DecodeERFRecord(data, &h)
		if err != nil || h.Type != pcap.ERFTypeInfiniBand {
			t.Fatalf("ERF record: type %d, %v", h.Type, err)
		}
		out = append(out, pkt)
	}
	return out
}

// TestPcapTshark captures a join, a path query, unicast and multicast, and
// has tshark decode it: no malformed packets or error expert info, and the
// SA MADs recognised as MCMemberRecord and PathRecord.
func TestPcapTshark(t *testing.T) {
	pcaptest.NeedTshark(t)
	var capture bytes.Buffer
	e := newEnv(t, Config{Capture: &capture})
	hosts := e.star(2, HostConfig{})
	const qkey = ib.QKeyIPoIBDefault
	a, b := e.open(hosts[0], qkey), e.open(hosts[1], qkey)
	r, m := createJoin(broadcastMGID, a.gid(), ib.PKeyDefault, qkey)
	g, _ := e.join(a, r, m)
	r.PortGID = b.gid()
	e.join(b, r, m)
	b.qp.AttachMcast(broadcastMGID, g.MLID)
	pr, _ := e.path(a, b.gid())
	// IPoIB-looking payloads: an ethertype, two zero bytes, then data.
	a.send(unicastAV(pr.DLID), b.qp.QPN(), qkey, []byte{0x88, 0xb5, 0, 0}, []byte("unicast payload"))
	a.send(mcastAV(broadcastMGID, g.MLID), ib.QPNMulticast, qkey, []byte{0x88, 0xb5, 0, 0}, []byte("multicast payload"))
	e.settle()
	if len(b.recv) != 2 {
		t.Fatalf("b received %d datagrams, want 2", len(b.recv))
	}
	path := pcaptest.WriteTemp(t, "sim.pcap", capture.Bytes())
	text := pcaptest.Tshark(t, path, "-T", "json", "-V")
	var pkts []struct {
		Source struct {
			Layers map[string]json.RawMessage `json:"layers"`
		} `json:"_source"`
	}
	if err := json.Unmarshal([]byte(text), &pkts); err != nil {
		t.Fatalf("tshark JSON: %v", err)
	}
	if len(pkts) != 8 {
		t.Errorf("tshark shows %d packets, want 8 (2 joins, 1 path query, their answers, 2 datagrams)", len(pkts))
	}
	for _, bad := range []string{`"_ws.malformed"`, `"_ws.expert.severity": "8388608"`, `"_ws.expert.severity": "6291456"`} {
		if strings.Contains(text, bad) {
			t.Errorf("tshark reports %s", bad)
		}
	}
	lines := pcaptest.Fields(t, path, "", "infiniband.mad.method", "infiniband.mad.attributeid",
		"infiniband.mcmemberrecord.mlid", "infiniband.pathrecord.dlid", "infiniband.bth.destqp")
	var mc, pathRecs int
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) < 5 {
			continue
		}
		switch f[1] {
		case "0x0038":
			mc++
			if f[2] == "" {
				t.Errorf("MCMemberRecord not dissected: %q", l)
			}
		case "0x0035":
			pathRecs++
			if f[3] == "" {
				t.Errorf("PathRecord not dissected: %q", l)
			}
		}
	}
	if mc != 4 || pathRecs != 2 {
		t.Errorf("tshark saw %d MCMemberRecord and %d PathRecord MADs, want 4 and 2:\n%s", mc, pathRecs, strings.Join(lines, "\n"))
	}
}
