//go:build !(linux && cgo) || noverbs

package verbs

// The driver-table entry of a build without the verbs driver
// (CGO_ENABLED=0, another OS, or the noverbs tag): it is listed, finds the
// RDMA devices sysfs shows, and says it cannot open them and why.

import (
	"fmt"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// errNotBuilt is what Probe and Open return in this build.
var errNotBuilt = fmt.Errorf("verbs: %w: not built in (this binary was built with CGO_ENABLED=0 or the noverbs tag); rebuild with cgo (CGO_ENABLED=1 and gcc) to drive RDMA devices", ib.ErrUnavailable)

func init() {
	ib.Register(ib.Driver{Name: DriverName, Probe: Probe, Open: Open})
}

// Probe lists the RDMA devices sysfs shows, with an error wrapping
// ib.ErrUnavailable: this build cannot open them.
func Probe() ([]ib.DeviceInfo, error) { return sysfsDevices(), errNotBuilt }

// Open fails: this build has no verbs driver.
func Open(loop *aio.Context, name string) (ib.Device, error) {
	return nil, fmt.Errorf("open %s: %w", name, errNotBuilt)
}

// loadErr is why the driver cannot run: always errNotBuilt here.
func loadErr() error { return errNotBuilt }

// UMADSimulated is false: this build has no libibumad.
func UMADSimulated() bool { return false }

// OpenMADPort fails: this build has no libibumad.
func OpenMADPort(_ *aio.Context, ca string, port int) (ib.MADPort, error) {
	return nil, fmt.Errorf("open MAD port %d on %q: %w", port, ca, errNotBuilt)
}

// QueryUMADPort fails: this build has no libibumad.
func QueryUMADPort(ca string, port int) (ib.PortAttr, error) {
	return ib.PortAttr{}, fmt.Errorf("query port %d of %q: %w", port, ca, errNotBuilt)
}
