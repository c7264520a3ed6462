package stack

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/internal/syncbuf"
	"github.com/ipoibd/ipoibd/ipoib/arp"
	"github.com/ipoibd/ipoibd/ipoib/capture"
)

// captureTraffic runs ARP, ping and a short TCP exchange from a node
// with a pcap tap and returns the capture.
func captureTraffic(t *testing.T) []byte {
	t.Helper()
	var w testWire
	var capture syncbuf.Buffer
	a := newTestNode(t, &w, 1, "10.0.0.1/24", func(o *Options) { o.Pcap = &capture })
	b := newTestNode(t, &w, 2, "10.0.0.2/24", nil)
	if st := ping(t, a, b.Addr.Addr(), 3); st.Received != 3 {
		t.Fatalf("ping: %v", st)
	}
	l, err := b.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(b.Addr.Addr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("ipoib "), 1000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v", err)
	}
	c.Close()
	// Let the FIN exchange reach the tap.
	time.Sleep(50 * time.Millisecond)
	return capture.Bytes()
}

func TestPcapTapFrames(t *testing.T) {
	raw := captureTraffic(t)
	const fileHeader = 24
	if len(raw) < fileHeader {
		t.Fatalf("capture of %d bytes", len(raw))
	}
	// Walk the records (nanosecond pcap, little-endian) and check both
	// pseudo-header forms decode and carry the expected addresses.
	var forms = map[capture.Form]int{}
	sawARP := false
	for off := fileHeader; off < len(raw); {
		if off+16 > len(raw) {
			t.Fatalf("truncated record header at %d", off)
		}
		incl := int(uint32(raw[off+8]) | uint32(raw[off+9])<<8 | uint32(raw[off+10])<<16 | uint32(raw[off+11])<<24)
		frame := raw[off+16 : off+16+incl]
		off += 16 + incl
		var f capture.Frame
		if err := capture.Decode(frame, &f); err != nil {
			t.Fatal(err)
		}
		forms[f.Form]++
		if f.Reserved != 0 {
			t.Errorf("reserved bytes %#x on the wire", f.Reserved)
		}
		if f.EtherType == arp.EtherType {
			var a arp.Packet
			if err := a.Decode(f.Payload); err != nil {
				t.Errorf("captured ARP: %v", err)
			}
			sawARP = true
		}
		if f.Form == capture.FormGRH && (f.SrcQPN != 0x4a || f.GRH.SGID != (ib.GID{0xfe, 0x80, 15: 2})) {
			t.Errorf("received frame from QPN %#x GID %v, want B's", f.SrcQPN, f.GRH.SGID)
		}
	}
	if forms[capture.FormAddress] == 0 || forms[capture.FormGRH] == 0 || !sawARP {
		t.Errorf("forms %v, ARP seen %v", forms, sawARP)
	}
}

func TestPcapTapTshark(t *testing.T) {
	pcaptest.NeedTshark(t)
	file := pcaptest.WriteTemp(t, "ipoib.pcap", captureTraffic(t))
	pcaptest.CheckClean(t, file)
	tests := []struct {
		name   string
		filter string
		fields []string
		want   string // every output line must be this
	}{
		{"ARP is InfiniBand with 20-byte addresses", "arp", []string{"arp.hw.type", "arp.hw.size", "arp.proto.type"}, "32|20|0x0800"},
		{"ICMP echo", "icmp", []string{"ip.proto"}, "1"},
		{"TCP", "tcp", []string{"ip.proto"}, "6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := pcaptest.Fields(t, file, tc.filter, tc.fields...)
			if len(lines) == 0 {
				t.Fatalf("no %s frames", tc.filter)
			}
			for _, line := range lines {
				if line != tc.want {
					t.Errorf("%q, want %q", line, tc.want)
				}
			}
		})
	}
	if protos := strings.Join(pcaptest.Fields(t, file, "", "frame.protocols"), "\n"); !strings.Contains(protos, "ip:tcp") {
		t.Errorf("protocol stacks:\n%s", protos)
	}
}
