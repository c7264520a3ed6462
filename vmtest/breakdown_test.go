package vmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Where an echo's time goes, from the guest kernels' own clocks. Each VM
// records two kernel trace events while the echoes run, net_dev_xmit
// (the frame handed to virtio-net) and netif_receive_skb (a frame taken
// from it), so every echo splits into three spans that need no common
// clock:
//
//   - sender: the pinging side's time from the request's start to its
//     xmit plus from the reply's arrival to its end (the daemon's round
//     trip less the span between its xmit and the reply's arrival);
//   - responder: the answering VM's span from the request's arrival to
//     the reply's xmit;
//   - wire: the rest, the two one-way trips between the guests' network
//     devices (qemu's virtio-net and socket backend on both sides and the
//     test's UDP hub).
//
// ibv_ud_pingpong is traced the same way in the same boot, so each span
// has its reference. The tracing adds two events a frame.

// breakdownPings is how many echoes the breakdown times, 200 ms apart.
const breakdownPings = 60

// breakdownUDIters is ibv_ud_pingpong's iteration count in the breakdown.
const breakdownUDIters = 200

// traceShell turns the two events on (traceon) and copies what they
// recorded to the share (traceoff FILE). The kernel's trace clock is the
// default local one: each VM's spans are measured on its own clock.
const traceShell = `
TR=/sys/kernel/tracing
traceon() {
	[ -e $TR/trace ] || mount -t tracefs nodev $TR || fail "mount tracefs"
	echo 0 > $TR/tracing_on; echo > $TR/trace
	echo 4096 > $TR/buffer_size_kb
	echo 1 > $TR/events/net/net_dev_xmit/enable || fail "trace event net_dev_xmit"
	echo 1 > $TR/events/net/netif_receive_skb/enable || fail "trace event netif_receive_skb"
	echo 1 > $TR/tracing_on
}
traceoff() { echo 0 > $TR/tracing_on; cat $TR/trace > $S/$1; echo > $TR/trace; }
`

var breakdownVM0 = vmScriptCommon + traceShell + fmt.Sprintf(`
echo "STEP ud_pingpong server"
traceon
$S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %[1]d -n %[2]d > $S/udppe-vm0.txt 2>&1 || { cat $S/udppe-vm0.txt; fail "ud_pingpong -e"; }
traceoff trace-ud-vm0.txt
echo "STEP ipoibd up"
upready rxe0 --addr %[3]s/24
traceon
touch $S/vm0.up
waitidle $S/vm1.done 240
traceoff trace-ping-vm0.txt
down
echo "STEP done"
`, vmUDSize, breakdownUDIters, vmServerAddr)

var breakdownVM1 = vmScriptCommon + traceShell + fmt.Sprintf(`
echo "STEP ud_pingpong client"
traceon
i=0
until $S/ibv_ud_pingpong -e -d rxe0 -g 0 -s %[1]d -n %[2]d %[3]s > $S/udpp-e-vm1.txt 2>&1; do
	i=$((i+1)); [ $i -gt 100 ] && { cat $S/udpp-e-vm1.txt; fail "ud_pingpong -e"; }; sleep 0.2
done
traceoff trace-ud-vm1.txt
waitfor $S/vm0.up 60
echo "STEP ipoibd up"
upready rxe0 --addr %[4]s/24
traceon
echo "STEP ping"
pingjson ping.json %[5]s -c %[6]d -i 0.2
traceoff trace-ping-vm1.txt
down
touch $S/vm1.done
echo "STEP done"
`, vmUDSize, breakdownUDIters, GuestIPv4(0), vmXferSource, vmServerAddr, breakdownPings)

// BenchmarkPingBreakdown reports, per vCPU count, the medians of the three
// spans of an echo (sender, responder, wire) for `ipoibd ping` and for
// ibv_ud_pingpong -e in the same boot, in microseconds. Run it with
// -benchtime 1x: each op is one boot of two VMs.
func BenchmarkPingBreakdown(b *testing.B) {
	for _, cpus := range []int{1, 2} {
		b.Run(fmt.Sprintf("vcpus=%d", cpus), func(b *testing.B) {
			k := vmKernel(b)
			var sum [2]spans
			for range b.N {
				share, bins := ipoibdShare(b)
				runVMs(b, Config{Kernel: k, Share: share, Binaries: bins, CPUs: cpus, WorkDir: b.TempDir(), Timeout: 5 * time.Minute},
					[]VM{{Name: "vm0", Script: breakdownVM0}, {Name: "vm1", Script: breakdownVM1}})
				if b.Failed() {
					return
				}
				ping, ud := readBreakdown(b, share)
				b.Logf("ipoibd ping:     %v", ping)
				b.Logf("ibv_ud_pingpong: %v", ud)
				sum[0], sum[1] = sum[0].add(ping), sum[1].add(ud)
			}
			n := float64(b.N)
			for i, name := range []string{"ipoibd", "udpp"} {
				s := sum[i]
				b.ReportMetric(s.RTT/n, name+"-rtt-us")
				b.ReportMetric(s.Sender/n, name+"-sender-us")
				b.ReportMetric(s.Responder/n, name+"-responder-us")
				b.ReportMetric(s.Wire/n, name+"-wire-us")
			}
		})
	}
}

// spans are the medians of an echo's parts, in microseconds.
type spans struct {
	RTT, Sender, Responder, Wire float64
	Echoes                       int
}

func (s spans) add(o spans) spans {
	return spans{s.RTT + o.RTT, s.Sender + o.Sender, s.Responder + o.Responder, s.Wire + o.Wire, s.Echoes + o.Echoes}
}

