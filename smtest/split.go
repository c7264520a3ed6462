package smtest

// SplitDevice: the data plane of one device, the control plane of another.
//
// Control plane: every method runs on the loop of the data-plane device.

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ipoibd/ipoibd/ib"
)

// SplitDevice is an ib.Device that sends and receives through Data (queue
// pairs, completion queues, address handles, multicast attach) while its
// control plane, the MAD port the SA client uses, the port's LID, SM,
// state, GIDs and P_Key table and the port events, comes from elsewhere:
// in the tests an HCA of an ibsim fabric managed by OpenSM. MTU and rate
// are the data plane's, since that is where packets go.
//
// Data must already agree with the control plane where packets meet it
// (port GID, LID and P_Key table); the tests build a simulator host with
// the ibsim HCA's values. Several MAD ports may be opened: they share the
// one control-plane port and each sees every incoming MAD, which suits
// SA clients (each matches its own transaction IDs and drops the rest)
// and suits libumad2sim, which keeps one agent per management class.
type SplitDevice struct {
	ib.Device
	attr    ib.PortAttr
	mad     ib.MADPort
	views   []*madView
	handler func(ib.Event)
	closed  bool
}

// NewSplitDevice joins data to a control plane: attr is the control-plane
// view of port 1 and mad its MAD port, which the SplitDevice now owns.
func NewSplitDevice(data ib.Device, attr ib.PortAttr, mad ib.MADPort) *SplitDevice {
	d := &SplitDevice{Device: data, attr: attr, mad: mad}
	mad.SetHandler(d.dispatch)
	return d
}

// dispatch gives an incoming MAD to every open view.
func (d *SplitDevice) dispatch(src ib.MADAddress, mad []byte) {
	for _, v := range d.views {
		if v.handler != nil {
			v.handler(src, mad)
		}
	}
}

// NumPorts is 1: the control plane describes one port.
func (d *SplitDevice) NumPorts() int { return 1 }

// QueryPort returns the control plane's view of port 1 with the data
// plane's MTU and rate.
func (d *SplitDevice) QueryPort(port int) (ib.PortAttr, error) {
	d.Loop().AssertHome("smtest SplitDevice.QueryPort")
	if port != 1 {
		return ib.PortAttr{}, fmt.Errorf("smtest: query port %d: %w", port, ib.ErrNoPort)
	}
	data, err := d.Device.QueryPort(1)
	if err != nil {
		return ib.PortAttr{}, err
	}
	a := d.attr
	a.GIDs = slices.Clone(a.GIDs)
	a.PKeys = slices.Clone(a.PKeys)
	a.LinkLayer = ib.LinkLayerInfiniBand
	a.ActiveMTU, a.MaxMTU, a.Rate = data.ActiveMTU, data.MaxMTU, data.Rate
	return a, nil
}

// SetEventHandler installs fn for the control plane's port events; the
// data plane's own events are not passed on.
func (d *SplitDevice) SetEventHandler(fn func(ib.Event)) {
	d.Loop().AssertHome("smtest SplitDevice.SetEventHandler")
	d.handler = fn
}

// PortChanged records the control plane's new view of port 1 and raises
// the event the kernel would raise for the change, as a verbs device
// does when its port's PortInfo changes.
func (d *SplitDevice) PortChanged(attr ib.PortAttr, ev ib.EventType) {
	d.Loop().AssertHome("smtest SplitDevice.PortChanged")
	d.attr = attr
	if d.handler != nil {
		d.handler(ib.Event{Type: ev, Port: 1})
	}
}

// OpenMADPort opens a view of the control plane's MAD port.
func (d *SplitDevice) OpenMADPort(port int) (ib.MADPort, error) {
	d.Loop().AssertHome("smtest SplitDevice.OpenMADPort")
	if d.closed {
		return nil, fmt.Errorf("smtest: open MAD port: %w", ib.ErrClosed)
	}
	if port != 1 {
		return nil, fmt.Errorf("smtest: open MAD port %d: %w", port, ib.ErrNoPort)
	}
	v := &madView{d: d}
	d.views = append(d.views, v)
	return v, nil
}

// Close closes the MAD port and the data-plane device.
func (d *SplitDevice) Close() error {
	d.Loop().AssertHome("smtest SplitDevice.Close")
	if d.closed {
		return fmt.Errorf("smtest: close: %w", ib.ErrClosed)
	}
	d.closed = true
	d.views = nil
	return errors.Join(d.mad.Close(), d.Device.Close())
}

// madView is one user's handle on the shared MAD port.
type madView struct {
	d       *SplitDevice
	handler func(ib.MADAddress, []byte)
	gone    bool
}

// SetHandler installs the view's handler.
func (v *madView) SetHandler(fn func(ib.MADAddress, []byte)) { v.handler = fn }

// Send sends through the shared port.
func (v *madView) Send(dst ib.MADAddress, mad []byte) error {
	if v.gone || v.d.closed {
		return fmt.Errorf("smtest: MAD send: %w", ib.ErrClosed)
	}
	return v.d.mad.Send(dst, mad)
}

// Close detaches the view; the shared port stays open.
func (v *madView) Close() error {
	if v.gone {
		return fmt.Errorf("smtest: close MAD port: %w", ib.ErrClosed)
	}
	v.gone = true
	v.d.views = slices.DeleteFunc(v.d.views, func(x *madView) bool { return x == v })
	return nil
}
