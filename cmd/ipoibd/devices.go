package main

import (
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

// devicesJSON is the --json form of the whole listing.
type devicesJSON struct {
	Drivers []driverJSON `json:"drivers"`
	Devices []deviceJSON `json:"devices"`
}

// driverJSON says whether a driver can run here, and if not, why.
type driverJSON struct {
	Name string `json:"name"`
	// Unavailable is why the driver cannot open devices in this build or
	// on this machine (not built in, a library missing, no RDMA in the
	// kernel); null when it can.
	Unavailable *string `json:"unavailable"`
	// Error is any other probing failure (a device it could not open);
	// null when none.
	Error *string `json:"error"`
}

// deviceJSON is the --json form of one device.
type deviceJSON struct {
	Driver string `json:"driver"`
	Name   string `json:"name"`
	// Usable is false when the device was found (in sysfs) but its driver
	// cannot open it.
	Usable   bool       `json:"usable"`
	NodeGUID *string    `json:"node_guid"`
	NetDev   *string    `json:"netdev"`
	Ports    []portJSON `json:"ports"`
}

type portJSON struct {
	Port      int      `json:"port"`
	State     string   `json:"state"`
	LinkLayer string   `json:"link_layer"`
	LID       *string  `json:"lid"`
	SMLID     *string  `json:"sm_lid"`
	ActiveMTU *int     `json:"active_mtu"`
	MaxMTU    *int     `json:"max_mtu"`
	Rate      *string  `json:"rate"`
	GIDs      []string `json:"gids"`
	PKeys     []string `json:"pkeys"`
}

func runDevices(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("devices", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object instead of a list")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	results := ib.ProbeAll()
	out := devicesJSON{Drivers: driverStatus(results), Devices: []deviceJSON{}}
	for _, r := range results {
		usable := !isUnavailable(r.Err)
		for _, d := range r.Devices {
			out.Devices = append(out.Devices, toDeviceJSON(d, usable))
		}
	}
	// Exit status as ibv_devinfo's: 1 when there is nothing to list.
	code := exitOK
	if len(out.Devices) == 0 {
		code = exitFailure
	}
	if *asJSON {
		return emit(stdout, stderr, "devices", out, code)
	}
	printDevices(stdout, out.Devices)
	// Why a driver cannot run goes to stderr, once per driver: "this
	// kernel has no RDMA support" is not "no devices".
	explained := false
	for _, d := range out.Drivers {
		for _, why := range []*string{d.Unavailable, d.Error} {
			if why != nil {
				fmt.Fprintf(stderr, "ipoibd devices: %s\n", *why)
				explained = true
			}
		}
	}
	if len(out.Devices) == 0 && !explained {
		fmt.Fprintln(stderr, "ipoibd devices: no RDMA devices found")
	}
	return code
}

// isUnavailable says whether a probe error means the driver cannot run at
// all here.
func isUnavailable(err error) bool {
	return errors.Is(err, ib.ErrUnavailable) || errors.Is(err, ib.ErrNoRDMA)
}

// driverStatus turns probe results into the drivers section.
func driverStatus(results []ib.ProbeResult) []driverJSON {
	out := []driverJSON{}
	for _, r := range results {
		d := driverJSON{Name: r.Driver}
		if r.Err != nil {
			msg := oneLine(r.Err)
			if isUnavailable(r.Err) {
				d.Unavailable = &msg
			} else {
				d.Error = &msg
			}
		}
		out = append(out, d)
	}
	return out
}

func toDeviceJSON(d ib.DeviceInfo, usable bool) deviceJSON {
	out := deviceJSON{Driver: d.Driver, Name: d.Name, Usable: usable, NetDev: optString(d.NetDev), Ports: []portJSON{}}
	if d.NodeGUID != 0 {
		out.NodeGUID = optString(guidJSON(d.NodeGUID))
	}
	for _, p := range d.Ports {
		pj := portJSON{
			Port: p.Num, State: p.State.String(), LinkLayer: p.LinkLayer.String(),
			Rate: rateJSON(p.Rate), GIDs: []string{}, PKeys: []string{},
		}
		// A device seen only in sysfs has no LIDs or MTUs to report.
		if usable {
			pj.LID, pj.SMLID = optLID(p.LID), optLID(p.SMLID)
			active, maxMTU := p.ActiveMTU.Bytes(), p.MaxMTU.Bytes()
			pj.ActiveMTU, pj.MaxMTU = &active, &maxMTU
		}
		for _, g := range p.GIDs {
			if !g.IsZero() {
				pj.GIDs = append(pj.GIDs, gidJSON(g))
			}
		}
		for _, k := range p.PKeys {
			if k.Valid() {
				pj.PKeys = append(pj.PKeys, pkeyJSON(k))
			}
		}
		out.Ports = append(out.Ports, pj)
	}
	return out
}

// orDash is *s, or "-" for null.
func orDash[T any](v *T) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(*v)
}

func printDevices(w io.Writer, devs []deviceJSON) {
	for _, d := range devs {
		// DRIVER:NAME, the form --device takes.
		fmt.Fprintf(w, "%s:%s", d.Driver, d.Name)
		if !d.Usable {
			fmt.Fprint(w, " (unavailable)")
		}
		fmt.Fprintf(w, " node GUID %s", orDash(d.NodeGUID))
		if d.NetDev != nil {
			fmt.Fprintf(w, " netdev %s", *d.NetDev)
		}
		fmt.Fprintln(w)
		for _, p := range d.Ports {
			fmt.Fprintf(w, "  port %d: %s, link layer %s", p.Port, p.State, p.LinkLayer)
			if d.Usable {
				fmt.Fprintf(w, ", LID %s, SM LID %s, MTU %s (max %s)", orDash(p.LID), orDash(p.SMLID), orDash(p.ActiveMTU), orDash(p.MaxMTU))
			}
			if p.Rate != nil {
				fmt.Fprintf(w, ", %s", *p.Rate)
			}
			fmt.Fprintln(w)
			if d.Usable {
				fmt.Fprintf(w, "    GIDs:   %s\n", strings.Join(p.GIDs, " "))
				fmt.Fprintf(w, "    P_Keys: %s\n", strings.Join(p.PKeys, " "))
			}
		}
	}
}

// oneLine is err's message with line breaks (errors.Join) made "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
