package smtest

// IBSimPort: an HCA port of an ibsim fabric over ibsim's own socket
// protocol, so that one process can attach to several HCAs (libumad2sim
// attaches a process to one).
//
// The protocol, as ibsim's sim_client speaks it on a local machine:
// unix datagram sockets in the abstract namespace named after
// IBSIM_SOCKNAME ("sim" by default). A control socket bound to
// "<name>:ctl<id>" and connected to ibsim's "<name>:ctl" carries
// fixed-size control messages (connect to a node, read its NodeInfo,
// PortInfo and P_Key table, disconnect); a data socket bound to
// "<name>:in<id>" and connected to "<name>:out<client>" carries one MAD
// per datagram with its addressing. Control fields are in host byte
// order; the addressing fields of a MAD datagram hold the values in the
// byte order of the kernel's user-MAD header, which is network order.
//
// Control plane: Dial, PortAttr and Close run on any goroutine; the MAD
// handler runs on the loop.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
)

// ibsim control message types (ibsim.h, enum SIM_CTL_TYPES).
const (
	simCtlError       = 0
	simCtlConnect     = 1
	simCtlDisconnect  = 2
	simCtlGetNodeInfo = 7
	simCtlGetPortInfo = 8
	simCtlGetPKeys    = 10
)

// Layout of ibsim's messages.
const (
	simMagic       = 0xdeadbeef
	simCtlDataLen  = 64
	simCtlLen      = 16 + simCtlDataLen // magic, client, type, len, data
	simNodeIDLen   = 32
	simReqMADOff   = 32 // dlid, slid, dqp, sqp, status, pad, length (u64)
	simReqLen      = simReqMADOff + ib.MADLen
	simPKeyEntries = simCtlDataLen / 2
)

// ErrIBSim says ibsim refused or garbled a control exchange.
var ErrIBSim = errors.New("ibsim control exchange failed")

// IBSimPort is port 1 of an ibsim HCA, attached over ibsim's socket
// protocol. It is an ib.MADPort on loop.
type IBSimPort struct {
	loop   *aio.Context
	node   string
	client uint32
	ctlMu  sync.Mutex
	ctl    *net.UnixConn
	data   *net.UnixConn
	out    *net.UnixAddr // ibsim's data socket for this client

	handler func(ib.MADAddress, []byte) // loop only
	in      *aio.Mailbox[[]byte]        // received datagrams for the loop
	closed  atomic.Bool
	done    chan struct{}
	// tids maps the low half of recent request TIDs to the whole: the
	// answers come back with the high bits changed (OpenSM's side clears
	// the top 16 under ibsim), as a kernel rewrites them on hardware.
	tidMu sync.Mutex
	tids  map[uint32]uint64
	order []uint32
}

// tidWindow is how many recent request TIDs IBSimPort remembers.
const tidWindow = 64

// DialIBSim attaches to node (an HCA's name in the topology file) of the
// ibsim whose IBSIM_SOCKNAME is sockName, as client id, which must be
// unique among the clients attached to that ibsim.
func DialIBSim(loop *aio.Context, sockName, node string, id uint32) (*IBSimPort, error) {
	if len(node) >= simNodeIDLen {
		return nil, fmt.Errorf("ibsim: node name %q longer than %d bytes: %w", node, simNodeIDLen-1, ErrIBSim)
	}
	addr := func(format string, a ...any) *net.UnixAddr {
		// ibsim's names are abstract and end with the NUL of the C string.
		return &net.UnixAddr{Net: "unixgram", Name: "@" + sockName + fmt.Sprintf(format, a...) + "\x00"}
	}
	ctl, err := net.DialUnix("unixgram", addr(":ctl%d", id), addr(":ctl"))
	if err != nil {
		return nil, fmt.Errorf("ibsim %s: control socket (is ibsim running with IBSIM_SOCKNAME=%s?): %w", node, sockName, err)
	}
	p := &IBSimPort{loop: loop, node: node, ctl: ctl, done: make(chan struct{}), tids: map[uint32]uint64{}}
	// The data socket must exist before ibsim is asked to connect: ibsim
	// connects its end to it.
	in, err := net.ListenUnixgram("unixgram", addr(":in%d", id))
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("ibsim %s: data socket: %w", node, err)
	}
	var info [12 + simNodeIDLen]byte
	binary.NativeEndian.PutUint32(info[0:], id)
	copy(info[12:], node)
	if err := p.exchange(simCtlConnect, info[:]); err != nil {
		in.Close()
		ctl.Close()
		return nil, err
	}
	p.client = binary.NativeEndian.Uint32(info[0:])
	// ibsim's end of the data path is connected to this socket: send to
	// it from here.
	p.data, p.out = in, addr(":out%d", p.client)
	p.in = aio.NewMailbox(loop, "ibsim receive "+node, p.deliver)
	go p.read()
	return p, nil
}