func (s spans) String() string {
	return fmt.Sprintf("%d echoes, medians: round trip %.0f µs = sender %.0f + responder %.0f + wire %.0f (each median on its own)",
		s.Echoes, s.RTT, s.Sender, s.Responder, s.Wire)
}

// readBreakdown splits the echoes of one boot, ipoibd's and
// ibv_ud_pingpong's.
func readBreakdown(b *testing.B, share string) (ping, ud spans) {
	b.Helper()
	events := func(name string) []netEvent {
		f, err := os.Open(filepath.Join(share, name))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		ev, err := parseNetTrace(f)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		return ev
	}
	raw, err := os.ReadFile(filepath.Join(share, "ping.json"))
	if err != nil {
		b.Fatal(err)
	}
	var p struct {
		Replies []struct {
			Seq    int     `json:"seq"`
			TimeMs float64 `json:"time_ms"`
		} `json:"replies"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		b.Fatalf("ping output: %v", err)
	}
	slices.SortFunc(p.Replies, func(x, y struct {
		Seq    int     `json:"seq"`
		TimeMs float64 `json:"time_ms"`
	}) int {
		return x.Seq - y.Seq
	})
	rtts := make([]float64, len(p.Replies))
	for i, r := range p.Replies {
		rtts[i] = 1000 * r.TimeMs
	}
	if ping, err = splitEchoes(rtts, events("trace-ping-vm1.txt"), events("trace-ping-vm0.txt")); err != nil {
		b.Fatalf("ipoibd ping: %v", err)
	}
	perIter, err := udPerIter(share, "udpp-e-vm1.txt")
	if err != nil {
		b.Fatal(err)
	}
	if ud, err = splitEchoes(nil, events("trace-ud-vm1.txt"), events("trace-ud-vm0.txt")); err != nil {
		b.Fatalf("ibv_ud_pingpong: %v", err)
	}
	// ibv_ud_pingpong reports only its mean; the sender span is what the
	// mean leaves beside the medians of the other two.
	ud.RTT = perIter
	ud.Sender = perIter - ud.Responder - ud.Wire
	return ping, ud
}

// netEvent is one frame a guest's network device sent or received.
type netEvent struct {
	At  float64 // seconds on the guest's trace clock
	RX  bool    // netif_receive_skb; otherwise net_dev_xmit
	Len int     // bytes; a received frame's count lacks the Ethernet header
}

// netTraceRE matches the two events in the kernel's trace text format:
// "  task-pid  [cpu] flags  12.345678: net_dev_xmit: dev=eth0 skbaddr=... len=174 rc=0".
var netTraceRE = regexp.MustCompile(`\s(\d+\.\d+): (net_dev_xmit|netif_receive_skb): dev=eth0 \S+ len=(\d+)`)

// parseNetTrace reads the events of eth0 from a trace; comment lines and
// other devices' events are passed over.
func parseNetTrace(r io.Reader) ([]netEvent, error) {
	var out []netEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := netTraceRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return nil, fmt.Errorf("trace time %q: %w", m[1], err)
		}
		n, err := strconv.Atoi(m[3])
		if err != nil {
			return nil, fmt.Errorf("trace length %q: %w", m[3], err)
		}
		out = append(out, netEvent{At: at, RX: m[2] == "netif_receive_skb", Len: n})
	}
	return out, sc.Err()
}

// ethHeader is what a received frame's length lacks against the sent one.
const ethHeader = 14

// echoSpans pairs each event of the first kind with the next of the
// second, for frames of the echo's length, and returns the gaps in µs.
func echoSpans(ev []netEvent, xmitLen int, firstRX bool) []float64 {
	var out []float64
	start := -1.0
	for _, e := range ev {
		want := xmitLen
		if e.RX {
			want -= ethHeader
		}
		if e.Len != want {
			continue
		}
		if e.RX == firstRX {
			start = e.At
		} else if start >= 0 {
			out = append(out, 1e6*(e.At-start))
			start = -1
		}
	}
	return out
}

// echoLen is the most common length the sender sent: the echo request's.
func echoLen(ev []netEvent) int {
	count := map[int]int{}
	best := 0
	for _, e := range ev {
		if e.RX {
			continue
		}
		count[e.Len]++
		if count[e.Len] > count[best] {
			best = e.Len
		}
	}
	return best
}

// splitEchoes splits echoes into spans: sender events (xmit then
// receive) and responder events (receive then xmit) are paired in order
// from the end, where both traces stop; rtts, when given, are the
// sender's round trips in the same order.
func splitEchoes(rtts []float64, sender, responder []netEvent) (spans, error) {
	l := echoLen(sender)
	if l == 0 {
		return spans{}, fmt.Errorf("the sender's trace holds no frame")
	}
	out := echoSpans(sender, l, false)
	in := echoSpans(responder, l, true)
	n := min(len(out), len(in))
	if rtts != nil {
		n = min(n, len(rtts))
		rtts = rtts[len(rtts)-n:]
	}
	if n < 10 {
		return spans{}, fmt.Errorf("only %d echoes of %d bytes in both traces (sender %d, responder %d)", n, l, len(out), len(in))
	}
	out, in = out[len(out)-n:], in[len(in)-n:]
	var s spans
	wire := make([]float64, n)
	for i := range n {
		wire[i] = out[i] - in[i]
	}
	s.Echoes = n
	s.Responder = median(in)
	s.Wire = median(wire)
	if rtts != nil {
		local := make([]float64, n)
		for i := range n {
			local[i] = rtts[i] - out[i]
		}
		s.RTT = median(rtts)
		s.Sender = median(local)
	}
	return s, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
