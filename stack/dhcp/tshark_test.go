package dhcp

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/ipoib/capture"
)

// etherTypeIPv4 is the IPoIB header's type for IPv4 (RFC 4391 section
// 6, with the Ethernet type values of RFC 894).
const etherTypeIPv4 = 0x0800

// TestTsharkDecodesExchange captures a client's exchange with the server
// as IPoIB frames (LINKTYPE_IPOIB, 44-byte form) and has tshark decode
// it: four DHCP messages, each with hardware type 0x20 (IPoIB), hlen 0,
// the BROADCAST flag and an RFC 4361 client identifier, and nothing
// malformed.
func TestTsharkDecodesExchange(t *testing.T) {
	pcaptest.NeedTshark(t)
	path := filepath.Join(t.TempDir(), "dhcp-ipoib.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	bcast := ipoib.BroadcastAddr(0xffff)
	ts := testEpoch
	w := newWire(t, 0)
	w.tap = func(pkt []byte) {
		mu.Lock()
		defer mu.Unlock()
		ts = ts.Add(time.Millisecond)
		// All four messages are IP broadcasts, so all go to the
		// partition's broadcast group.
		if err := pw.WriteTransmit(ts, bcast, etherTypeIPv4, pkt); err != nil {
			t.Error(err)
		}
	}
	startServer(t, w, serverConfig(nil, nil))
	leaseAll(t, w, 1, 5*time.Second)
	w.mu.Lock()
	w.tap = nil
	w.mu.Unlock()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	lines := pcaptest.Fields(t, path, "dhcp", "dhcp.option.dhcp", "dhcp.hw.type", "dhcp.hw.len", "dhcp.flags.bc",
		"dhcp.client_id.duid_type", "dhcp.client_id.duid_ll_hw_type", "dhcp.client_id.iaid")
	// Message types 1 DISCOVER, 2 OFFER, 3 REQUEST, 5 ACK (RFC 2132
	// section 9.6); 0x20 = 32, IPoIB; DUID type 3 = DUID-LL over
	// hardware type 32; IAID 1, the low half of testGUID(0). tshark
	// finds the IAID and DUID only in a type-255 identifier.
	want := []string{
		"1|0x20|0|1|3|32|00000001",
		"2|0x20|0|1|3|32|00000001",
		"3|0x20|0|1|3|32|00000001",
		"5|0x20|0|1|3|32|00000001",
	}
	if len(lines) != len(want) {
		t.Fatalf("tshark saw %d DHCP messages, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, l := range lines {
		if l != want[i] {
			t.Errorf("message %d: tshark fields %q, want %q", i, l, want[i])
		}
	}
	pcaptest.CheckClean(t, path)
}
