package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/internal/rocetest"
)

// The two-VM ipoibd test: the real daemon on soft-RoCE, end to end.
//
// One run of two VMs does everything, because booting is the expensive
// part under TCG:
//
//  1. ibv_ud_pingpong between the VMs' rxe0 ports: the verbs baseline
//     the ipoibd ping is compared with (same pair, same message size
//     order, no IP stack).
//  2. vm0 runs `ipoibd up --addr 10.66.0.1/24 --dhcp-server ...`, vm1
//     `ipoibd up --dhcp`: vm1 leases an address over IPoIB on RoCE.
//  3. `ipoibd ping` both ways (vm1 to 10.66.0.1, vm0 to vm1's lease).
//  4. vmxfer (vmtest/cmd/vmxfer) brings up a second IPoIB interface in
//     each VM and moves a TCP stream, checked byte for byte; the figure
//     is the TCP throughput.
//  5. The daemons are stopped, and vm0's capture is copied out through
//     the share and opened in tshark on the host.
//
// The VMs meet through files in the share: a VM waits for the other's
// marker file before the step that needs it.

// The link's addresses and the lease pool, as in docs/hardware.md.
const (
	vmServerAddr = "10.66.0.1"
	vmDHCPRange  = "10.66.0.100-10.66.0.150"
	vmXferSink   = "10.66.0.11"
	vmXferSource = "10.66.0.12"
	// vmXferBytes is the TCP transfer size: large enough for the window
	// to open fully, small enough for TCG (a few seconds).
	vmXferBytes = 4 << 20
	// vmPingCount and vmPingInterval pace the ipoibd ping; vmUDIters is
	// ibv_ud_pingpong's iteration count and vmUDSize its message size,
	// about an ICMP echo of 56 payload bytes with its IPv4 and IPoIB
	// headers (88 bytes).
	vmPingCount    = 200
	vmPingInterval = "0.01"
	vmUDIters      = 1000
	vmUDSize       = 88
)

