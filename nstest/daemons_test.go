package nstest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/ipoibd/ipoibd/internal/pcaptest"
	"github.com/ipoibd/ipoibd/internal/proctest"
	"github.com/ipoibd/ipoibd/internal/rocetest"
)

// The IPoIB link's addresses in TestThreeHosts.
const (
	serverAddr = "10.66.0.1"
	leaseRange = "10.66.0.100-10.66.0.150"
	pingCount  = 20
	xferBytes  = 1 << 20
)

var (
	leaseRE = regexp.MustCompile(`address ([0-9.]+)/\d+ from DHCP server`)
	xferRE  = regexp.MustCompile(`VMXFER role=(\w+) bytes=(\d+) sha256=([0-9a-f]+) ok=(\w+) ms=(\d+) mbps=([0-9.]+)`)
)

// pingJSON is what the test reads of `ipoibd ping --json`.
type pingJSON struct {
	Sent     int      `json:"transmitted"`
	Received int      `json:"received"`
	P50Ms    *float64 `json:"rtt_p50_ms"`
}

// summary is the line the test logs for a ping.
func (p pingJSON) summary() string {
	s := fmt.Sprintf("%d/%d answered", p.Received, p.Sent)
	if p.P50Ms != nil {
		s += fmt.Sprintf(", rtt p50 %.3f ms", *p.P50Ms)
	}
	return s
}

// TestThreeHosts runs three ipoibd daemons on udp devices in three
// namespaces: a DHCP server and two clients. Every host pings every
// other, a TCP stream crosses between every pair byte for byte, and the
// capture taken on the bridge has valid ICRCs and opens in tshark.
func TestThreeHosts(t *testing.T) {
	tp := newTopo(t, 3, 0)
	bin := buildBinaries(t)
	ipoibd, vmxfer := filepath.Join(bin, "ipoibd"), filepath.Join(bin, "vmxfer")
	dir := proctest.TempDir(t, dirPrefix)

	wire := filepath.Join(dir, "wire.pcap")
	var capture *proc
	if _, err := exec.LookPath("dumpcap"); err == nil {
		capture = tp.start(tp.sw, filepath.Join(dir, "dumpcap.log"), "dumpcap", "-q", "-P", "-i", "br0", "-w", wire)
		capture.waitLog(t, "Capturing on", 10*time.Second)
	} else {
		t.Log("dumpcap not installed (tshark): the wire is not captured")
	}

	sock := func(i int) string { return filepath.Join(dir, fmt.Sprintf("h%d.sock", i)) }
	// Lease files in the test's directory, not the state directory
	// shared by every run.
	leases := func(i int) string { return filepath.Join(dir, fmt.Sprintf("h%d.lease", i)) }
	// h0 and h1 use their IPv4-mapped GIDs (index 1), h2 its link-local
	// GID (index 0): unicast crosses over IPv4, IPv6 and both mixed.
	daemons := []*proc{tp.start(tp.hosts[0], filepath.Join(dir, "h0.log"), ipoibd, "up", "--device", "udp:eth0", "--gid-index", "1",
		"--addr", serverAddr+"/24", "--dhcp-server", leaseRange, "--socket", sock(0), "--lease-file", leases(0))}
	daemons[0].waitLog(t, ": ready", 20*time.Second)
	addrs := []string{serverAddr}
	for i, gid := range []string{"1", "0"} {
		h := i + 1
		daemons = append(daemons, tp.start(tp.hosts[h], filepath.Join(dir, fmt.Sprintf("h%d.log", h)), ipoibd, "up",
			"--device", "udp:eth0", "--gid-index", gid, "--dhcp", "--socket", sock(h), "--lease-file", leases(h)))
	}
	for _, d := range daemons[1:] {
		m := leaseRE.FindStringSubmatch(d.waitLog(t, "from DHCP server", 30*time.Second))
		if m == nil {
			t.Fatalf("no leased address in %s", d.log)
		}
		addrs = append(addrs, m[1])
	}
	t.Logf("leases: %v", addrs[1:])

	// Every host pings every other.
	for i := range daemons {
		for j, dst := range addrs {
			if i == j {
				continue
			}
			out, err := exec.Command(ipoibd, "ping", "--socket", sock(i), "--json", "-c", fmt.Sprint(pingCount), "-i", "0.005", dst).Output()
			var p pingJSON
			if jerr := json.Unmarshal(out, &p); err != nil || jerr != nil {
				t.Errorf("h%d ping %s: %v %v\n%s", i, dst, err, jerr, out)
				continue
			}
			if p.Received < p.Sent*9/10 || p.Sent != pingCount {
				t.Errorf("h%d ping %s: %s", i, dst, p.summary())
			}
			t.Logf("h%d -> %s: %s", i, dst, p.summary())
		}
	}

	// A TCP stream between every pair, from more IPoIB interfaces (other
	// processes on the same eth0s): h1 -> h0, h2 -> h1, h0 -> h2.
	for k, pair := range [][2]int{{1, 0}, {2, 1}, {0, 2}} {
		src, dst := pair[0], pair[1]
		sinkAddr, srcAddr := fmt.Sprintf("10.66.0.%d", 11+2*k), fmt.Sprintf("10.66.0.%d", 12+2*k)
		sink := tp.start(tp.hosts[dst], filepath.Join(dir, fmt.Sprintf("sink%d.log", k)), vmxfer, "-device", "udp:eth0",
			"-gid-index", fmt.Sprint(dst%2), "-addr", sinkAddr+"/24", "-sink", "-bytes", fmt.Sprint(xferBytes), "-timeout", "60s")
		sink.waitLog(t, "listening", 20*time.Second)
		source := tp.start(tp.hosts[src], filepath.Join(dir, fmt.Sprintf("source%d.log", k)), vmxfer, "-device", "udp:eth0",
			"-gid-index", fmt.Sprint(src%2), "-addr", srcAddr+"/24", "-source", sinkAddr, "-bytes", fmt.Sprint(xferBytes), "-timeout", "60s")
		if err := source.wait(90 * time.Second); err != nil {
			t.Errorf("TCP source h%d: %v", src, err)
		}
		if err := sink.wait(30 * time.Second); err != nil {
			t.Errorf("TCP sink h%d: %v", dst, err)
		}
		s := xferRE.FindStringSubmatch(source.waitLog(t, "VMXFER", time.Second))
		r := xferRE.FindStringSubmatch(sink.waitLog(t, "VMXFER", time.Second))
		if s == nil || r == nil || r[4] != "true" || r[3] != s[3] || r[2] != fmt.Sprint(xferBytes) {
			t.Errorf("TCP h%d -> h%d not byte-identical: source %v, sink %v", src, dst, s, r)
			continue
		}
		t.Logf("TCP h%d -> h%d: %s bytes in %s ms, %s Mbit/s, sha256 %.16s", src, dst, r[2], r[5], r[6], r[3])
	}

	for i, d := range daemons {
		if out, err := exec.Command(ipoibd, "down", "--socket", sock(i)).CombinedOutput(); err != nil {
			t.Errorf("h%d down: %v\n%s", i, err, out)
		}
		if err := d.wait(10 * time.Second); err != nil {
			t.Errorf("h%d daemon exited with %v", i, err)
		}
	}
	if capture != nil {
		_ = capture.cmd.Process.Signal(syscall.SIGTERM)
		_ = capture.wait(10 * time.Second)
		checkWire(t, wire, 1)
	}
}

