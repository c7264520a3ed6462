package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The ping benchmark on soft-RoCE: in one boot of two VMs, the verbs
// baseline (ibv_ud_pingpong, event mode and polling mode) and `ipoibd
// ping` run between the same pair, so the ratio compares like with like.
// It runs with one and with two virtual CPUs per VM: with one, Go has a
// single P, and a loop that kept it while asleep made every packet wait
// for sysmon.

// benchPingCount is how many echo requests `ipoibd ping` sends, at its
// default interval (one second, as ping(8)), so that every request finds
// the daemon idle, as a person pinging would. Single round trips under
// TCG scatter from 6 to 40 ms; with 20 the median of one boot moved by
// half from boot to boot, with 60 it is steadier for a minute more.
const benchPingCount = 60

// benchUDIters is ibv_ud_pingpong's iteration count in the benchmark.
const benchUDIters = 2000

// benchVM0 runs the verbs servers, then the ipoibd daemon that answers.
// While the daemon answers, the script looks for the end once a second
// (waitidle), so that the guest's CPU is the daemon's, as it is
// ibv_ud_pingpong's while that runs: looking ten times a second forks ten
// sleeps a second, each milliseconds of emulated CPU an echo can wait
// behind.
var benchVM0 = vmScriptCommon + fmt.Sprintf(`
echo "STEP ud_pingpong server"
$S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %[1]d -n %[2]d > $S/udppe-vm0.txt 2>&1 || { cat $S/udppe-vm0.txt; fail "ud_pingpong -e"; }
$S/ibv_ud_pingpong -d rxe0 -g 0 -s %[1]d -n %[2]d > $S/udpp-vm0.txt 2>&1 || { cat $S/udpp-vm0.txt; fail ud_pingpong; }
echo "STEP ipoibd up"
upready rxe0 --addr %[3]s/24
touch $S/vm0.up
waitidle $S/vm1.done 240
down
echo "STEP done"
`, vmUDSize, benchUDIters, vmServerAddr)

// benchVM1 runs the verbs clients, then pings vm0 through its own daemon.
var benchVM1 = vmScriptCommon + fmt.Sprintf(`
echo "STEP ud_pingpong client"
for mode in "-e" ""; do
	i=0
	until $S/ibv_ud_pingpong $mode -d rxe0 -g 0 -s %[1]d -n %[2]d %[3]s > $S/udpp$mode-vm1.txt 2>&1; do
		i=$((i+1)); [ $i -gt 100 ] && { cat $S/udpp$mode-vm1.txt; fail "ud_pingpong $mode"; }; sleep 0.2
	done
done
waitfor $S/vm0.up 60
echo "STEP ipoibd up"
upready rxe0 --addr %[4]s/24
echo "STEP ping"
pingjson ping.json %[6]s -c %[5]d
down
touch $S/vm1.done
echo "STEP done"
`, vmUDSize, benchUDIters, GuestIPv4(0), vmXferSource, benchPingCount, vmServerAddr)

// BenchmarkPingVsUDPingpong reports, per vCPU count, ipoibd ping's median
// round trip, ibv_ud_pingpong's time per iteration in event mode (-e,
// sleeping on the completion channel as ipoibd's loop does) and in
// polling mode, and the ratios of the first to the other two. Run it with
// -benchtime 1x: each op is one boot of two VMs (about two minutes
// under TCG).
func BenchmarkPingVsUDPingpong(b *testing.B) {
	for _, cpus := range []int{1, 2} {
		b.Run(fmt.Sprintf("vcpus=%d", cpus), func(b *testing.B) {
			k := vmKernel(b)
			var p50, events, poll float64
			for range b.N {
				share, bins := ipoibdShare(b)
				runVMs(b, Config{Kernel: k, Share: share, Binaries: bins, CPUs: cpus, WorkDir: b.TempDir(), Timeout: 4 * time.Minute},
					[]VM{{Name: "vm0", Script: benchVM0}, {Name: "vm1", Script: benchVM1}})
				if b.Failed() {
					return
				}
				p, e, q := readPingBench(b, share)
				p50, events, poll = p50+p, events+e, poll+q
			}
			n := float64(b.N)
			b.ReportMetric(p50/n, "ipoibd-p50-us")
			b.ReportMetric(events/n, "udpp-events-us")
			b.ReportMetric(poll/n, "udpp-poll-us")
			b.ReportMetric(p50/events, "ratio-events")
			b.ReportMetric(p50/poll, "ratio-poll")
		})
	}
}

// readPingBench reads the figures one boot left in the share.
func readPingBench(b *testing.B, share string) (p50, events, poll float64) {
	raw, err := os.ReadFile(filepath.Join(share, "ping.json"))
	if err != nil {
		b.Fatal(err)
	}
	var p pingFigures
	if err := json.Unmarshal(raw, &p); err != nil {
		b.Fatalf("ping output: %v\n%s", err, raw)
	}
	if p.Received < p.Sent {
		b.Fatalf("ipoibd ping lost requests: %d of %d answered", p.Received, p.Sent)
	}
	ud := func(file string) float64 {
		v, err := udPerIter(share, file)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	return 1000 * p.P50Ms, ud("udpp-e-vm1.txt"), ud("udpp-vm1.txt")
}