// ipoibdShare builds ipoibd and vmxfer with cgo into a fresh share and
// copies ibv_ud_pingpong there; it returns the share and the binaries
// whose libraries the image needs.
func ipoibdShare(t testing.TB) (share string, bins []string) {
	t.Helper()
	share = t.TempDir()
	for _, pkg := range []string{"github.com/ipoibd/ipoibd/cmd/ipoibd", "github.com/ipoibd/ipoibd/vmtest/cmd/vmxfer"} {
		out := filepath.Join(share, filepath.Base(pkg))
		cmd := exec.Command(goTool(t), "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		bins = append(bins, out)
	}
	pp, err := lookTool("ibv_ud_pingpong")
	if err != nil {
		t.Skipf("ibv_ud_pingpong not installed (ibverbs-utils): %v", err)
	}
	b, err := os.ReadFile(pp)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(share, "ibv_ud_pingpong")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return share, append(bins, dst)
}

// vmScriptCommon is the shell every VM script starts with: helpers to fail
// with the daemon's log, to wait for a marker file in the share, to run
// ipoibd up, ping and down, and the two sides of the lease scenario the
// two-VM tests share. The shell has one set of variables for all of
// them: each helper's names must differ from those of the helpers that
// call it (sink once overwrote leaseserver's w).
const vmScriptCommon = `S=` + GuestShare + `
fail() { echo "STEP FAILED: $*"; for f in /tmp/*.log; do echo "--- $f"; cat $f; done; exit 1; }
waitfor() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt $(($2*10)) ] && fail "timed out waiting for $1"; sleep 0.1; done; }
# waitidle FILE SECONDS: waitfor, looking once a second. A guest side that
# must stay quiet while the other measures waits this way: under TCG each
# look forks a sleep that costs milliseconds of the one emulated CPU.
waitidle() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt $2 ] && fail "timed out waiting for $1"; sleep 1; done; }
waitlog() { i=0; while ! grep -q "$2" "$1" 2>/dev/null; do i=$((i+1)); [ $i -gt $(($3*10)) ] && fail "timed out waiting for '$2' in $1"; sleep 0.1; done; }
# sink LOG FLAG WHAT VMXFER-ARGS...: a vmxfer sink; $S/FLAG once it listens; fail WHAT unless it gets every byte.
sink() { l=$1; f=$2; what=$3; shift 3; $S/vmxfer "$@" -sink > $l 2>&1 & x=$!; waitlog $l listening 30; touch $S/$f; wait $x || fail "$what"; cat $l; }
# upready DEVICE ARGS...: ipoibd up on DEVICE with ARGS (UP is its pid), once it is ready.
upready() {
	d=$1; shift
	$S/ipoibd up --device $d "$@" --socket /tmp/ib0.sock > /tmp/up.log 2>&1 &
	UP=$!
	waitlog /tmp/up.log ": ready" 30
	cat /tmp/up.log
}
# pingjson OUT PEER PING-ARGS...: ipoibd ping --json to PEER, its figures in $S/OUT.
pingjson() { o=$1; p=$2; shift 2; $S/ipoibd ping --socket /tmp/ib0.sock --json "$@" $p > $S/$o || { cat $S/$o; fail "ping $p"; }; }
# down: ipoibd down, after which ipoibd up must exit cleanly.
down() { $S/ipoibd down --socket /tmp/ib0.sock; wait $UP || fail "ipoibd up exited with $?"; }
# leaseserver WAIT COUNT INTERVAL SINK-ARGS...: vm0's part of the lease scenario
# once its ipoibd up serves DHCP: tell vm1 ($S/vm0.up), ping vm1's lease COUNT times
# every INTERVAL ($S/ping-vm0.json), sink vm1's TCP stream, and ipoibd down once vm1
# is done. WAIT bounds each wait for vm1, in seconds.
leaseserver() {
	w=$1; c=$2; iv=$3; shift 3
	touch $S/vm0.up
	waitfor $S/vm1.addr $w
	PEER=$(cat $S/vm1.addr)
	echo "STEP ping $PEER"
	pingjson ping-vm0.json $PEER -c $c -i $iv
	echo "STEP TCP sink"
	sink /tmp/xfer.log vm0.sink "TCP sink" "$@"
	waitfor $S/vm1.done $w
	echo "STEP ipoibd down"
	down
}
# leaseclient WAIT SERVER COUNT INTERVAL SOURCE-ARGS...: vm1's part once upleased:
# ping SERVER ($S/ping-vm1.json), source the TCP stream once vm0 sinks it, ipoibd
# down, and tell vm0 ($S/vm1.done).
leaseclient() {
	w=$1; srv=$2; c=$3; iv=$4; shift 4
	echo "STEP ping $srv"
	pingjson ping-vm1.json $srv -c $c -i $iv
	waitfor $S/vm0.sink $w
	echo "STEP TCP source"
	$S/vmxfer "$@" > /tmp/xfer.log 2>&1 || { cat /tmp/xfer.log; fail "TCP source"; }
	cat /tmp/xfer.log
	echo "STEP ipoibd down"
	down
	cat /tmp/up.log
	touch $S/vm1.done
}
# upleased DEVICE: ipoibd up --dhcp on DEVICE (UP is its pid); the leased address goes to $S/vm1.addr.
upleased() {
	$S/ipoibd up --device $1 --dhcp --socket /tmp/ib0.sock > /tmp/up.log 2>&1 &
	UP=$!
	waitlog /tmp/up.log "from DHCP server" 60
	cat /tmp/up.log
	ADDR=$(sed -n 's/.*: address \([0-9.]*\)[^ ]* from DHCP server.*/\1/p' /tmp/up.log)
	[ -n "$ADDR" ] || fail "no leased address in the log"
	echo "$ADDR" > $S/vm1.addr.tmp && mv $S/vm1.addr.tmp $S/vm1.addr
}
`

// vm0Script is the server side: ud_pingpong server, ipoibd with the DHCP
// server, ping to the client, TCP sink, capture out.
var vm0Script = vmScriptCommon + fmt.Sprintf(`
echo "STEP ud_pingpong server"
$S/ibv_ud_pingpong -d rxe0 -g 0 -s %[1]d -n %[2]d > $S/udpp-vm0.txt 2>&1 || { cat $S/udpp-vm0.txt; fail ud_pingpong; }
$S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %[1]d -n %[2]d > $S/udppe-vm0.txt 2>&1 || { cat $S/udppe-vm0.txt; fail "ud_pingpong -e"; }
echo "STEP ipoibd up (server)"
upready rxe0 --addr %[3]s/24 --dhcp-server %[4]s --pcap /tmp/vm0.pcap
leaseserver 60 %[5]d %[6]s -device rxe0 -addr %[7]s/24 -bytes %[8]d
cat /tmp/up.log
cp /tmp/vm0.pcap $S/vm0.pcap || fail "copy the capture out"
echo "STEP done"
`, vmUDSize, vmUDIters, vmServerAddr, vmDHCPRange, vmPingCount, vmPingInterval, vmXferSink, vmXferBytes)

// vm1Script is the client side: ud_pingpong client, ipoibd with DHCP,
// ping to the server, TCP source.
var vm1Script = vmScriptCommon + fmt.Sprintf(`
echo "STEP ud_pingpong client"
i=0
until $S/ibv_ud_pingpong -d rxe0 -g 0 -s %[1]d -n %[2]d %[3]s > $S/udpp-vm1.txt 2>&1; do
	i=$((i+1)); [ $i -gt 100 ] && { cat $S/udpp-vm1.txt; fail ud_pingpong; }; sleep 0.2
done
cat $S/udpp-vm1.txt
i=0
until $S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %[1]d -n %[2]d %[3]s > $S/udppe-vm1.txt 2>&1; do
	i=$((i+1)); [ $i -gt 100 ] && { cat $S/udppe-vm1.txt; fail "ud_pingpong -e"; }; sleep 0.2
done
cat $S/udppe-vm1.txt
waitfor $S/vm0.up 60
echo "STEP ipoibd up --dhcp"
upleased rxe0
leaseclient 60 %[4]s %[5]d %[6]s -device rxe0 -addr %[7]s/24 -source %[8]s -bytes %[9]d
echo "STEP done"
`, vmUDSize, vmUDIters, GuestIPv4(0), vmServerAddr, vmPingCount, vmPingInterval, vmXferSource, vmXferSink, vmXferBytes)

// pingFigures is what the test reads of `ipoibd ping --json`.
type pingFigures struct {
	Sent     int     `json:"transmitted"`
	Received int     `json:"received"`
	AvgMs    float64 `json:"rtt_avg_ms"`
	P50Ms    float64 `json:"rtt_p50_ms"`
}

// udPerIter reads the microseconds per round trip ibv_ud_pingpong
// reported in file in the share.
func udPerIter(share, file string) (float64, error) {
	out, err := os.ReadFile(filepath.Join(share, file))
	if err != nil {
		return 0, err
	}
	m := udIterRE.FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("no usec/iter in ibv_ud_pingpong's output (%s):\n%s", file, out)
	}
	return strconv.ParseFloat(m[3], 64)
}

