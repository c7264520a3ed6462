package vmtest

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// A sender's and a responder's traces as the guest kernel writes them,
// with a comment header, a frame of another length (ARP) and another
// device's event among the echo's frames.
const (
	senderTrace = `# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
          ipoibd-148     [000] b..1.    11.000100: net_dev_xmit: dev=eth0 skbaddr=0000000072617b62 len=126 rc=0
          <idle>-0       [000] ..s1.    11.000900: netif_receive_skb: dev=eth0 skbaddr=00000000a3f05d99 len=112
          ipoibd-148     [000] b..1.    11.001000: net_dev_xmit: dev=eth0 skbaddr=0000000072617b62 len=174 rc=0
              sh-1       [000] b..1.    11.001500: net_dev_xmit: dev=lo skbaddr=0000000072617b62 len=174 rc=0
          <idle>-0       [000] ..s1.    11.005000: netif_receive_skb: dev=eth0 skbaddr=00000000a3f05d99 len=160
          ipoibd-148     [000] b..1.    11.201000: net_dev_xmit: dev=eth0 skbaddr=0000000072617b62 len=174 rc=0
          <idle>-0       [000] ..s1.    11.207000: netif_receive_skb: dev=eth0 skbaddr=00000000a3f05d99 len=160
`
	responderTrace = `          <idle>-0       [000] ..s1.    5.000000: netif_receive_skb: dev=eth0 skbaddr=00000000da7d3fa9 len=160
          ipoibd-136     [000] b..1.    5.002000: net_dev_xmit: dev=eth0 skbaddr=00000000da7d3fa9 len=174 rc=0
          <idle>-0       [000] ..s1.    5.200000: netif_receive_skb: dev=eth0 skbaddr=00000000da7d3fa9 len=160
          ipoibd-136     [000] b..1.    5.203000: net_dev_xmit: dev=eth0 skbaddr=00000000da7d3fa9 len=174 rc=0
`
)

func TestParseNetTrace(t *testing.T) {
	ev, err := parseNetTrace(strings.NewReader(senderTrace))
	if err != nil {
		t.Fatal(err)
	}
	want := []netEvent{{11.0001, false, 126}, {11.0009, true, 112}, {11.001, false, 174}, {11.005, true, 160}, {11.201, false, 174}, {11.207, true, 160}}
	if len(ev) != len(want) {
		t.Fatalf("got %d events, want %d: %v", len(ev), len(want), ev)
	}
	for i := range want {
		if math.Abs(ev[i].At-want[i].At) > 1e-9 || ev[i].RX != want[i].RX || ev[i].Len != want[i].Len {
			t.Errorf("event %d: got %+v, want %+v", i, ev[i], want[i])
		}
	}
}

func TestSplitEchoes(t *testing.T) {
	s, _ := parseNetTrace(strings.NewReader(senderTrace))
	r, _ := parseNetTrace(strings.NewReader(responderTrace))
	// Repeat the two echoes so that there are enough to split.
	var ss, rr []netEvent
	var rtts []float64
	for i := range 6 {
		for _, e := range s {
			e.At += float64(i)
			ss = append(ss, e)
		}
		for _, e := range r {
			e.At += float64(i)
			rr = append(rr, e)
		}
		rtts = append(rtts, 5500, 7500)
	}
	got, err := splitEchoes(rtts, ss, rr)
	if err != nil {
		t.Fatal(err)
	}
	// Sender spans 4000 and 6000 µs, responder 2000 and 3000: wire 2000
	// and 3000, sender-local 1500 both.
	near := func(a, b float64) bool { return math.Abs(a-b) < 0.01 }
	if got.Echoes != 12 || !near(got.RTT, 6500) || !near(got.Sender, 1500) || !near(got.Responder, 2500) || !near(got.Wire, 2500) {
		t.Errorf("got %+v", got)
	}
	if _, err := splitEchoes(nil, s, r); err == nil {
		t.Error("two echoes split without error; want too few")
	}
	if _, err := splitEchoes(nil, nil, r); err == nil {
		t.Error("an empty sender trace split without error")
	}
}

func TestParseTurns(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []turnVariant
		bad  bool
	}{
		{spec: "-;GOMAXPROCS=1", want: []turnVariant{{Name: "-"}, {Name: "GOMAXPROCS=1", Env: []string{"GOMAXPROCS=1"}}}},
		{spec: " - ; alt,GODEBUG=a=1,GOGC=50 ;", want: []turnVariant{{Name: "-"}, {Name: "alt,GODEBUG=a=1,GOGC=50", Alt: true, Env: []string{"GODEBUG=a=1", "GOGC=50"}}}},
		{spec: "-", bad: true},
		{spec: "", bad: true},
		{spec: "-;X=$(reboot)", bad: true},
		{spec: "-;fast", bad: true},
	} {
		got, err := parseTurns(tc.spec)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v, want an error", tc.spec, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: got %+v, want %+v", tc.spec, got, tc.want)
			continue
		}
		for i := range got {
			if got[i].Name != tc.want[i].Name || got[i].Alt != tc.want[i].Alt || strings.Join(got[i].Env, " ") != strings.Join(tc.want[i].Env, " ") {
				t.Errorf("%q variant %d: got %+v, want %+v", tc.spec, i, got[i], tc.want[i])
			}
		}
	}
}

func TestTurnsScripts(t *testing.T) {
	vs, err := parseTurns("-;alt,GOMAXPROCS=1")
	if err != nil {
		t.Fatal(err)
	}
	vm0, vm1 := turnsScripts(vs)
	for i := range turnsRounds * len(vs) {
		for _, want := range []string{fmt.Sprintf("touch $S/vm0.up%d", i), fmt.Sprintf("waitidle $S/vm1.done%d", i)} {
			if !strings.Contains(vm0, want) {
				t.Errorf("vm0's script lacks %q", want)
			}
		}
		for _, want := range []string{fmt.Sprintf("waitfor $S/vm0.up%d", i), fmt.Sprintf("ping-%d.json", i), fmt.Sprintf("touch $S/vm1.done%d", i)} {
			if !strings.Contains(vm1, want) {
				t.Errorf("vm1's script lacks %q", want)
			}
		}
	}
	if n := strings.Count(vm1, "env GOMAXPROCS=1 $S/ipoibd-alt up"); n != turnsRounds {
		t.Errorf("vm1 runs the alternative build %d times, want %d", n, turnsRounds)
	}
	if n := strings.Count(vm0, "\n$S/ipoibd up"); n != turnsRounds {
		t.Errorf("vm0 runs this build %d times, want %d", n, turnsRounds)
	}
}
