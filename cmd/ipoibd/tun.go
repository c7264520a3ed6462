package main

// --tun NAME: a kernel TUN interface that carries the IPoIB link's address
// and prefix, so the kernel's own programs reach IPoIB hosts and IPoIB
// hosts reach the kernel's services.
//
// The daemon's gVisor stack keeps the link: ARP, DHCP, its own sockets
// (--forward, --serve, --socks5, ping, the DHCP client and server). The
// TUN interface is a second NIC of that stack, and the address is shared
// as a host with two stacks on one address shares it, by transport
// endpoint:
//
//   - kernel to link: the TUN NIC forwards (gVisor's IPv4 forwarding) what
//     the kernel sends onto the IPoIB NIC, whose neighbour cache resolves
//     the peer by IPoIB ARP;
//   - link to kernel: a packet for the link's address that no gVisor
//     socket claims (gVisor's per-protocol default handler, asked only
//     after its own demultiplexer) is written to the TUN device as it
//     came, headers and all. Echo requests go the same way, so the
//     kernel answers pings, as it would on ib0.
//
// The address and the subnet route are set by netlink and removed on the
// way out; the interface itself goes when its file descriptor closes.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ipoibd/ipoibd"
)

// tunPortFirst and tunPortLast bound the daemon's own ephemeral ports
// while a TUN interface shares its address: below Linux's default
// ip_local_port_range (32768-60999), so that a connection the kernel opens
// is never taken for one of the daemon's.
const (
	tunPortFirst = 16384
	tunPortLast  = 32767
)

// tunDevice is a running --tun.
type tunDevice struct {
	name  string
	fd    int
	s     *gvstack.Stack
	nic   tcpip.NICID
	ipNIC tcpip.NICID
	link  netlink.Link
	addr  netip.Prefix
	mtu   int
	// on is read by the default handlers, which stay installed (setting
	// them again would race with deliveries in flight); Close turns them
	// off.
	on atomic.Bool
	// local is the link's address as gVisor spells it.
	local tcpip.Address
}

// tunProtocols are the transport protocols whose unclaimed packets go to
// the kernel.
var tunProtocols = []tcpip.TransportProtocolNumber{tcp.ProtocolNumber, udp.ProtocolNumber, icmp.ProtocolNumber4}

// startTUN creates the TUN interface name, gives it ifc's address, prefix
// and MTU, and joins it to ifc's stack.
func startTUN(name string, ifc *ipoibd.Interface, log *slog.Logger) (*tunDevice, error) {
	st := ifc.Stack()
	addr := ifc.Addr()
	if st == nil || !addr.IsValid() {
		return nil, fmt.Errorf("--tun %s: the interface has no address yet", name)
	}
	fd, err := tun.Open(name)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("--tun %s: creating a TUN interface needs CAP_NET_ADMIN: run as root, or grant it with 'setcap cap_net_admin+ep ipoibd'", name)
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV):
			return nil, fmt.Errorf("--tun %s: no /dev/net/tun: load the tun module ('modprobe tun')", name)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("--tun %s: an interface of that name exists and is busy: choose another name", name)
		}
		return nil, fmt.Errorf("--tun %s: %w", name, err)
	}
	t := &tunDevice{name: name, fd: fd, s: st.S, ipNIC: st.NIC, addr: addr, local: tcpip.AddrFrom4(addr.Addr().As4())}
	if err := t.start(ifc); err != nil {
		t.Close()
		return nil, fmt.Errorf("--tun %s: %w", name, err)
	}
	log.Info("TUN interface up", "tun", name, "addr", addr.String(), "mtu", ifc.MTU())
	return t, nil
}