var (
	udIterRE = regexp.MustCompile(`(\d+) iters in ([0-9.]+) seconds = ([0-9.]+) usec/iter`)
	xferRE   = regexp.MustCompile(`VMXFER role=(\w+) bytes=(\d+) sha256=([0-9a-f]+) ok=(\w+) ms=(\d+) mbps=([0-9.]+)`)
)

// TestIPoIBDTwoVMs runs ipoibd on soft-RoCE in two VMs: a DHCP lease,
// pings both ways, a byte-identical TCP transfer, ARP on the broadcast
// group, and a capture tshark reads. It logs the benchmark figures (ping
// RTT through ipoibd, ibv_ud_pingpong RTT on the same pair, their ratio,
// TCP throughput) that docs/performance.md records.
func TestIPoIBDTwoVMs(t *testing.T) {
	k := vmKernel(t)
	share, bins := ipoibdShare(t)
	start := time.Now()
	res := runVMs(t, Config{Kernel: k, Share: share, Binaries: bins, WorkDir: t.TempDir(), Timeout: 3 * time.Minute},
		[]VM{{Name: "vm0", Script: vm0Script}, {Name: "vm1", Script: vm1Script}})
	if t.Failed() {
		return
	}
	t.Logf("two-VM ipoibd run: %v", time.Since(start).Round(time.Millisecond))

	// The lease, and pings both ways.
	pings := checkLeaseAndPings(t, share)
	sink := checkXfer(t, res)
	if sink != nil {
		t.Logf("TCP through ipoib+stack: %s bytes in %s ms = %s Mbit/s (sink side), sha256 %s", sink[2], sink[5], sink[6], sink[3][:16])
	}

	// The verbs baselines and the ratio. ibv_ud_pingpong busy-polls its
	// CQ by default; with -e it sleeps on the completion channel, as
	// ipoibd's loop does, so both are logged.
	p := pings["vm1"]
	ud := map[string]float64{}
	for _, mode := range []string{"udpp", "udppe"} {
		v, err := udPerIter(share, mode+"-vm1.txt")
		if err != nil {
			t.Error(err)
			continue
		}
		ud[mode] = v
	}
	if ud["udpp"] > 0 && ud["udppe"] > 0 {
		t.Logf("BENCH ipoibd-ping-rtt-us avg=%.0f p50=%.0f | ibv_ud_pingpong-us poll=%.0f events=%.0f | ratio p50/poll=%.1f p50/events=%.1f | tcp-mbps=%s",
			1000*p.AvgMs, 1000*p.P50Ms, ud["udpp"], ud["udppe"], 1000*p.P50Ms/ud["udpp"], 1000*p.P50Ms/ud["udppe"], xferMbps(sink))
	}

	checkCapture(t, filepath.Join(share, "vm0.pcap"))
}

