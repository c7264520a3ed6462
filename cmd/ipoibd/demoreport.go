package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/sim"
)

// The demo's report: what each host and the fabric did, gathered once the
// run ends, and printed as a table (ip(8)'s aligned columns) or as JSON.

// simReport is what the demo prints, as a table or as JSON (the
// convention of output.go: durations in ms, identifiers in hex strings,
// null for what a host did not get to).
type simReport struct {
	OK        bool            `json:"ok"`
	Seed      uint64          `json:"seed"`
	Hosts     []simHostReport `json:"hosts"`
	Totals    simTotals       `json:"totals"`
	Fabric    simFabricReport `json:"fabric"`
	Pcap      *string         `json:"pcap_dir"`
	ElapsedMs float64         `json:"elapsed_ms"`
}

type simHostReport struct {
	Host      string   `json:"host"`
	GID       string   `json:"gid"`
	LID       string   `json:"lid"`
	QPN       *string  `json:"qpn"`
	IP        *string  `json:"ip"`
	Static    bool     `json:"static"`
	LeaseS    *float64 `json:"lease_s"`
	JoinMs    *float64 `json:"join_ms"`
	LeaseMs   *float64 `json:"leased_ms"`
	Neighbour *string  `json:"neighbour"`
	RTTServer *float64 `json:"rtt_server_ms"`
	RTTNext   *float64 `json:"rtt_neighbour_ms"`
	// Status is "ok", "failed" (Step and Error say where and why) or
	// "stopped" (unfinished: another host's failure ended the run).
	Status string  `json:"status"`
	Step   *string `json:"step"`
	Error  *string `json:"error"`
}

type simTotals struct {
	Hosts       int      `json:"hosts"`
	OK          int      `json:"ok"`
	Failed      int      `json:"failed"`
	Stopped     int      `json:"stopped"`
	Joined      int      `json:"joined"`
	Leased      int      `json:"leased"`
	PingsOK     int      `json:"pings_ok"`
	PingsWanted int      `json:"pings_wanted"`
	RTTP50Ms    *float64 `json:"rtt_p50_ms"`
	RTTP99Ms    *float64 `json:"rtt_p99_ms"`
	AllJoinedMs *float64 `json:"all_joined_ms"`
	AllLeasedMs *float64 `json:"all_leased_ms"`
}

type simFabricReport struct {
	Sent       uint64            `json:"sent"`
	Delivered  uint64            `json:"delivered"`
	Duplicated uint64            `json:"duplicated"`
	Reordered  uint64            `json:"reordered"`
	Drops      map[string]uint64 `json:"drops"`
}

func (d *demo) report() *simReport {
	rep := &simReport{OK: true, Seed: d.opt.seed, Pcap: optString(d.opt.pcapDir), ElapsedMs: msJSON(time.Since(d.start))}
	var rtts []time.Duration
	clients := d.hosts[1:]
	for i, h := range d.hosts {
		hr := simHostReport{Host: h.name, GID: gidJSON(h.attr.GIDs[0]), LID: lidJSON(h.attr.LID), JoinMs: optMS(h.joined, h.joined > 0)}
		if h.ifc != nil {
			var a ipoib.Addr
			if a.Decode(h.ifc.LinkAddr()) == nil {
				hr.QPN = optString(qpnJSON(a.QPN))
			}
		}
		if up, _ := h.ifc.LinkState(); up && h.joined > 0 {
			rep.Totals.Joined++
		}
		if h.lease.Addr.IsValid() {
			hr.IP = optString(h.lease.Addr.String())
			if i > 0 {
				rep.Totals.Leased++
				secs := h.lease.Duration.Seconds()
				hr.LeaseS, hr.LeaseMs = &secs, optMS(h.leasedAt, true)
			} else {
				hr.Static = true
			}
		}
		if i > 0 {
			rep.Totals.PingsWanted++
			if len(clients) > 1 {
				hr.Neighbour = optString(clients[i%len(clients)].name)
				rep.Totals.PingsWanted++
			}
			for _, r := range []time.Duration{h.rttSrv, h.rttNext} {
				if r > 0 {
					rep.Totals.PingsOK++
					rtts = append(rtts, r)
				}
			}
			hr.RTTServer, hr.RTTNext = optMS(h.rttSrv, h.rttSrv > 0), optMS(h.rttNext, h.rttNext > 0)
		}
		switch {
		case h.err != nil:
			hr.Status, hr.Step, hr.Error = "failed", optString(h.step), optString(h.err.Error())
			rep.Totals.Failed++
			rep.OK = false
		case h.halted:
			hr.Status = "stopped"
			rep.Totals.Stopped++
			rep.OK = false
		default:
			hr.Status = "ok"
			rep.Totals.OK++
		}
		rep.Hosts = append(rep.Hosts, hr)
	}
	rep.Totals.Hosts = len(d.hosts)
	if rep.Totals.PingsOK != rep.Totals.PingsWanted || rep.Totals.Leased != len(clients) {
		rep.OK = false
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		rep.Totals.RTTP50Ms = optMS(rtts[len(rtts)/2], true)
		rep.Totals.RTTP99Ms = optMS(rtts[(len(rtts)*99)/100], true)
	}
	rep.Totals.AllJoinedMs = optMS(d.allJoined, rep.Totals.Joined == len(d.hosts))
	rep.Totals.AllLeasedMs = optMS(d.allLeased, rep.Totals.Leased == len(clients))
	var c sim.Counters
	d.fabric.Do(func(f *sim.Fabric) error { c = f.Counters(); return nil })
	rep.Fabric = simFabricReport{Sent: c.Sent, Delivered: c.Delivered, Duplicated: c.Duplicated, Reordered: c.Reordered, Drops: map[string]uint64{}}
	for r := sim.DropReason(0); r < sim.NumDropReasons; r++ {
		if n := c.Dropped(r); n > 0 {
			rep.Fabric.Drops[r.String()] = n
		}
	}
	return rep
}

