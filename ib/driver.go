package ib

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ipoibd/ipoibd/aio"
)

// Driver is one entry of the driver table: a named way to find and open
// devices. Drivers register themselves at init time, the way QEMU block
// drivers fill in a BlockDriver and register it by name, so the layers above
// never name a concrete driver.
type Driver struct {
	// Name is the short, unique name used on the command line ("verbs",
	// "sim").
	Name string
	// Probe lists the devices the driver can open right now. It returns
	// ErrNoRDMA (wrapped) when the driver's whole subsystem is missing, so
	// callers can tell "no support" from "no devices".
	Probe func() ([]DeviceInfo, error)
	// Open opens a device by the name Probe reported. The device's control
	// and I/O methods then belong to loop.
	Open func(loop *aio.Context, name string) (Device, error)
}

// DeviceInfo is what Probe reports about one device without opening it.
type DeviceInfo struct {
	// Driver is the name of the driver that found the device.
	Driver string
	// Name is the device name, unique within its driver ("mlx5_0", "rxe0",
	// "host3").
	Name string
	// NodeGUID identifies the HCA.
	NodeGUID GUID
	// NetDev is the kernel network interface bound to the device, if any
	// (RoCE ports have one; simulated hosts do not).
	NetDev string
	// Ports holds the attributes of every port, numbered from 1.
	Ports []PortAttr
}

// Errors shared by every driver.
var (
	// ErrNoRDMA says the kernel or platform offers no RDMA support at all
	// (libibverbs reports ENOSYS), as opposed to zero devices.
	ErrNoRDMA = errors.New("this kernel has no RDMA support")
	// ErrUnavailable says a driver is in the table but cannot run in this
	// build or on this machine (not built in, a library it loads is
	// missing); the wrapping error says which and what to do. Its Probe
	// may still list the devices it can see without running.
	ErrUnavailable = errors.New("driver unavailable")
	// ErrNoDevice says no device of that name exists.
	ErrNoDevice = errors.New("no such device")
	// ErrNoPort says the port number is out of range for the device.
	ErrNoPort = errors.New("no such port")
	// ErrBadConfig says a request to a device (a queue pair, a completion
	// queue, an address vector) asks for values outside what the driver
	// can honour: a depth, a buffer size, a P_Key or GID index.
	ErrBadConfig = errors.New("bad configuration")
	// ErrClosed says the object was used after Close.
	ErrClosed = errors.New("closed")
	// ErrQueueFull says a send or receive queue has no free slot; the caller
	// keeps the work and retries after completions.
	ErrQueueFull = errors.New("work queue full")
	// ErrInvalidWR says a send work request cannot be carried out as
	// given: its address handle is another device's, destroyed or for
	// another port, or its remote QPN is wider than 24 bits
	// (SendWR.Validate), or it breaks a rule of the driver's own. The
	// drivers export it under their own names too.
	ErrInvalidWR = errors.New("invalid work request")
	// ErrUnknownDriver says no driver of that name is registered.
	ErrUnknownDriver = errors.New("unknown driver")
	// ErrDeviceFatal says the device reported a fatal error
	// (EventDeviceFatal): what was created from it is dead, and only
	// opening the device again helps.
	ErrDeviceFatal = errors.New("fatal device error")
)

var registry struct {
	sync.Mutex
	drivers map[string]Driver
}

// Register adds a driver to the table. Registering the same name twice, or a
// driver without Name, Probe or Open, is a programming error and panics,
// because it can only happen in an init function.
func Register(d Driver) {
	if d.Name == "" || d.Probe == nil || d.Open == nil {
		panic(fmt.Sprintf("ib.Register: incomplete driver %q", d.Name))
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.drivers == nil {
		registry.drivers = make(map[string]Driver)
	}
	if _, dup := registry.drivers[d.Name]; dup {
		panic(fmt.Sprintf("ib.Register: driver %q registered twice", d.Name))
	}
	registry.drivers[d.Name] = d
}

// Drivers returns every registered driver sorted by name.
func Drivers() []Driver {
	registry.Lock()
	defer registry.Unlock()
	out := make([]Driver, 0, len(registry.drivers))
	for _, d := range registry.drivers {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupDriver returns the driver registered under name.
func LookupDriver(name string) (Driver, error) {
	registry.Lock()
	defer registry.Unlock()
	d, ok := registry.drivers[name]
	if !ok {
		return Driver{}, fmt.Errorf("driver %q: %w", name, ErrUnknownDriver)
	}
	return d, nil
}

// ProbeResult is one driver's answer to ProbeAll.
type ProbeResult struct {
	// Driver is the driver's name.
	Driver string
	// Devices is what it found.
	Devices []DeviceInfo
	// Err is why probing failed, if it did.
	Err error
}

// ProbeAll asks every registered driver for its devices. A failing driver
// does not hide the others.
func ProbeAll() []ProbeResult {
	var out []ProbeResult
	for _, d := range Drivers() {
		devs, err := d.Probe()
		out = append(out, ProbeResult{Driver: d.Name, Devices: devs, Err: err})
	}
	return out
}

// Open opens device name of driver drv on loop. It must be called on loop.
func Open(loop *aio.Context, drv, name string) (Device, error) {
	loop.AssertHome("ib.Open")
	d, err := LookupDriver(drv)
	if err != nil {
		return nil, err
	}
	dev, err := d.Open(loop, name)
	if err != nil {
		return nil, fmt.Errorf("open %s device %q: %w", drv, name, err)
	}
	return dev, nil
}
