//go:build linux && cgo && !noverbs

package verbs

// libibumad agents, with or without a verbs device. Every MAD read and
// write goes through libibumad's C calls (umad_send, umad_recv) and libc
// (poll): that is the interface libibumad supports on hardware, and it is
// the one ibsim's libumad2sim replaces when preloaded, so the same code
// talks to a kernel umad device or to an ibsim fabric and its OpenSM.
//
// A kernel umad file is an ordinary descriptor: the loop watches it. Under
// libumad2sim the "descriptor" is a number libumad2sim made up (1024 and
// up) that no epoll can watch, so a reader goroutine waits in libc's
// poll, which libumad2sim answers, and hands each MAD to the loop as a
// bottom half.

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// simReaderPollMS is how long the reader goroutine waits in one poll: the
// longest a Close waits for it to notice.
const simReaderPollMS = 100

// UMADSimulated reports whether ibsim's libumad2sim is preloaded into this
// process, so that umad files lead to an ibsim fabric instead of the kernel.
func UMADSimulated() bool { return C.ipo_umad_simulated() != 0 }

// OpenMADPort opens a libibumad SA agent on port of the HCA named ca ("" for
// libibumad's default HCA) without opening the verbs device: the control
// plane of a port whose data plane lives elsewhere (an ibsim fabric, whose
// HCAs have no verbs, or a tool that only queries the SA). The port is
// closed with its Close method; it runs on loop.
func OpenMADPort(loop *aio.Context, ca string, port int) (ib.MADPort, error) {
	if err := umadInit(); err != nil {
		return nil, fmt.Errorf("verbs: open MAD port %d on %q: %w", port, ca, err)
	}
	name := ca
	if name == "" {
		name = "(default HCA)"
	}
	m, err := openUMAD(loop, ca, name, port)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// QueryUMADPort returns a port's attributes as libibumad reads them from
// sysfs (umad_get_port): state, LIDs, SM, rate, default GID, P_Key table.
// ca "" picks libibumad's default HCA. No verbs device is opened, so this
// works on ibsim's HCAs too; there libumad2sim writes the values when the
// process first touches a umad file, so they are those of that moment.
func QueryUMADPort(ca string, port int) (ib.PortAttr, error) {
	if err := umadInit(); err != nil {
		return ib.PortAttr{}, fmt.Errorf("verbs: query port %d of %q: %w", port, ca, err)
	}
	cca := C.CString(ca)
	defer C.free(unsafe.Pointer(cca))
	var p C.struct_ipo_umad_port
	if rc := C.ipo_umad_port(cca, C.int(port), &p); rc < 0 {
		return ib.PortAttr{}, fmt.Errorf("verbs: umad_get_port %q port %d: %w", ca, port, rcErr(rc))
	}
	a := ib.PortAttr{
		Num:   int(p.port),
		State: ib.PortState(p.state),
		LID:   ib.LID(p.base_lid),
		LMC:   uint8(p.lmc),
		SMLID: ib.LID(p.sm_lid),
		SMSL:  ib.SL(p.sm_sl),
	}
	switch C.GoString(&p.link_layer[0]) {
	case "Ethernet":
		a.LinkLayer = ib.LinkLayerEthernet
	default:
		// libumad2sim writes no link_layer file; its ports are InfiniBand.
		a.LinkLayer = ib.LinkLayerInfiniBand
	}
	var gid ib.GID
	for i := range 8 {
		gid[i] = byte(p.gid_prefix[i])
		gid[8+i] = byte(p.port_guid[i])
	}
	a.GIDs = []ib.GID{gid}
	for i := range int(p.npkeys) {
		a.PKeys = append(a.PKeys, ib.PKey(p.pkeys[i]))
	}
	return a, nil
}

// openUMAD opens the umad file of port, registers the SA agent and
// starts receiving: on the loop for a kernel fd, by a reader goroutine
// under libumad2sim.
func openUMAD(loop *aio.Context, ca, name string, port int) (*madPort, error) {
	cname := C.CString(ca)
	defer C.free(unsafe.Pointer(cname))
	if ca == "" {
		cname = nil
	}
	pid := C.ipo_umad_open_port(cname, C.int(port))
	if pid < 0 {
		return nil, fmt.Errorf("verbs: umad_open_port %s port %d (is /dev/infiniband/umad* accessible?): %w", name, port, rcErr(pid))
	}
	agent := C.ipo_umad_register(pid, C.int(saMgmtClass), C.int(saClassVersion))
	if agent < 0 {
		C.ipo_umad_close_port(pid)
		return nil, fmt.Errorf("verbs: register SA agent on %s port %d: %w", name, port, rcErr(agent))
	}
	m := &madPort{loop: loop, name: name, port: port, portID: int(pid), fd: int(C.ipo_umad_get_fd(pid)), agent: uint32(agent)}
	if UMADSimulated() {
		m.startReader()
		return m, nil
	}
	if err := unix.SetNonblock(m.fd, true); err != nil {
		m.release()
		return nil, fmt.Errorf("verbs: %s port %d: make umad fd non-blocking: %w", name, port, err)
	}
	if err := loop.SetFDHandler(m.fd, aio.FDHandler{Read: m.readable}); err != nil {
		m.release()
		return nil, fmt.Errorf("verbs: %s port %d: watch umad fd: %w", name, port, err)
	}
	m.watched = true
	return m, nil
}

// simReader is the goroutine that receives for a port under libumad2sim.
type simReader struct {
	stop atomic.Bool
	done chan struct{}
	in   *aio.Mailbox[[]byte] // received messages (header and MAD) for the loop
}

// startReader starts the reader goroutine and the bottom half it feeds.
func (m *madPort) startReader() {
	r := &simReader{done: make(chan struct{})}
	r.in = aio.NewMailbox(m.loop, "verbs umad receive", m.deliver)
	m.reader = r
	go r.run(m.portID, m.fd, m.name, m.port)
}

// run waits for MADs with libc's poll and queues each for the loop.
func (r *simReader) run(portID, fd int, name string, port int) {
	defer close(r.done)
	buf := make([]byte, umadHeaderLen+2048)
	for !r.stop.Load() {
		rc := C.ipo_umad_wait(C.int(fd), simReaderPollMS)
		if rc == 0 || rc == -C.int(unix.EINTR) {
			continue
		}
		if rc < 0 {
			slog.Warn("verbs: polling umad failed", "device", name, "port", port, "err", rcErr(rc))
			return
		}
		n := C.int(len(buf) - umadHeaderLen)
		got := C.ipo_umad_recv(C.int(portID), unsafe.Pointer(&buf[0]), &n)
		if got < 0 {
			if got != -C.int(unix.EAGAIN) {
				slog.Warn("verbs: reading umad failed", "device", name, "port", port, "err", rcErr(got))
			}
			continue
		}
		// ibsim passes a MAD on with the length its sender wrote, and
		// OpenSM writes SA responses only up to the end of the record
		// (120 bytes for a PathRecord); the kernel always delivers a
		// non-RMPP MAD as the full 256 bytes it is on the wire. Pad it.
		msg := make([]byte, max(umadMsgLen, umadHeaderLen+int(n)))
		copy(msg, buf[:umadHeaderLen+int(n)])
		r.in.Post(msg)
	}
}

// deliver is the reader's bottom half: hand the queued MADs on.
func (m *madPort) deliver(in [][]byte) {
	for _, msg := range in {
		if m.gone {
			return
		}
		m.received(msg)
	}
}

// recvOne reads one pending message into rbuf with umad_recv: its length,
// or 0 when nothing was pending. A message too large for rbuf is dropped.
func (m *madPort) recvOne() (int, error) {
	n := C.int(len(m.rbuf) - umadHeaderLen)
	rc := C.ipo_umad_recv(C.int(m.portID), unsafe.Pointer(&m.rbuf[0]), &n)
	switch {
	case rc >= 0:
		return umadHeaderLen + int(n), nil
	case rc == -C.int(unix.EAGAIN) || rc == -C.int(unix.EINTR):
		return 0, nil
	case rc == -C.int(unix.ENOSPC):
		big := make([]byte, umadHeaderLen+(1<<20))
		n = C.int(len(big) - umadHeaderLen)
		C.ipo_umad_recv(C.int(m.portID), unsafe.Pointer(&big[0]), &n)
		return 0, errOversized
	}
	return 0, rcErr(rc)
}

// errOversized says a MAD larger than any SA agent should get was dropped.
var errOversized = errors.New("dropped an oversized MAD")

// sendOne writes wbuf with umad_send.
func (m *madPort) sendOne(timeoutMS int) error {
	rc := C.ipo_umad_send(C.int(m.portID), C.int(m.agent), unsafe.Pointer(&m.wbuf[0]), C.int(ib.MADLen), C.int(timeoutMS))
	if rc < 0 {
		return rcErr(rc)
	}
	return nil
}

// madTID reads a MAD's transaction ID.
func madTID(mad []byte) uint64 { return binary.BigEndian.Uint64(mad[madOffTID:]) }
