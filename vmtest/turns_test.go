package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Comparing two builds or two settings of the daemon on soft-RoCE in one
// boot. Single round trips under TCG scatter so much from boot to boot
// that a change worth a tenth is lost between two boots; within one boot,
// restarting both daemons in turns, A B A B, puts the change above the
// noise. BenchmarkPingTurns does that when IPOIBD_VMTEST_TURNS names the
// variants:
//
//	IPOIBD_VMTEST_TURNS='-;GOMAXPROCS=1'                 two settings of this build
//	IPOIBD_VMTEST_TURNS='-;alt' IPOIBD_VMTEST_ALT=/tmp/ipoibd.main   this build against another
//
// Variants are separated by ";"; within one, "alt" runs the binary
// IPOIBD_VMTEST_ALT (built with cgo, e.g. `go build -o /tmp/ipoibd.main
// ./cmd/ipoibd` in a checkout of the other revision) instead of this
// build's, and NAME=VALUE items (separated by ",") are the daemons'
// environment; "-" is this build as it is.

// turnsPings is how many echoes one turn times, 200 ms apart.
const turnsPings = 40

// turnsRounds is how many times each variant takes its turn.
const turnsRounds = 3

// turnVariant is one variant of BenchmarkPingTurns.
type turnVariant struct {
	Name string   // as given
	Alt  bool     // run IPOIBD_VMTEST_ALT
	Env  []string // NAME=VALUE
}

var envItemRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_.,:=/+-]*$`)

// parseTurns reads IPOIBD_VMTEST_TURNS.
func parseTurns(spec string) ([]turnVariant, error) {
	var out []turnVariant
	for _, v := range strings.Split(spec, ";") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		tv := turnVariant{Name: v}
		if v != "-" {
			for _, item := range strings.Split(v, ",") {
				switch {
				case item == "alt":
					tv.Alt = true
				case envItemRE.MatchString(item):
					tv.Env = append(tv.Env, item)
				default:
					return nil, fmt.Errorf("variant %q: %q is neither alt nor NAME=VALUE (letters, digits and _.:=/+- only)", v, item)
				}
			}
		}
		out = append(out, tv)
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("%q names %d variants; want at least two, separated by ';'", spec, len(out))
	}
	return out, nil
}

// turnsScripts writes both VMs' scripts: ibv_ud_pingpong once, then each
// variant's turn in order, turnsRounds times; turn i's figures land in
// ping-i.json.
func turnsScripts(vs []turnVariant) (vm0, vm1 string) {
	var a, b strings.Builder
	a.WriteString(vmScriptCommon)
	b.WriteString(vmScriptCommon)
	fmt.Fprintf(&a, "$S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %d -n %d > $S/udppe-vm0.txt 2>&1 || { cat $S/udppe-vm0.txt; fail \"ud_pingpong -e\"; }\n", vmUDSize, breakdownUDIters)
	fmt.Fprintf(&b, `i=0
until $S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %d -n %d %s > $S/udpp-e-vm1.txt 2>&1; do
	i=$((i+1)); [ $i -gt 100 ] && { cat $S/udpp-e-vm1.txt; fail "ud_pingpong -e"; }; sleep 0.2
done
`, vmUDSize, breakdownUDIters, GuestIPv4(0))
	turn := 0
	for range turnsRounds {
		for _, v := range vs {
			bin := "$S/ipoibd"
			if v.Alt {
				bin = "$S/ipoibd-alt"
			}
			run := bin
			if len(v.Env) > 0 {
				run = "env " + strings.Join(v.Env, " ") + " " + bin
			}
			up := func(addr string) string {
				return fmt.Sprintf(`%s up --device rxe0 --addr %s/24 --socket /tmp/ib0.sock > /tmp/up.log 2>&1 &
