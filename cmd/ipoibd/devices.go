package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ipoibd/ipoibd/ib"
)

func init() {
	register(command{
		name:    "devices",
		summary: "list every device every registered driver finds",
		run:     runDevices,
	})
}

// deviceJSON is the --json form of one device.
type deviceJSON struct {
	Driver   string     `json:"driver"`
	Name     string     `json:"name"`
	NodeGUID string     `json:"node_guid"`
	NetDev   string     `json:"netdev,omitempty"`
	Ports    []portJSON `json:"ports"`
}

type portJSON struct {
	Port      int      `json:"port"`
	State     string   `json:"state"`
	LinkLayer string   `json:"link_layer"`
	LID       uint16   `json:"lid"`
	SMLID     uint16   `json:"sm_lid"`
	ActiveMTU int      `json:"active_mtu"`
	MaxMTU    int      `json:"max_mtu"`
	Rate      string   `json:"rate,omitempty"`
	GIDs      []string `json:"gids"`
	PKeys     []string `json:"pkeys"`
}

type driverErrJSON struct {
	Driver string `json:"driver"`
	Error  string `json:"error"`
	NoRDMA bool   `json:"no_rdma,omitempty"`
}

func runDevices(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("devices", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	results := ib.ProbeAll()
	var devs []deviceJSON
	var errs []driverErrJSON
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, driverErrJSON{Driver: r.Driver, Error: r.Err.Error(), NoRDMA: errors.Is(r.Err, ib.ErrNoRDMA)})
			continue
		}
		for _, d := range r.Devices {
			devs = append(devs, toDeviceJSON(d))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Devices []deviceJSON    `json:"devices"`
			Errors  []driverErrJSON `json:"errors,omitempty"`
		}{nonNil(devs), errs}); err != nil {
			fmt.Fprintf(stderr, "ipoibd devices: %v\n", err)
			return exitFailure
		}
	} else {
		printDevices(stdout, devs)
	}
	// A driver that could not look is worth a line on stderr in both
	// forms: "this kernel has no RDMA support" is not "no devices".
	for _, e := range errs {
		fmt.Fprintf(stderr, "ipoibd devices: driver %s: %s\n", e.Driver, e.Error)
	}
	if len(devs) == 0 {
		if len(errs) == 0 {
			fmt.Fprintln(stderr, "ipoibd devices: no RDMA devices found")
		}
		return exitFailure
	}
	return exitOK
}

func nonNil(d []deviceJSON) []deviceJSON {
	if d == nil {
		return []deviceJSON{}
	}
	return d
}

func toDeviceJSON(d ib.DeviceInfo) deviceJSON {
	out := deviceJSON{Driver: d.Driver, Name: d.Name, NodeGUID: d.NodeGUID.String(), NetDev: d.NetDev}
	for _, p := range d.Ports {
		pj := portJSON{
			Port: p.Num, State: p.State.String(), LinkLayer: p.LinkLayer.String(),
			LID: uint16(p.LID), SMLID: uint16(p.SMLID),
			ActiveMTU: p.ActiveMTU.Bytes(), MaxMTU: p.MaxMTU.Bytes(),
			GIDs: []string{}, PKeys: []string{},
		}
		if p.Rate.Mbps() > 0 {
			pj.Rate = p.Rate.String()
		}
		for _, g := range p.GIDs {
			if !g.IsZero() {
				pj.GIDs = append(pj.GIDs, g.String())
			}
		}
		for _, k := range p.PKeys {
			if k.Valid() {
				pj.PKeys = append(pj.PKeys, k.String())
			}
		}
		out.Ports = append(out.Ports, pj)
	}
	return out
}

func printDevices(w io.Writer, devs []deviceJSON) {
	for _, d := range devs {
		fmt.Fprintf(w, "%s (driver %s) node GUID %s", d.Name, d.Driver, d.NodeGUID)
		if d.NetDev != "" {
			fmt.Fprintf(w, " netdev %s", d.NetDev)
		}
		fmt.Fprintln(w)
		for _, p := range d.Ports {
			fmt.Fprintf(w, "  port %d: %s, link layer %s, LID %#x, SM LID %#x, MTU %d (max %d)",
				p.Port, p.State, p.LinkLayer, p.LID, p.SMLID, p.ActiveMTU, p.MaxMTU)
			if p.Rate != "" {
				fmt.Fprintf(w, ", %s", p.Rate)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "    GIDs:   %s\n", strings.Join(p.GIDs, " "))
			fmt.Fprintf(w, "    P_Keys: %s\n", strings.Join(p.PKeys, " "))
		}
	}
}
