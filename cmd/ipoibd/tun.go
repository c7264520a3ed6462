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
	"sync"
	"sync/atomic"
	"time"

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
	// tunFollowEvery is how often the TUN interface's address is compared
	// with the link's, which a DHCP lease may change.
	tunFollowEvery = time.Second
)

// needCapNetAdmin ends the error of a TUN interface the daemon may not
// create or configure, saying how to allow it.
const needCapNetAdmin = "needs CAP_NET_ADMIN: run as root, or grant it with 'setcap cap_net_admin+ep ipoibd'"

// tunDevice is a running --tun.
type tunDevice struct {
	name  string
	fd    int
	s     *gvstack.Stack
	nic   tcpip.NICID
	ipNIC tcpip.NICID
	link  netlink.Link
	mtu   int
	log   *slog.Logger
	// mu guards addr, the address the kernel interface has now (invalid
	// while the link has none).
	mu   sync.Mutex
	addr netip.Prefix
	// stop ends follow; followed closes when it has.
	stop, followed chan struct{}
	// on is read by the default handlers, which stay installed (setting
	// them again would race with deliveries in flight); Close turns them
	// off.
	on atomic.Bool
	// local is addr's address, big-endian, for the default handler.
	local atomic.Uint32
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
			return nil, fmt.Errorf("--tun %s: creating a TUN interface %s", name, needCapNetAdmin)
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV):
			return nil, fmt.Errorf("--tun %s: no /dev/net/tun: load the tun module ('modprobe tun')", name)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("--tun %s: an interface of that name exists and is busy: choose another name", name)
		}
		return nil, fmt.Errorf("--tun %s: %w", name, err)
	}
	t := &tunDevice{name: name, fd: fd, s: st.S, ipNIC: st.NIC, addr: addr, log: log}
	t.local.Store(be32(addr.Addr()))
	if err := t.start(ifc); err != nil {
		t.Close()
		if errors.Is(err, unix.EPERM) {
			// A persistent TUN interface its user owns opens without
			// the capability; netlink then refuses to configure it.
			return nil, fmt.Errorf("--tun %s: %v: configuring the interface %s", name, err, needCapNetAdmin)
		}
		return nil, fmt.Errorf("--tun %s: %w", name, err)
	}
	log.Info("TUN interface up", "tun", name, "addr", addr.String(), "mtu", ifc.MTU())
	t.stop, t.followed = make(chan struct{}), make(chan struct{})
	go t.follow(ifc)
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
	if t.link, err = netlink.LinkByName(t.name); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	if err := netlink.LinkSetMTU(t.link, mtu); err != nil {
		return fmt.Errorf("netlink: MTU %d: %w", mtu, err)
	}
	if err := netlink.LinkSetUp(t.link); err != nil {
		return fmt.Errorf("netlink: set up: %w", err)
	}
	if err := t.addAddr(t.addr); err != nil {
		return err
	}
	// Last, when nothing can fail any more: the handlers are the stack's,
	// not the NIC's. gVisor reads them unlocked on every delivery, which
	// the interface's loop makes: set them there.
	t.on.Store(true)
	if err := ifc.OnLoop(func() {
		for _, p := range tunProtocols {
			t.s.SetTransportProtocolHandler(p, t.toKernel)
		}
	}); err != nil {
		return fmt.Errorf("installing the handlers: %w", err)
	}
	return nil
}

// addAddr gives the kernel interface p and p's subnet route. The route is
// added by hand (IFA_F_NOPREFIXROUTE), so that it is ours to remove.
func (t *tunDevice) addAddr(p netip.Prefix) error {
	if err := netlink.AddrAdd(t.link, nlAddr(p)); err != nil {
		return fmt.Errorf("netlink: address %v: %w", p, err)
	}
	if err := netlink.RouteAdd(t.route(p)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("the kernel already has a route to %v (another interface on the IPoIB subnet, such as the kernel's own ib0?): remove it, or use the forwards instead", p.Masked())
		}
		return fmt.Errorf("netlink: route %v: %w", p.Masked(), err)
	}
	return nil
}

// delAddr removes p and its route. Errors mean they are gone already,
// which is what was asked.
func (t *tunDevice) delAddr(p netip.Prefix) {
	_ = netlink.RouteDel(t.route(p))
	_ = netlink.AddrDel(t.link, nlAddr(p))
}

// follow keeps the kernel interface's address that of the link, which a
// DHCP lease can change or lose, until Close.
func (t *tunDevice) follow(ifc *ipoibd.Interface) {
	defer close(t.followed)
	tick := time.NewTicker(tunFollowEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.sync(ifc.Addr())
		}
	}
}

// stopFollowing stops follow, if it runs.
func (t *tunDevice) stopFollowing() {
	if t.stop != nil {
		close(t.stop)
		<-t.followed
		t.stop = nil
	}
}

// sync moves the kernel interface to the link's address p (invalid: none).
func (t *tunDevice) sync(p netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p == t.addr {
		return
	}
	old := t.addr
	// Packets for the old address stop going to the kernel first.
	t.local.Store(be32(p.Addr()))
	if old.IsValid() {
		t.delAddr(old)
	}
	t.addr = netip.Prefix{}
	if p.IsValid() {
		if err := t.addAddr(p); err != nil {
			t.log.Error("the TUN interface cannot take the link's new address", "tun", t.name, "addr", p.String(), "err", err)
			return
		}
		t.addr = p
	}
	t.log.Info("TUN interface follows the link's address", "tun", t.name, "old", old.String(), "addr", p.String())
}

// be32 is a's IPv4 address as a big-endian number, 0 for none.
func be32(a netip.Addr) uint32 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)},
		Flags: unix.IFA_F_NOPREFIXROUTE,
	}
}

func (t *tunDevice) route(p netip.Prefix) *netlink.Route {
	sub := p.Masked()
	return &netlink.Route{
		LinkIndex: t.link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IP(sub.Addr().AsSlice()), Mask: net.CIDRMask(sub.Bits(), 32)},
		Src:       net.IP(p.Addr().AsSlice()),
		Scope:     netlink.SCOPE_LINK,
	}
}

// toKernel is gVisor's default handler: a packet that arrived on the IPoIB
// NIC for the link's address and that no gVisor socket wants goes to the
// kernel whole.
func (t *tunDevice) toKernel(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
	if !t.on.Load() || pkt.NICID != t.ipNIC || id.LocalAddress.Len() != 4 {
		return false
	}
	if be32(netip.AddrFrom4(id.LocalAddress.As4())) != t.local.Load() {
		return false
	}
	// An error means the kernel's queue is full or the interface went
	// down: a drop, as on any link.
	_ = t.s.WriteRawPacket(t.nic, ipv4.ProtocolNumber, gvstack.BufferSince(pkt.NetworkHeader()))
	return true
}

// String describes the interface for up's progress lines.
func (t *tunDevice) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("tun %s %v mtu %d: the kernel's programs reach the link through it", t.name, t.addr, t.mtu)
}

// Close removes the route and address, takes the NIC out of the stack and
// closes the device, which removes the interface.
func (t *tunDevice) Close() {
	t.on.Store(false)
	t.stopFollowing()
	if t.link != nil && t.addr.IsValid() {
		t.delAddr(t.addr)
	}
	if t.nic != 0 {
		_ = t.s.RemoveNIC(t.nic)
	}
	if t.fd >= 0 {
		os.NewFile(uintptr(t.fd), "tun").Close()
		t.fd = -1
	}
}