UP=$!
waitlog /tmp/up.log ": ready" 30
`, run, addr)
			}
			fmt.Fprintf(&a, "echo \"STEP turn %[1]d: %[2]s\"\n%[3]stouch $S/vm0.up%[1]d\nwaitidle $S/vm1.done%[1]d 240\ndown\n", turn, v.Name, up(vmServerAddr))
			fmt.Fprintf(&b, "waitfor $S/vm0.up%[1]d 120\necho \"STEP turn %[1]d: %[2]s\"\n%[3]spingjson ping-%[1]d.json %[4]s -c %[5]d -i 0.2\ndown\ntouch $S/vm1.done%[1]d\n",
				turn, v.Name, up(vmXferSource), vmServerAddr, turnsPings)
			turn++
		}
	}
	a.WriteString("echo \"STEP done\"\n")
	b.WriteString("echo \"STEP done\"\n")
	return a.String(), b.String()
}

// BenchmarkPingTurns reports each variant's median round trip over all
// its turns ("v0-p50-us", "v1-p50-us", ...), each one's ratio to the first
// variant, and ibv_ud_pingpong -e in the same boot. One vCPU per VM, or
// IPOIBD_VMTEST_CPUS. It skips unless IPOIBD_VMTEST_TURNS is set.
func BenchmarkPingTurns(b *testing.B) {
	spec := os.Getenv("IPOIBD_VMTEST_TURNS")
	if spec == "" {
		b.Skip("set IPOIBD_VMTEST_TURNS to the variants to compare (see turns_test.go)")
	}
	vs, err := parseTurns(spec)
	if err != nil {
		b.Fatalf("IPOIBD_VMTEST_TURNS: %v", err)
	}
	cpus := 1
	if c := os.Getenv("IPOIBD_VMTEST_CPUS"); c != "" {
		if cpus, err = strconv.Atoi(c); err != nil || cpus < 1 {
			b.Fatalf("IPOIBD_VMTEST_CPUS=%q: want a positive number", c)
		}
	}
	k := vmKernel(b)
	rtts := make([][]float64, len(vs))
	var ud float64
	for range b.N {
		share, bins := ipoibdShare(b)
		for _, v := range vs {
			if !v.Alt {
				continue
			}
			alt := os.Getenv("IPOIBD_VMTEST_ALT")
			raw, err := os.ReadFile(alt)
			if err != nil {
				b.Fatalf("IPOIBD_VMTEST_ALT: %v", err)
			}
			dst := filepath.Join(share, "ipoibd-alt")
			if err := os.WriteFile(dst, raw, 0o755); err != nil {
				b.Fatal(err)
			}
			bins = append(bins, dst)
			break
		}
		vm0, vm1 := turnsScripts(vs)
		runVMs(b, Config{Kernel: k, Share: share, Binaries: bins, CPUs: cpus, WorkDir: b.TempDir(), Timeout: 20 * time.Minute},
			[]VM{{Name: "vm0", Script: vm0}, {Name: "vm1", Script: vm1}})
		if b.Failed() {
			return
		}
		for turn := range turnsRounds * len(vs) {
			r, err := readReplies(filepath.Join(share, fmt.Sprintf("ping-%d.json", turn)))
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("turn %d (%s): p50 %.0f µs over %d echoes", turn, vs[turn%len(vs)].Name, median(r), len(r))
			rtts[turn%len(vs)] = append(rtts[turn%len(vs)], r...)
		}
		v, err := udPerIter(share, "udpp-e-vm1.txt")
		if err != nil {
			b.Fatal(err)
		}
		ud += v
	}
	first := median(rtts[0])
	for i, v := range vs {
		p := median(rtts[i])
		b.Logf("v%d = %s: p50 %.0f µs over %d echoes, %.3f of v0", i, v.Name, p, len(rtts[i]), p/first)
		b.ReportMetric(p, fmt.Sprintf("v%d-p50-us", i))
		if i > 0 {
			b.ReportMetric(p/first, fmt.Sprintf("v%d/v0", i))
		}
	}
	b.ReportMetric(ud/float64(b.N), "udpp-events-us")
}

// readReplies reads one turn's round trips, in µs, leaving out the first
// echo, which also pays for the neighbour and path look-ups.
func readReplies(path string) ([]float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p struct {
		Replies []struct {
			TimeMs float64 `json:"time_ms"`
		} `json:"replies"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(p.Replies) < 2 {
		return nil, fmt.Errorf("%s: %d replies", path, len(p.Replies))
	}
	out := make([]float64, 0, len(p.Replies)-1)
	for _, r := range p.Replies[1:] {
		out = append(out, 1000*r.TimeMs)
	}
	return out, nil
}
