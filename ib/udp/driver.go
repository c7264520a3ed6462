//go:build linux

package udp

// The driver-table entry: finding the host's interfaces and opening one.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// DriverName is the name the driver registers in the ib driver table;
// devices are named after the interface ("udp:eth0" on the command line).
const DriverName = "udp"

func init() {
	ib.Register(ib.Driver{Name: DriverName, Probe: probe, Open: open})
}

// Hop limits (IPv4 TTL, IPv6 hop limit) of what the device sends: 1 keeps
// link-local multicast on the link, 64 is the usual default for unicast.
// The ICRC leaves them out, so per-packet values are not needed.
const (
	mcastHopLimit   = 1
	unicastHopLimit = 64
)

// ErrNoIPv4 says the interface has no IPv4 address to bind to.
var ErrNoIPv4 = errors.New("udp: interface has no IPv4 address")

// ifaceInfo is what the driver needs to know of a host interface.
type ifaceInfo struct {
	name    string
	index   int
	mtu     int
	up      bool
	mac     net.HardwareAddr
	v4      netip.Addr
	ll      netip.Addr // IPv6 link-local, invalid if none
	hasLL   bool
	nodeGID ib.GUID
}

// gids returns the port's GID table, in rxe's order: index 0 the
// link-local GID (zero while the interface has none), index 1 the
// IPv4-mapped GID of the interface address. The indices never move.
func (i *ifaceInfo) gids() []ib.GID {
	var ll ib.GID
	if i.hasLL {
		ll = ib.GID(i.ll.As16())
	}
	return []ib.GID{ll, ib.GID(i.v4.As16())}
}

// activeMTU is the IB MTU a datagram may carry on this interface: the
// largest that fits the interface MTU after the IPv6, UDP, BTH, DETH and
// ICRC headers, as rxe derives it (1500 gives 1024, 4200 or more 4096).
func (i *ifaceInfo) activeMTU() ib.MTU {
	room := i.mtu - ib.IPv6HeaderLen - ib.UDPHeaderLen - udOverhead
	best := ib.MTU(0)
	for m := ib.MTU256; m <= ib.MTU4096; m++ {
		if m.Bytes() <= room {
			best = m
		}
	}
	return best
}

// portAttr describes the device's single port. It is ACTIVE when the
// interface is up and running and IPv6 (ready: the link-local address
// exists and the device's IPv6 sockets are open), since every multicast
// group, the IPoIB broadcast group first, is reached over IPv6.
func (i *ifaceInfo) portAttr(ipv6 bool) ib.PortAttr {
	st := ib.PortDown
	if i.up && ipv6 {
		st = ib.PortActive
	}
	mtu := i.activeMTU()
	return ib.PortAttr{
		Num: 1, State: st, LinkLayer: ib.LinkLayerEthernet,
		ActiveMTU: mtu, MaxMTU: ib.MTU4096, Rate: ib.Rate10Gbps,
		GIDs:  i.gids(),
		PKeys: []ib.PKey{ib.PKeyDefault},
	}
}

// lookupIface reads one interface's addresses and state.
func lookupIface(ifc *net.Interface) (*ifaceInfo, error) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, fmt.Errorf("udp: addresses of %s: %w", ifc.Name, err)
	}
	info := &ifaceInfo{name: ifc.Name, index: ifc.Index, mtu: ifc.MTU, mac: ifc.HardwareAddr,
		up: ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagRunning != 0}
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ad := pfx.Addr()
		switch {
		case ad.Is4() && !info.v4.IsValid():
			info.v4 = ad
		case ad.Is6() && ad.IsLinkLocalUnicast() && !info.hasLL:
			info.ll, info.hasLL = ad.WithZone(""), true
		}
	}
	if !info.v4.IsValid() {
		return nil, fmt.Errorf("udp: %s: %w", ifc.Name, ErrNoIPv4)
	}
	info.nodeGID = nodeGUID(info)
	return info, nil
}

// nodeGUID makes the device's node GUID the way rxe does, an EUI-64 from
// the interface's MAC address; an interface without one (loopback, tun)
// gets one from its IPv4 address.
func nodeGUID(i *ifaceInfo) ib.GUID {
	var b [8]byte
	if len(i.mac) == 6 {
		copy(b[:3], i.mac[:3])
		b[0] ^= 0x02 // the universal/local bit, inverted in EUI-64
		b[3], b[4] = 0xFF, 0xFE
		copy(b[5:], i.mac[3:])
	} else {
		b[0], b[1] = 0x02, 0x00
		v4 := i.v4.As4()
		copy(b[4:], v4[:])
	}
	return ib.GUID(binary.BigEndian.Uint64(b[:]))
}

// probe lists every interface with an IPv4 address.
func probe() ([]ib.DeviceInfo, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("udp: list network interfaces: %w", err)
	}
	var out []ib.DeviceInfo
	for k := range ifs {
		info, err := lookupIface(&ifs[k])
		if err != nil {
			continue // no IPv4 address: not a device
		}
		out = append(out, ib.DeviceInfo{Driver: DriverName, Name: info.name, NodeGUID: info.nodeGID,
			NetDev: info.name, Ports: []ib.PortAttr{info.portAttr(info.hasLL)}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// open opens the interface called name on loop.
func open(loop *aio.Context, name string) (ib.Device, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("udp: no network interface %q: %w", name, ib.ErrNoDevice)
	}
	info, err := lookupIface(ifc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ib.ErrNoDevice)
	}
	return newDevice(loop, info)
}