// printTable prints one aligned row per host, every time in ms, then the
// totals in words. Text columns are left-aligned, numbers right-aligned,
// as ip(8) and ps(1) print them.
func (r *simReport) printTable(w io.Writer) {
	header := []string{"HOST", "GID", "LID", "QPN", "IP", "LEASE (s)", "JOIN (ms)", "PEER", "RTT-SRV (ms)", "RTT-PEER (ms)", "STATUS"}
	right := []bool{false, false, true, true, false, true, true, false, true, true, false}
	rows := [][]string{header}
	for _, h := range r.Hosts {
		lease := "-"
		switch {
		case h.Static:
			lease = "static"
		case h.LeaseS != nil:
			lease = strconv.FormatFloat(*h.LeaseS, 'f', 0, 64)
		}
		status := h.Status
		if h.Step != nil {
			status += " at " + *h.Step
		}
		rows = append(rows, []string{h.Host, h.GID, h.LID, orDash(h.QPN), orDash(h.IP), lease, msCell(h.JoinMs),
			orDash(h.Neighbour), msCell(h.RTTServer), msCell(h.RTTNext), status})
	}
	printColumns(w, rows, right)
	t := r.Totals
	fmt.Fprintf(w, "\n%d/%d hosts ok: %d joined the broadcast group (%s), %d leased (%s), %d/%d pings answered (RTT p50 %s ms, p99 %s ms); took %.0f ms\n",
		t.OK, t.Hosts, t.Joined, allBy(t.AllJoinedMs), t.Leased, allBy(t.AllLeasedMs), t.PingsOK, t.PingsWanted, msCell(t.RTTP50Ms), msCell(t.RTTP99Ms), r.ElapsedMs)
	fmt.Fprintf(w, "fabric: %d packets sent, %d delivered, %d duplicated, %d reordered", r.Fabric.Sent, r.Fabric.Delivered, r.Fabric.Duplicated, r.Fabric.Reordered)
	if len(r.Fabric.Drops) > 0 {
		reasons := make([]string, 0, len(r.Fabric.Drops))
		for k := range r.Fabric.Drops {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		var parts []string
		for _, k := range reasons {
			parts = append(parts, fmt.Sprintf("%d %s", r.Fabric.Drops[k], k))
		}
		fmt.Fprintf(w, "; dropped: %s", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	if r.Pcap != nil {
		fmt.Fprintf(w, "captures in %s: fabric-ib.pcap (raw InfiniBand, ERF) and one IPoIB capture per host; open them in Wireshark\n", *r.Pcap)
	}
}

// printColumns prints rows as columns two spaces apart, each as wide as
// its widest cell; the last column is not padded.
func printColumns(w io.Writer, rows [][]string, right []bool) {
	width := make([]int, len(right))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len(c))
			switch {
			case right[i]:
				b.WriteString(pad + c)
			case i == len(row)-1:
				b.WriteString(c)
			default:
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// msCell formats a time in ms for the table: three decimals, "-" for none.
func msCell(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 3, 64)
}

// allBy says when the last host finished a step, or that not all did.
func allBy(v *float64) string {
	if v == nil {
		return "not all"
	}
	return "all by " + msCell(v) + " ms"
}

// failures names every host that failed, with the step and the reason,
// in one line.
func (r *simReport) failures() string {
	var parts []string
	for _, h := range r.Hosts {
		if h.Status == "failed" {
			parts = append(parts, fmt.Sprintf("%s at %s: %s", h.Host, orDash(h.Step), orDash(h.Error)))
		}
	}
	return strings.Join(parts, "; ")
}