// exchange sends one control message and reads its answer into data.
func (p *IBSimPort) exchange(typ uint32, data []byte) error {
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	var m [simCtlLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(m[0:], simMagic)
	ne.PutUint32(m[4:], p.client)
	ne.PutUint32(m[8:], typ)
	ne.PutUint32(m[12:], uint32(len(data)))
	copy(m[16:], data)
	_ = p.ctl.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.ctl.Write(m[:]); err != nil {
		return fmt.Errorf("ibsim %s: control message %d: %w", p.node, typ, err)
	}
	n, err := p.ctl.Read(m[:])
	if err != nil {
		return fmt.Errorf("ibsim %s: control answer %d: %w", p.node, typ, err)
	}
	if n != simCtlLen || ne.Uint32(m[8:]) == simCtlError {
		return fmt.Errorf("ibsim %s: control message %d refused: %w", p.node, typ, ErrIBSim)
	}
	copy(data, m[16:])
	return nil
}

// PortAttr reads the port's attributes from ibsim now: its GID, LID, SM
// LID and SL, state, LMC and P_Key table (NodeInfo and PortInfo as the
// port's subnet management agent holds them, IBA 14.2.5.3 and 14.2.5.6).
func (p *IBSimPort) PortAttr() (ib.PortAttr, error) {
	var ni, pi, pk [simCtlDataLen]byte
	for _, q := range []struct {
		typ uint32
		buf []byte
	}{{simCtlGetNodeInfo, ni[:]}, {simCtlGetPortInfo, pi[:]}, {simCtlGetPKeys, pk[:]}} {
		if err := p.exchange(q.typ, q.buf); err != nil {
			return ib.PortAttr{}, err
		}
	}
	return decodePortAttr(ni[:], pi[:], pk[:]), nil
}

// decodePortAttr builds a port's attributes from ibsim's NodeInfo and
// PortInfo (IBA 14.2.5.3, 14.2.5.6) and P_Key table, each at least
// simCtlDataLen bytes.
func decodePortAttr(ni, pi, pk []byte) ib.PortAttr {
	be := binary.BigEndian
	var gid ib.GID
	copy(gid[:8], pi[8:16]) // PortInfo.GidPrefix
	// ibsim keeps the node GUID in NodeInfo.PortGUID; a CA port's GUID
	// is the node GUID plus the port number (what libumad2sim reports).
	be.PutUint64(gid[8:], be.Uint64(ni[12:20])+uint64(pi[28]))
	a := ib.PortAttr{
		Num:       1,
		LinkLayer: ib.LinkLayerInfiniBand,
		LID:       ib.LID(be.Uint16(pi[16:])),
		SMLID:     ib.LID(be.Uint16(pi[18:])),
		State:     ib.PortState(pi[32] & 0x0F),
		LMC:       pi[34] & 0x07,
		SMSL:      ib.SL(pi[36] & 0x0F),
		GIDs:      []ib.GID{gid},
	}
	for i := range simPKeyEntries {
		a.PKeys = append(a.PKeys, ib.PKey(be.Uint16(pk[2*i:])))
	}
	return a
}

// SetHandler installs the MAD handler (loop only).
func (p *IBSimPort) SetHandler(fn func(ib.MADAddress, []byte)) {
	p.loop.AssertHome("smtest IBSimPort.SetHandler")
	p.handler = fn
}

// Send hands one MAD to ibsim for dst. ibsim fills in the source LID.
func (p *IBSimPort) Send(dst ib.MADAddress, mad []byte) error {
	if p.closed.Load() {
		return fmt.Errorf("ibsim %s: MAD send: %w", p.node, ib.ErrClosed)
	}
	if len(mad) != ib.MADLen {
		return fmt.Errorf("ibsim %s: MAD send: %d bytes: %w", p.node, len(mad), ib.ErrMADLength)
	}
	var r [simReqLen]byte
	be := binary.BigEndian
	be.PutUint16(r[0:], uint16(dst.LID))
	be.PutUint32(r[8:], uint32(dst.QPN))
	be.PutUint32(r[12:], uint32(ib.QPNGSI)) // the sending agent is on QP1
	be.PutUint64(r[24:], ib.MADLen)
	copy(r[simReqMADOff:], mad)
	if mad[3]&byte(ib.MethodResponse) == 0 {
		tid := be.Uint64(mad[8:])
		p.tidMu.Lock()
		if _, ok := p.tids[uint32(tid)]; !ok {
			p.order = append(p.order, uint32(tid))
			if len(p.order) > tidWindow {
				delete(p.tids, p.order[0])
				p.order = p.order[1:]
			}
		}
		p.tids[uint32(tid)] = tid
		p.tidMu.Unlock()
	}
	if _, err := p.data.WriteToUnix(r[:], p.out); err != nil {
		return fmt.Errorf("ibsim %s: MAD send to %v: %w", p.node, dst.LID, err)
	}
	return nil
}

// read receives datagrams until the port closes.
func (p *IBSimPort) read() {
	defer close(p.done)
	buf := make([]byte, simReqLen+64)
	for {
		n, _, err := p.data.ReadFromUnix(buf)
		if err != nil {
			return
		}
		if n < simReqMADOff {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		p.in.Post(msg)
	}
}

// deliver hands the received MADs to the handler, with the TIDs of
// answers restored.
func (p *IBSimPort) deliver(in [][]byte) {
	for _, r := range in {
		if p.handler == nil || p.closed.Load() {
			return
		}
		src, mad, ok := decodeSimRequest(r)
		if !ok {
			continue
		}
		if mad[3]&byte(ib.MethodResponse) != 0 {
			p.tidMu.Lock()
			if tid, ok := p.tids[binary.BigEndian.Uint32(mad[12:])]; ok {
				binary.BigEndian.PutUint64(mad[8:], tid)
			}
			p.tidMu.Unlock()
		}
		p.handler(src, mad)
	}
}

// decodeSimRequest reads one of ibsim's MAD datagrams: the sender's
// address and the MAD, padded to 256 bytes (OpenSM writes SA responses
// only up to the end of the record). ok is false for a datagram too short
// to hold the header or a MAD header, or one with a non-zero status.
func decodeSimRequest(r []byte) (src ib.MADAddress, mad []byte, ok bool) {
	if len(r) < simReqMADOff+ib.MADHeaderLen {
		return src, nil, false
	}
	be := binary.BigEndian
	if be.Uint32(r[16:]) != 0 { // status
		return src, nil, false
	}
	mad = make([]byte, ib.MADLen)
	copy(mad, r[simReqMADOff:])
	src = ib.MADAddress{LID: ib.LID(be.Uint16(r[4:])), QPN: ib.QPN(be.Uint32(r[12:])) & ib.QPNMask, QKey: ib.QKeyGSI}
	return src, mad, true
}

// Close detaches from ibsim.
func (p *IBSimPort) Close() error {
	if p.closed.Swap(true) {
		return fmt.Errorf("ibsim %s: close: %w", p.node, ib.ErrClosed)
	}
	err := p.exchange(simCtlDisconnect, nil)
	p.data.Close()
	<-p.done
	p.ctl.Close()
	if p.in != nil {
		p.in.Close()
	}
	return err
}
