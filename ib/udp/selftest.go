//go:build linux

package udp

// The open-time check that the kernel sends what the ICRC was computed
// over. Control plane: it runs once, from newDevice, on the home loop.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/ib"
)

// ErrKernelHeader says the kernel's IPv4 header differs from the one the
// driver computes the ICRC over (the identification field, most likely):
// every datagram sent would fail the peers' ICRC check.
var ErrKernelHeader = errors.New("udp: the kernel's IPv4 header does not match the ICRC the driver computes")

// selfTestTimeout bounds the wait for the datagram a device sends itself
// at open; it crosses the loopback interface, so it takes microseconds.
const selfTestTimeout = time.Second

// selfTestQPN is the destination QPN of the self-test datagram: the SMI
// QP, which a UD QP never is, so no process's QP takes it.
const selfTestQPN ib.QPN = 0

// selfTest4 sends one UD datagram to the interface's own IPv4 address
// through the send socket and reads it back through the raw socket: it
// must decode with a valid ICRC. That proves, on this kernel, the
// assumption the send path rests on (an unconnected socket's
// Don't-Fragment datagrams leave with IPv4 ID 0), and that the raw socket
// sees the datagrams. Anything else the raw socket returns meanwhile is
// discarded: no QP exists yet to take it.
//
// The datagram crosses the loopback interface. Where that is down (a
// fresh network namespace) or drops it, the check cannot run and is
// skipped: only a datagram that arrives with a bad ICRC fails the open.
func (d *device) selfTest4() error {
	if lo, err := net.InterfaceByName("lo"); err != nil || lo.Flags&net.FlagUp == 0 {
		return nil
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	buf := make([]byte, 256)
	h := sendHeader{Src: d.src4, Dst: d.src4, SrcPort: ib.RoCEv2Port}
	out, err := encodeDatagram(buf, &h, &ib.BTH{OpCode: ib.OpUDSendOnly, PKey: ib.PKeyDefault, DestQP: selfTestQPN},
		&ib.DETH{QKey: 0, SrcQP: 1}, [][]byte{nonce[:]})
	if err != nil {
		return err
	}
	if err := unix.Sendto(d.tx4, out, 0, &unix.SockaddrInet4{Port: ib.RoCEv2Port, Addr: d.info.v4.As4()}); err != nil {
		return fmt.Errorf("udp %s: self-test send: %w", d.info.name, err)
	}
	rbuf := make([]byte, 2048)
	deadline := time.Now().Add(selfTestTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil // not seen: nothing to judge by
		}
		fds := []unix.PollFd{{Fd: int32(d.rx4), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return fmt.Errorf("udp %s: self-test: %w", d.info.name, err)
		}
		n, _, err := unix.Recvfrom(d.rx4, rbuf, unix.MSG_DONTWAIT)
		if err != nil || n < ib.IPv4HeaderLen {
			continue
		}
		pkt := rbuf[:n]
		var dg datagram
		derr := decodeDatagram(pkt, &dg)
		if derr == nil && bytes.Equal(dg.Payload, nonce[:]) {
			return nil
		}
		if errors.Is(derr, ib.ErrBadICRC) && bytes.Contains(pkt, nonce[:]) {
			return fmt.Errorf("udp %s: IPv4 ID %#04x on a Don't-Fragment datagram, the driver assumes 0: %w",
				d.info.name, uint16(pkt[4])<<8|uint16(pkt[5]), ErrKernelHeader)
		}
	}
}
