//go:build linux

package udp

// The sockets behind a device, and the batched system calls on them.
//
// Why two sockets per IP family:
//   - Sending goes through an ordinary UDP socket bound to the interface's
//     address and port 4791: the kernel routes, resolves neighbours and
//     writes the IP and UDP headers. Its receive side is closed by a
//     socket filter that drops everything, so it only keeps the port
//     bound (no ICMP port-unreachable answers) and queues nothing.
//   - Receiving goes through a raw socket for UDP, which delivers the IP
//     header with each datagram (IPv4) or lets it be rebuilt exactly
//     (IPv6, from the source address and IPV6_PKTINFO): the ICRC covers
//     the IPv4 identification field, which no UDP socket reports. Every
//     raw socket gets its own copy, so several processes may open the
//     same interface (each keeps the datagrams for its own QPNs).
//
// recvmmsg and sendmmsg are issued directly: golang.org/x/sys/unix has
// the Mmsghdr type but no wrappers, and x/net/ipv4's batch calls go
// through the Go netpoller, which the aio loop replaces.

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/ib"
)

// socketBuffer is the send and receive buffer size asked for on every
// socket: a burst of a few hundred full-size datagrams.
const socketBuffer = 4 << 20

// attachFilter installs a classic BPF program on fd.
func attachFilter(fd int, prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assemble socket filter: %w", err)
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fp := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	return nil
}

// dropAll is the filter of the send sockets: keep nothing.
var dropAll = []bpf.Instruction{bpf.RetConstant{Val: 0}}

// rawIPv4Filter keeps the unfragmented UDP datagrams to port 4791 and
// address dst that a raw IPv4 socket sees (it starts at the IP header),
// and drops the rest of the host's UDP traffic in the kernel.
func rawIPv4Filter(dst [4]byte) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 6, Size: 2},                           // flags and fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3FFF, SkipTrue: 6}, // a fragment: drop
		bpf.LoadAbsolute{Off: 16, Size: 4},                          // destination address
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(dst[0])<<24 | uint32(dst[1])<<16 | uint32(dst[2])<<8 | uint32(dst[3]), SkipTrue: 4},
		bpf.LoadMemShift{Off: 0},          // X = IP header length
		bpf.LoadIndirect{Off: 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ib.RoCEv2Port, SkipTrue: 1},
		bpf.RetConstant{Val: 0xFFFF},
		bpf.RetConstant{Val: 0},
	}
}

// rawIPv6Filter keeps the UDP datagrams to port 4791 that a raw IPv6
// socket sees (it starts at the UDP header).
var rawIPv6Filter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 2, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ib.RoCEv2Port, SkipTrue: 1},
	bpf.RetConstant{Val: 0xFFFF},
	bpf.RetConstant{Val: 0},
}

// setBuffers asks for socketBuffer bytes each way, forcing past the
// sysctl limits where the process may (CAP_NET_ADMIN).
func setBuffers(fd int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], socketBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], socketBuffer)
		}
	}
}

// countDrops asks the kernel to report with each datagram how many the
// socket has dropped for want of buffer space (Counters.RxSocketDrops).
func countDrops(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); err != nil {
		return fmt.Errorf("SO_RXQ_OVFL: %w", err)
	}
	return nil
}

// openSendSocket4 opens the IPv4 send socket bound to addr:4791.
func openSendSocket4(addr [4]byte) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("UDP socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("IPv4 send socket: %s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	if err := attachFilter(fd, dropAll); err != nil {
		return fail("filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
		return fail("IP_MTU_DISCOVER", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, unicastHopLimit); err != nil {
		return fail("IP_TTL", err)
	}
	setBuffers(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: ib.RoCEv2Port, Addr: addr}); err != nil {
		return fail(fmt.Sprintf("bind %d.%d.%d.%d:%d", addr[0], addr[1], addr[2], addr[3], ib.RoCEv2Port), err)
	}
	return fd, nil
}

// openSendSocket6 opens the IPv6 send socket bound to the link-local
// address ll:4791 on ifindex; multicast leaves by that interface with hop
// limit 1 and is not looped back (the device delivers to its own QPs
// itself).
func openSendSocket6(ll [16]byte, ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("UDP socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("IPv6 send socket: %s: %w", what, err)
	}
	for _, o := range [][3]int{
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
		{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1},
		{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex},
		{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, mcastHopLimit},
		{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0},
		{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unicastHopLimit},
		{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO},
	} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			return fail(fmt.Sprintf("option %d/%d", o[0], o[1]), err)
		}
	}
	if err := attachFilter(fd, dropAll); err != nil {
		return fail("filter", err)
	}
	setBuffers(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: ib.RoCEv2Port, Addr: ll, ZoneId: uint32(ifindex)}); err != nil {
		return fail(fmt.Sprintf("bind [%v%%%d]:%d", ib.GID(ll), ifindex, ib.RoCEv2Port), err)
	}
	return fd, nil
}

// openRawSocket4 opens the raw IPv4 receive socket for datagrams to addr.
func openRawSocket4(addr [4]byte) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("raw IPv4 socket (needs CAP_NET_RAW, to see the IP header the ICRC covers): %w", err)
	}
	if err := attachFilter(fd, rawIPv4Filter(addr)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	if err := countDrops(fd); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	setBuffers(fd)
	return fd, nil
}

// openRawSocket6 opens the raw IPv6 receive socket, bound to ifindex.
func openRawSocket6(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("raw IPv6 socket (needs CAP_NET_RAW): %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("raw IPv6 socket: %s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
		return fail("IPV6_RECVPKTINFO", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
		return fail("IPV6_RECVHOPLIMIT", err)
	}
	if err := unix.BindToDevice(fd, ifname); err != nil {
		return fail("SO_BINDTODEVICE "+ifname, err)
	}
	if err := attachFilter(fd, rawIPv6Filter); err != nil {
		return fail("filter", err)
	}
	if err := countDrops(fd); err != nil {
		return fail("drop count", err)
	}
	setBuffers(fd)
	return fd, nil
}

// recvmmsg receives up to len(hdrs) datagrams without blocking.
func recvmmsg(fd int, hdrs []unix.Mmsghdr) (int, error) { return mmsg(unix.SYS_RECVMMSG, fd, hdrs) }

// sendmmsg sends up to len(hdrs) datagrams without blocking and returns
// how many the kernel took.
func sendmmsg(fd int, hdrs []unix.Mmsghdr) (int, error) { return mmsg(unix.SYS_SENDMMSG, fd, hdrs) }

// mmsg issues recvmmsg or sendmmsg (trap) with MSG_DONTWAIT, retrying
// when a signal interrupts it.
func mmsg(trap uintptr, fd int, hdrs []unix.Mmsghdr) (int, error) {
	for {
		n, _, errno := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
			uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
}