// checkLeaseAndPings checks, from what the VMs left in the share, that
// vm1 leased an address from the pool and that both pings were answered,
// and returns the ping figures by VM.
func checkLeaseAndPings(t *testing.T, share string) map[string]pingFigures {
	t.Helper()
	addr, err := os.ReadFile(filepath.Join(share, "vm1.addr"))
	if err != nil {
		t.Fatal(err)
	}
	if leased := strings.TrimSpace(string(addr)); !strings.HasPrefix(leased, "10.66.0.1") || leased == vmServerAddr {
		t.Errorf("vm1 leased %q, want an address from %s", leased, vmDHCPRange)
	}
	pings := map[string]pingFigures{}
	for _, vm := range []string{"vm0", "vm1"} {
		b, err := os.ReadFile(filepath.Join(share, "ping-"+vm+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var p pingFigures
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("%s ping output: %v\n%s", vm, err, b)
		}
		if p.Received == 0 || p.Received < p.Sent*9/10 {
			t.Errorf("%s ping: %d of %d answered", vm, p.Received, p.Sent)
		}
		pings[vm] = p
		t.Logf("%s ipoibd ping: %d/%d answered, rtt avg %.3f ms, p50 %.3f ms", vm, p.Received, p.Sent, p.AvgMs, p.P50Ms)
	}
	return pings
}

// checkXfer checks the VMXFER lines of both VMs: the stream arrived whole
// and byte-identical. It returns the sink's line, or nil after an error.
func checkXfer(t *testing.T, res []Result) []string {
	t.Helper()
	return checkXferBytes(t, res, vmXferBytes)
}

// checkXferBytes is checkXfer for a transfer of n bytes.
func checkXferBytes(t *testing.T, res []Result, n int) []string {
	t.Helper()
	xfer := map[string][]string{}
	for _, r := range res {
		if m := xferRE.FindStringSubmatch(string(r.Log)); m != nil {
			xfer[m[1]] = m
		}
	}
	src, sink := xfer["source"], xfer["sink"]
	switch {
	case src == nil || sink == nil:
		t.Errorf("no VMXFER lines from both sides (source %v, sink %v)", src != nil, sink != nil)
	case sink[4] != "true" || sink[3] != src[3] || sink[2] != strconv.Itoa(n):
		t.Errorf("TCP transfer not byte-identical: source %v, sink %v", src[1:], sink[1:])
	default:
		return sink
	}
	return nil
}

func xferMbps(m []string) string {
	if m == nil {
		return "?"
	}
	return m[6]
}

// checkCapture opens vm0's capture in tshark: it must decode as IPoIB
// carrying ARP, DHCP and ICMP, and an ARP request must have gone to or
// come from the broadcast group's MGID.
func checkCapture(t *testing.T, path string) {
	t.Helper()
	stacks, ok := rocetest.Tshark(t, path)
	if !ok {
		return
	}
	seen := map[string]int{}
	for stack, n := range stacks {
		for _, p := range strings.Split(stack, ":") {
			seen[p] += n
		}
	}
	t.Logf("capture protocols: %v", seen)
	for _, p := range []string{"ipoib", "arp", "dhcp", "icmp"} {
		if seen[p] == 0 {
			t.Errorf("no %s frame in the capture (protocols %v)", p, seen)
		}
	}
	out, err := exec.Command("tshark", "-r", path, "-Y", "arp.opcode == 1", "-V").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ff12:401b:ffff::ffff:ffff") {
		t.Errorf("no ARP request on the broadcast group ff12:401b:ffff::ffff:ffff in the capture:\n%.3000s", out)
	}
}
