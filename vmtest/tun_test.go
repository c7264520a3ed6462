package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The two-VM --tun test: the kernel's own programs in vm1 reach vm0's
// ipoibd over soft-RoCE through `ipoibd up --tun`.
//
// vm0 runs `ipoibd up --addr 10.66.0.1/24 --serve tcp::5001=127.0.0.1:5001`
// and a kernel TCP sink (vmxfer -kernel -sink) on 127.0.0.1:5001. vm1 runs
// `ipoibd up --addr 10.66.0.2/24 --tun ipoib0`, then busybox's ping (the
// kernel's ICMP through the TUN interface, answered by vm0's ipoibd) and a
// kernel TCP source (vmxfer -kernel -source 10.66.0.1): the stream goes
// kernel, TUN, vm1's ipoibd, rxe, vm0's ipoibd, --serve, vm0's kernel,
// and is checked byte for byte. Then the same transfer between two
// interfaces of the Go API (vmxfer without -kernel) gives the in-process
// figure of the same boot. After `ipoibd down` vm1's ipoib0 must be gone.

// tunXferBytes is the kernel-to-kernel transfer: smaller than the API's,
// as every segment crosses gVisor's forwarding under TCG.
const tunXferBytes = 2 << 20

var tunVM0Script = vmScriptCommon + fmt.Sprintf(`
echo "STEP ipoibd up --serve"
upready rxe0 --addr %[1]s/24 --serve tcp::5001=127.0.0.1:5001
echo "STEP kernel TCP sink"
sink /tmp/xfer.log vm0.up "TCP sink" -kernel -bytes %[2]d
echo "STEP API TCP sink, for comparison"
sink /tmp/xfer2.log vm0.sink2 "API TCP sink" -device rxe0 -addr %[3]s/24 -bytes %[2]d
waitfor $S/vm1.done 120
echo "STEP ipoibd down"
down
echo "STEP done"
`, vmServerAddr, tunXferBytes, vmXferSink)

var tunVM1Script = vmScriptCommon + fmt.Sprintf(`
waitfor $S/vm0.up 90
echo "STEP ipoibd up --tun"
upready rxe0 --addr 10.66.0.2/24 --tun ipoib0
{ ip addr show dev ipoib0; ip route show dev ipoib0; } > $S/tun-vm1.txt 2>&1
cat $S/tun-vm1.txt
echo "STEP kernel ping %[1]s"
ping -c 5 -W 5 %[1]s > $S/ping-tun.txt 2>&1 || { cat $S/ping-tun.txt; fail "ping %[1]s"; }
cat $S/ping-tun.txt
echo "STEP kernel TCP source through --tun"
$S/vmxfer -kernel -source %[1]s -bytes %[2]d > /tmp/xfer.log 2>&1 || { cat /tmp/xfer.log; fail "TCP source"; }
cat /tmp/xfer.log
echo "STEP API TCP source, for comparison"
waitfor $S/vm0.sink2 90
$S/vmxfer -device rxe0 -addr %[3]s/24 -source %[4]s -bytes %[2]d > /tmp/xfer2.log 2>&1 || { cat /tmp/xfer2.log; fail "API TCP source"; }
cat /tmp/xfer2.log
echo "STEP ipoibd down"
down
ip link show ipoib0 > /dev/null 2>&1 && fail "ipoib0 still exists after ipoibd down"
touch $S/vm1.done
echo "STEP done"
`, vmServerAddr, tunXferBytes, vmXferSource, vmXferSink)

var pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

// TestTwoVMTUN runs the --tun way in on soft-RoCE: the kernel's ping and a
// byte-identical TCP transfer from vm1's kernel reach vm0's ipoibd.
func TestTwoVMTUN(t *testing.T) {
	k := vmKernel(t)
	share, bins := ipoibdShare(t)
	start := time.Now()
	res := runVMs(t, Config{Kernel: k, Share: share, Binaries: bins, WorkDir: t.TempDir(), Timeout: 4 * time.Minute,
		Modules: append(append([]string(nil), BaseModules...), "tun")},
		[]VM{{Name: "vm0", Script: tunVM0Script}, {Name: "vm1", Script: tunVM1Script}})
	if t.Failed() {
		return
	}
	t.Logf("two-VM --tun run: %v", time.Since(start).Round(time.Millisecond))

	conf, err := os.ReadFile(filepath.Join(share, "tun-vm1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mtu 1020", "inet 10.66.0.2/24", "10.66.0.0/24"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("vm1's ipoib0 lacks %q:\n%s", want, conf)
		}
	}
	ping, err := os.ReadFile(filepath.Join(share, "ping-tun.txt"))
	if err != nil {
		t.Fatal(err)
	}
	m := pingSummaryRE.FindStringSubmatch(string(ping))
	if m == nil {
		t.Fatalf("no summary in the kernel ping's output:\n%s", ping)
	}
	if sent, got := atoi(m[1]), atoi(m[2]); got < sent-1 {
		t.Errorf("kernel ping through --tun: %d of %d answered:\n%s", got, sent, ping)
	}
	t.Logf("kernel ping through --tun:\n%s", ping)
	// The kernel's transfer comes first in each log, the API's second.
	sink := checkXferBytes(t, res, tunXferBytes)
	var api []string
	for _, r := range res {
		if all := xferRE.FindAllStringSubmatch(string(r.Log), -1); len(all) == 2 && all[1][1] == "sink" {
			api = all[1]
		}
	}
	if sink == nil || api == nil || api[4] != "true" {
		t.Fatalf("the transfers: kernel %v, API %v", sink, api)
	}
	kernel, _ := strconv.ParseFloat(sink[6], 64)
	inproc, _ := strconv.ParseFloat(api[6], 64)
	t.Logf("BENCH tcp-mbps kernel-through-tun-and-serve=%s api=%s ratio=%.2f (%s bytes each, byte-identical)", sink[6], api[6], kernel/inproc, sink[2])
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