// checkWire checks a capture of the Ethernet: every RoCEv2 datagram has a
// valid ICRC, the IPoIB broadcast group went out as the IPv6 multicast
// address the MGID is, and tshark finds no malformed frame. minV4 is how
// many IPv4 datagrams there must be at least.
func checkWire(t *testing.T, path string, minV4 int) rocetest.Summary {
	t.Helper()
	s := rocetest.Check(pcaptest.Read(t, path, layers.LinkTypeEthernet))
	t.Logf("on the wire: %d RoCEv2 datagrams (%d IPv4, %d IPv6, %d multicast to %v, %d UD), %d bad ICRCs",
		s.Packets, s.IPv4, s.IPv6, s.Multicast, s.McastDsts, s.UD, len(s.BadICRC))
	for _, b := range s.BadICRC {
		t.Error(b)
	}
	if s.Packets == 0 || s.IPv4 < minV4 || s.IPv6 == 0 {
		t.Errorf("too little RoCEv2 traffic on the wire: %+v", s)
	}
	if len(s.McastDsts) == 0 {
		t.Error("no multicast RoCEv2 datagram on the wire")
	}
	for a := range s.McastDsts {
		if !strings.HasPrefix(a.String(), "ff12:401b:ffff::") {
			t.Errorf("multicast to %v: not an IPoIB MGID of the default partition", a)
		}
	}
	seen, ok := rocetest.Tshark(t, path)
	if !ok {
		return s
	}
	t.Logf("tshark: %v", seen)
	n, quoted := 0, 0
	for p, c := range seen {
		switch {
		case strings.Contains(p, ":icmp:ip:udp:infiniband"), strings.Contains(p, ":icmpv6:ipv6:udp:infiniband"):
			// An ICMP error quoting a RoCEv2 datagram (port unreachable
			// when a daemon has already closed its socket at shutdown)
			// is not a RoCEv2 datagram itself: the ICRC check, which
			// reads only UDP to 4791, rightly does not count it.
			quoted += c
		case strings.Contains(p, ":infiniband"):
			n += c
		}
	}
	if quoted > 0 {
		t.Logf("%d ICMP errors quote a RoCEv2 datagram", quoted)
	}
	if n != s.Packets {
		t.Errorf("tshark decodes %d frames as RoCEv2 (InfiniBand over UDP), the ICRC check found %d", n, s.Packets)
	}
	return s
}