func (t *tunDevice) start(ifc *ipoibd.Interface) error {
	mtu := ifc.MTU()
	t.mtu = mtu
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{t.fd}, MTU: uint32(mtu)})
	if err != nil {
		return fmt.Errorf("gVisor endpoint: %w", err)
	}
	for id := t.ipNIC + 1; ; id++ {
		if !t.s.HasNIC(id) {
			t.nic = id
			break
		}
	}
	if e := t.s.CreateNICWithOptions(t.nic, ep, gvstack.NICOptions{Name: "tun:" + t.name}); e != nil {
		t.nic = 0
		return fmt.Errorf("gVisor NIC: %s", e)
	}
	if _, e := t.s.SetNICForwarding(t.nic, ipv4.ProtocolNumber, true); e != nil {
		return fmt.Errorf("forwarding from the TUN NIC: %s", e)
	}
	if e := t.s.SetPortRange(tunPortFirst, tunPortLast); e != nil {
		return fmt.Errorf("ephemeral ports: %s", e)
	}
	t.on.Store(true)
	// gVisor reads the handlers unlocked on every delivery, which the
	// interface's loop makes: set them there.
	if err := ifc.OnLoop(func() {
		for _, p := range tunProtocols {
			t.s.SetTransportProtocolHandler(p, t.toKernel)
		}
	}); err != nil {
		return fmt.Errorf("installing the handlers: %w", err)
	}

	if t.link, err = netlink.LinkByName(t.name); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	if err := netlink.LinkSetMTU(t.link, mtu); err != nil {
		return fmt.Errorf("netlink: MTU %d: %w", mtu, err)
	}
	// The subnet route is added by hand (IFA_F_NOPREFIXROUTE), so that it
	// is ours to remove.
	if err := netlink.AddrAdd(t.link, t.nlAddr()); err != nil {
		return fmt.Errorf("netlink: address %v: %w", t.addr, err)
	}
	if err := netlink.LinkSetUp(t.link); err != nil {
		return fmt.Errorf("netlink: set up: %w", err)
	}
	if err := netlink.RouteAdd(t.route()); err != nil {
		return fmt.Errorf("netlink: route %v: %w", t.addr.Masked(), err)
	}
	return nil
}

func (t *tunDevice) nlAddr() *netlink.Addr {
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: net.IP(t.addr.Addr().AsSlice()), Mask: net.CIDRMask(t.addr.Bits(), 32)},
		Flags: unix.IFA_F_NOPREFIXROUTE,
	}
}

func (t *tunDevice) route() *netlink.Route {
	sub := t.addr.Masked()
	return &netlink.Route{
		LinkIndex: t.link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IP(sub.Addr().AsSlice()), Mask: net.CIDRMask(sub.Bits(), 32)},
		Src:       net.IP(t.addr.Addr().AsSlice()),
		Scope:     netlink.SCOPE_LINK,
	}
}

// toKernel is gVisor's default handler: a packet that arrived on the IPoIB
// NIC for the link's address and that no gVisor socket wants goes to the
// kernel whole.
func (t *tunDevice) toKernel(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
	if !t.on.Load() || pkt.NICID != t.ipNIC || id.LocalAddress != t.local {
		return false
	}
	// An error means the kernel's queue is full or the interface went
	// down: a drop, as on any link.
	_ = t.s.WriteRawPacket(t.nic, ipv4.ProtocolNumber, gvstack.BufferSince(pkt.NetworkHeader()))
	return true
}

// String describes the interface for up's progress lines.
func (t *tunDevice) String() string {
	return fmt.Sprintf("tun %s %v mtu %d: the kernel's programs reach the link through it", t.name, t.addr, t.mtu)
}

// Close removes the route and address, takes the NIC out of the stack and
// closes the device, which removes the interface.
func (t *tunDevice) Close() {
	t.on.Store(false)
	if t.link != nil {
		// Errors here mean the interface or its address is already
		// gone, which is where Close is headed.
		_ = netlink.RouteDel(t.route())
		_ = netlink.AddrDel(t.link, t.nlAddr())
	}
	if t.nic != 0 {
		_ = t.s.RemoveNIC(t.nic)
	}
	if t.fd >= 0 {
		os.NewFile(uintptr(t.fd), "tun").Close()
		t.fd = -1
	}
}
