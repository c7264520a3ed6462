package sim

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// DriverName is the name the simulator registers in the ib driver table.
const DriverName = "sim"

func init() {
	ib.Register(ib.Driver{Name: DriverName, Probe: probe, Open: open})
}

// probe lists the hosts of every live fabric as "<fabric>/<host>", sorted.
// It never reports ib.ErrNoRDMA: the simulator is always available, it
// just may have no fabric yet.
func probe() ([]ib.DeviceInfo, error) {
	live.Lock()
	fabrics := make([]*Fabric, 0, len(live.fabrics))
	for _, f := range live.fabrics {
		fabrics = append(fabrics, f)
	}
	live.Unlock()
	var out []ib.DeviceInfo
	for _, f := range fabrics {
		for _, h := range f.Hosts() {
			out = append(out, h.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// open opens "<fabric>/<host>" on loop.
func open(loop *aio.Context, name string) (ib.Device, error) {
	fname, hname, ok := strings.Cut(name, "/")
	if !ok || fname == "" || hname == "" {
		return nil, fmt.Errorf("sim: device name %q is not <fabric>/<host>: %w", name, ib.ErrNoDevice)
	}
	live.Lock()
	f := live.fabrics[fname]
	live.Unlock()
	if f == nil {
		return nil, fmt.Errorf("sim: no live fabric %q: %w", fname, ib.ErrNoDevice)
	}
	var h *Host
	for _, x := range f.Hosts() {
		if x.name == hname {
			h = x
			break
		}
	}
	if h == nil {
		return nil, fmt.Errorf("sim: fabric %q has no host %q: %w", fname, hname, ib.ErrNoDevice)
	}
	return h.Open(loop)
}
