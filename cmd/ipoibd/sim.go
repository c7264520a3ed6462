package main

import (
	"fmt"
	"io"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/sim"
)

func init() {
	register(command{
		name:    "sim",
		summary: "run the embedded simulated-fabric demo",
		run:     runSim,
	})
}

// simOptions are the sim subcommand's flags after validation.
type simOptions struct {
	hosts   int
	pkey    ib.PKey
	mtu     ib.MTU
	faults  sim.Faults
	seed    uint64
	pcapDir string
	json    bool
	timeout time.Duration
	// stepTimeout bounds one host's join and its DHCP exchange.
	stepTimeout time.Duration
}

func runSim(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("sim", "[--hosts N] [--pkey P] [--mtu 2048|4096] [--loss P] [--dup P] [--reorder P] [--delay D] [--seed S] [--step-timeout D] [--timeout D] [--pcap DIR] [--json]", stderr)
	hosts := fs.Int("hosts", 4, "number of DHCP client hosts besides the server (1 to 4000)")
	pkey := fs.String("pkey", "0xffff", "partition key of the IPoIB link (full membership is implied)")
	mtu := fs.Int("mtu", 2048, "IB MTU of the broadcast group: 2048 or 4096")
	loss := fs.Float64("loss", 0, "probability a packet is lost in the fabric (0 to 1)")
	dup := fs.Float64("dup", 0, "probability a packet is duplicated (0 to 1)")
	reorder := fs.Float64("reorder", 0, "probability a packet is reordered (0 to 1)")
	delay := fs.Duration("delay", 0, "extra one-way delay per packet, e.g. 50us")
	seed := fs.Uint64("seed", 1, "seed of the faults and the DHCP clients; same seed, same faults and outcome")
	pcapDir := fs.String("pcap", "", "write every host's IPoIB capture and the fabric's raw IB capture into this directory")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	timeout := fs.Duration("timeout", 120*time.Second, "give up if the demo has not finished by then")
	stepTimeout := fs.Duration("step-timeout", 30*time.Second, "a host that has not joined, or leased, within this long has failed, and the run stops")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	opt, err := checkSimFlags(*hosts, *pkey, *mtu, *loss, *dup, *reorder, *delay, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "ipoibd sim: %v\n", err)
		return exitUsage
	}
	if *stepTimeout <= 0 {
		fmt.Fprintf(stderr, "ipoibd sim: --step-timeout %v: must be positive\n", *stepTimeout)
		return exitUsage
	}
	opt.seed, opt.pcapDir, opt.json, opt.stepTimeout = *seed, *pcapDir, *asJSON, *stepTimeout

	rep, err := runDemo(opt, stderr)
	if err != nil {
		return fail(stdout, stderr, opt.json, "sim", err, exitFailure)
	}
	code := exitOK
	if !rep.OK {
		code = exitFailure
	}
	if opt.json {
		return emit(stdout, stderr, "sim", rep, code)
	}
	rep.printTable(stdout)
	if !rep.OK {
		msg := fmt.Sprintf("%d of %d hosts failed", rep.Totals.Failed, rep.Totals.Hosts)
		if rep.Totals.Stopped > 0 {
			msg += fmt.Sprintf(" and %d were stopped unfinished", rep.Totals.Stopped)
		}
		if f := rep.failures(); f != "" {
			msg += ": " + f
		}
		fmt.Fprintf(stderr, "ipoibd sim: %s\n", msg)
	}
	return code
}

func checkSimFlags(hosts int, pkey string, mtu int, loss, dup, reorder float64, delay, timeout time.Duration) (simOptions, error) {
	var opt simOptions
	if hosts < 1 || hosts > 4000 {
		return opt, fmt.Errorf("--hosts %d: must be between 1 and 4000", hosts)
	}
	pk, err := parsePKey(pkey)
	if err != nil {
		return opt, err
	}
	opt.pkey = pk
	if mtu != 2048 && mtu != 4096 {
		return opt, fmt.Errorf("--mtu %d: must be 2048 or 4096", mtu)
	}
	opt.mtu, _ = ib.MTUFromBytes(mtu)
	for _, p := range []struct {
		name string
		v    float64
	}{{"--loss", loss}, {"--dup", dup}, {"--reorder", reorder}} {
		if !(p.v >= 0 && p.v < 1) {
			return opt, fmt.Errorf("%s %v: must be a probability in [0, 1)", p.name, p.v)
		}
	}
	if delay < 0 || delay > time.Second {
		return opt, fmt.Errorf("--delay %v: must be between 0 and 1s", delay)
	}
	if timeout <= 0 {
		return opt, fmt.Errorf("--timeout %v: must be positive", timeout)
	}
	opt.hosts, opt.timeout = hosts, timeout
	opt.faults = sim.Faults{Loss: loss, Duplicate: dup, Reorder: reorder, Delay: delay}
	return opt, nil
}
