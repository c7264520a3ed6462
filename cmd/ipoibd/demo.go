package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/sim"
)

// The demo's datagrams: a kind byte, the sender's index and a sequence
// number. They ride UD queue pairs on the IPoIB broadcast group's Q_Key,
// which is what the IPoIB link layer will carry in their place.
const (
	msgPing      = 'P'
	msgPong      = 'R'
	msgBroadcast = 'B'
	msgLen       = 9

	// pingTimeout is how long a host waits for its neighbour's answer
	// before sending again; pingTries bounds the attempts.
	pingTimeout = 200 * time.Millisecond
	pingTries   = 10
	// bcastEvery is how often host0 repeats its broadcast until every host
	// has heard one.
	bcastEvery = 100 * time.Millisecond

	demoRecvDepth = 128
	demoCQDepth   = 2 * demoRecvDepth
)

// demo runs every host's script on one loop: join the broadcast group,
// resolve a path to the next host, ping it over UD, and hear host0's
// broadcast.
type demo struct {
	loop  *aio.Context
	opt   simOptions
	start time.Time
	hosts []*demoHost

	timedOut    bool
	allJoinedAt time.Duration
	bcastTimer  *aio.Timer
	bcastSeq    uint32
}

// demoHost is one host's state.
type demoHost struct {
	d    *demo
	idx  int
	sim  *sim.Host
	dev  ib.Device
	attr ib.PortAttr
	cq   ib.CompletionQueue
	qp   ib.QueuePair
	mad  ib.MADPort
	sa   *ib.SAClient

	// qkey is the Q_Key the QP accepts and sends with: the default until
	// the join says otherwise (a host may answer a ping before its own
	// join completes).
	qkey     ib.QKey
	joined   bool
	joinedAt time.Duration
	group    ib.MCMemberRecord
	mcastAH  ib.AddressHandle
	path     ib.PathRecord
	ah       ib.AddressHandle
	replyAHs map[ib.LID]ib.AddressHandle

	seq       uint32
	sentAt    time.Time
	tries     int
	pingTimer *aio.Timer
	rtt       time.Duration
	pinged    bool
	heardB    bool
	sendErrs  int
	err       error

	wcs [32]ib.Completion
	msg [msgLen]byte
	wr  [1]ib.SendWR
	seg [1][]byte
}

func (d *demo) addHost(i int, h *sim.Host) (*demoHost, error) {
	dev, err := h.Open(d.loop)
	if err != nil {
		return nil, err
	}
	hd := &demoHost{d: d, idx: i, sim: h, dev: dev, replyAHs: map[ib.LID]ib.AddressHandle{}, qkey: ib.QKeyIPoIBDefault}
	if hd.attr, err = dev.QueryPort(1); err != nil {
		return nil, err
	}
	pkIdx, err := hd.attr.PKeyIndex(d.opt.pkey)
	if err != nil {
		return nil, err
	}
	if hd.cq, err = dev.CreateCQ(demoCQDepth); err != nil {
		return nil, err
	}
	hd.qp, err = dev.CreateUDQP(ib.QPConfig{
		Port: 1, PKeyIndex: pkIdx, QKey: hd.qkey,
		SendCQ: hd.cq, RecvCQ: hd.cq, SendDepth: 64, RecvDepth: demoRecvDepth,
		RecvBufSize: ib.GRHSize + d.opt.mtu.Bytes(),
	})
	if err != nil {
		return nil, err
	}
	hd.cq.SetHandler(hd.onCompletions)
	if hd.mad, err = dev.OpenMADPort(1); err != nil {
		return nil, err
	}
	if hd.sa, err = ib.NewSAClient(d.loop, hd.mad, hd.attr, ib.SAClientConfig{
		Timeout: 100 * time.Millisecond, MaxTimeout: time.Second, Tries: 8,
	}); err != nil {
		return nil, err
	}
	hd.pingTimer = d.loop.NewTimer(h.Name()+" ping", hd.sendPing)
	return hd, nil
}

func (d *demo) elapsed() time.Duration { return time.Since(d.start) }

// run drives the loop until every host has finished or the time is up.
func (d *demo) run() {
	deadline := d.loop.NewTimer("demo deadline", func() { d.timedOut = true })
	deadline.Reset(d.opt.timeout)
	d.bcastTimer = d.loop.NewTimer("demo broadcast", d.sendBroadcast)
	for _, h := range d.hosts {
		h.join()
	}
	for !d.finished() && !d.timedOut {
		d.loop.Poll(true)
	}
	deadline.Stop()
	d.bcastTimer.Stop()
	for _, h := range d.hosts {
		h.pingTimer.Stop()
		if h.err == nil && !(h.pinged && (h.heardB || h.idx == 0)) {
			h.err = fmt.Errorf("%s: %w", h.stage(), errDemoTimeout)
		}
		h.close()
	}
}

func (d *demo) finished() bool {
	for _, h := range d.hosts {
		if h.err == nil && !(h.pinged && (h.heardB || h.idx == 0)) {
			return false
		}
	}
	return true
}

// stage names what a host was doing, for the error of an unfinished one.
func (h *demoHost) stage() string {
	switch {
	case !h.joined:
		return "joining the broadcast group"
	case h.ah == nil:
		return "resolving the path to " + h.next().sim.Name()
	case !h.pinged:
		return fmt.Sprintf("pinging %s (%d tries)", h.next().sim.Name(), h.tries)
	}
	return "waiting for host0's broadcast"
}

func (h *demoHost) next() *demoHost { return h.d.hosts[(h.idx+1)%len(h.d.hosts)] }

func (h *demoHost) fail(err error) {
	if h.err == nil {
		h.err = err
	}
}

// join asks the SA for full membership of the IPoIB broadcast group,
// giving everything creating the group takes (IBA 15.2.5.17) in case this
// host is first.
func (h *demoHost) join() {
	mgid := ib.IPoIBBroadcastGID(h.d.opt.pkey)
	rec, mask := ib.MCMemberQuery(mgid, h.attr.GIDs[0], h.d.opt.pkey, ib.JoinFullMember)
	rec.QKey = ib.QKeyIPoIBDefault
	rec.MTUSelector, rec.MTU = ib.SelectorExactly, h.d.opt.mtu
	rec.RateSelector, rec.Rate = ib.SelectorExactly, h.attr.Rate
	rec.Scope = 2
	mask |= ib.MCMemberCompQKey | ib.MCMemberCompMTUSelector | ib.MCMemberCompMTU |
		ib.MCMemberCompRateSelector | ib.MCMemberCompRate | ib.MCMemberCompSL |
		ib.MCMemberCompFlowLabel | ib.MCMemberCompTClass
	if _, err := h.sa.SetMCMemberRecord(rec, mask, h.joinDone); err != nil {
		h.fail(err)
	}
}

func (h *demoHost) joinDone(rec ib.MCMemberRecord, err error) {
	if err != nil {
		h.fail(fmt.Errorf("join broadcast group: %w", err))
		return
	}
	if err := h.qp.AttachMcast(rec.MGID, rec.MLID); err != nil {
		h.fail(err)
		return
	}
	if err := h.qp.SetQKey(rec.QKey); err != nil {
		h.fail(err)
		return
	}
	ah, err := h.dev.CreateAH(ib.AddressVector{
		Port: 1, DLID: rec.MLID, SL: rec.SL, GlobalRoute: true, DGID: rec.MGID,
		FlowLabel: rec.FlowLabel, TClass: rec.TClass, HopLimit: rec.HopLimit,
	})
	if err != nil {
		h.fail(err)
		return
	}
	h.group, h.qkey, h.mcastAH, h.joined, h.joinedAt = rec, rec.QKey, ah, true, h.d.elapsed()
	h.d.hostJoined()

	q, mask := ib.PathQueryByGID(h.attr.GIDs[0], h.next().attr.GIDs[0], h.d.opt.pkey)
	if _, err := h.sa.GetPathRecord(q, mask, h.pathDone); err != nil {
		h.fail(err)
	}
}

func (d *demo) hostJoined() {
	for _, h := range d.hosts {
		if !h.joined {
			return
		}
	}
	d.allJoinedAt = d.elapsed()
	d.sendBroadcast()
}

func (h *demoHost) pathDone(rec ib.PathRecord, err error) {
	if err != nil {
		h.fail(fmt.Errorf("path to %s: %w", h.next().sim.Name(), err))
		return
	}
	ah, err := h.dev.CreateAH(ib.AddressVector{Port: 1, DLID: rec.DLID, SL: rec.SL, StaticRate: rec.Rate})
	if err != nil {
		h.fail(err)
		return
	}
	h.path, h.ah = rec, ah
	h.sendPing()
}

// sendPing sends (or resends) the ping to the next host; it is also the
// retry timer's callback.
func (h *demoHost) sendPing() {
	if h.pinged || h.err != nil {
		return
	}
	if h.tries == pingTries {
		h.fail(fmt.Errorf("ping %s: no answer after %d tries", h.next().sim.Name(), h.tries))
		return
	}
	h.tries++
	h.seq++
	h.sentAt = time.Now()
	h.send(h.ah, h.next().qp.QPN(), msgPing, uint32(h.idx), h.seq)
	h.pingTimer.Reset(pingTimeout)
}

// sendBroadcast has host0 send to the broadcast group until everyone has
// heard it.
func (d *demo) sendBroadcast() {
	all := true
	for _, h := range d.hosts[1:] {
		all = all && (h.heardB || h.err != nil)
	}
	if all {
		return
	}
	d.bcastSeq++
	h0 := d.hosts[0]
	h0.send(h0.mcastAH, ib.QPNMulticast, msgBroadcast, 0, d.bcastSeq)
	d.bcastTimer.Reset(bcastEvery)
}

func (h *demoHost) send(ah ib.AddressHandle, qpn ib.QPN, kind byte, from, seq uint32) {
	h.msg[0] = kind
	binary.BigEndian.PutUint32(h.msg[1:], from)
	binary.BigEndian.PutUint32(h.msg[5:], seq)
	h.seg[0] = h.msg[:]
	h.wr[0] = ib.SendWR{AH: ah, RemoteQPN: qpn, RemoteQKey: h.qkey, Data: h.seg[:]}
	if _, err := h.qp.PostSend(h.wr[:]); err != nil {
		// A full send queue is transient: count it, and let the retry
		// timers send again.
		h.sendErrs++
	}
}

// onCompletions drains the CQ: answers pings, takes pongs and notes
// broadcasts.
func (h *demoHost) onCompletions() {
	for {
		n, err := h.cq.Poll(h.wcs[:])
		if err != nil {
			h.fail(err)
			return
		}
		for i := range h.wcs[:n] {
			wc := &h.wcs[i]
			if wc.Kind == ib.WorkRecv {
				if wc.Status == ib.StatusSuccess {
					h.receive(wc)
				}
				if err := h.qp.RepostRecv(wc.ID); err != nil {
					h.fail(err)
				}
			}
		}
		if n < len(h.wcs) {
			return
		}
	}
}

func (h *demoHost) receive(wc *ib.Completion) {
	p := wc.Payload()
	if len(p) != msgLen {
		return
	}
	from, seq := binary.BigEndian.Uint32(p[1:]), binary.BigEndian.Uint32(p[5:])
	switch p[0] {
	case msgPing:
		ah, err := h.replyAH(wc)
		if err != nil {
			h.fail(err)
			return
		}
		h.send(ah, wc.SrcQPN, msgPong, from, seq)
	case msgPong:
		if from == uint32(h.idx) && seq == h.seq && !h.pinged {
			h.rtt, h.pinged = time.Since(h.sentAt), true
			h.pingTimer.Stop()
		}
	case msgBroadcast:
		h.heardB = true
	}
}

// replyAH answers a datagram the way ibv_ud_pingpong does: back to the
// completion's source LID and SL, one address handle per peer.
func (h *demoHost) replyAH(wc *ib.Completion) (ib.AddressHandle, error) {
	if ah, ok := h.replyAHs[wc.SLID]; ok {
		return ah, nil
	}
	ah, err := h.dev.CreateAH(ib.AddressVector{Port: 1, DLID: wc.SLID, SL: wc.SL})
	if err != nil {
		return nil, err
	}
	h.replyAHs[wc.SLID] = ah
	return ah, nil
}

func (h *demoHost) close() {
	if h.sa != nil {
		h.sa.Close()
	}
	if h.qp != nil {
		h.qp.Close()
	}
	if h.cq != nil {
		h.cq.Close()
	}
	if h.mad != nil {
		h.mad.Close()
	}
	h.dev.Close()
}

// simReport is what the demo prints, as a table or as JSON.
type simReport struct {
	OK      bool            `json:"ok"`
	Hosts   []simHostReport `json:"hosts"`
	Totals  simTotals       `json:"totals"`
	Fabric  simFabricReport `json:"fabric"`
	Pcap    string          `json:"pcap,omitempty"`
	Elapsed string          `json:"elapsed"`
}

type simHostReport struct {
	Host      string  `json:"host"`
	GID       string  `json:"gid"`
	LID       uint16  `json:"lid"`
	QPN       uint32  `json:"qpn"`
	MLID      uint16  `json:"mlid,omitempty"`
	QKey      string  `json:"qkey,omitempty"`
	GroupMTU  int     `json:"group_mtu,omitempty"`
	JoinMs    float64 `json:"join_ms,omitempty"`
	Neighbour string  `json:"neighbour"`
	PathDLID  uint16  `json:"path_dlid,omitempty"`
	RTTMicros float64 `json:"rtt_us,omitempty"`
	PingTries int     `json:"ping_tries"`
	HeardB    bool    `json:"heard_broadcast"`
	Error     string  `json:"error,omitempty"`
}

type simTotals struct {
	Hosts        int     `json:"hosts"`
	OK           int     `json:"ok"`
	Joined       int     `json:"joined"`
	PingsOK      int     `json:"pings_ok"`
	HeardB       int     `json:"heard_broadcast"`
	RTTP50Micros float64 `json:"rtt_p50_us"`
	RTTP99Micros float64 `json:"rtt_p99_us"`
	AllJoinedMs  float64 `json:"all_joined_ms"`
	SAQueries    uint64  `json:"sa_queries"`
	SARetries    uint64  `json:"sa_retries"`
}

type simFabricReport struct {
	Drops map[string]uint64 `json:"drops"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func (d *demo) report(elapsed time.Duration, f *sim.Fabric) *simReport {
	rep := &simReport{OK: true, Elapsed: elapsed.Round(time.Millisecond).String()}
	var rtts []time.Duration
	for _, h := range d.hosts {
		hr := simHostReport{
			Host: h.sim.Name(), GID: h.attr.GIDs[0].String(), LID: uint16(h.attr.LID),
			QPN: uint32(h.qp.QPN()), Neighbour: h.next().sim.Name(), PingTries: h.tries,
			HeardB: h.heardB || h.idx == 0,
		}
		if h.joined {
			rep.Totals.Joined++
			hr.MLID, hr.QKey, hr.GroupMTU = uint16(h.group.MLID), h.group.QKey.String(), h.group.MTU.Bytes()
			hr.JoinMs = ms(h.joinedAt)
		}
		if h.ah != nil {
			hr.PathDLID = uint16(h.path.DLID)
		}
		if h.pinged {
			rep.Totals.PingsOK++
			hr.RTTMicros = us(h.rtt)
			rtts = append(rtts, h.rtt)
		}
		if hr.HeardB {
			rep.Totals.HeardB++
		}
		if h.err != nil {
			hr.Error = h.err.Error()
			rep.OK = false
		} else {
			rep.Totals.OK++
		}
		st := h.sa.Stats()
		rep.Totals.SAQueries += st.Sent
		rep.Totals.SARetries += st.Retransmitted
		rep.Hosts = append(rep.Hosts, hr)
	}
	rep.Totals.Hosts = len(d.hosts)
	if len(rtts) > 0 {
		slices.Sort(rtts)
		rep.Totals.RTTP50Micros = us(rtts[len(rtts)/2])
		rep.Totals.RTTP99Micros = us(rtts[(len(rtts)*99)/100])
	}
	rep.Totals.AllJoinedMs = ms(d.allJoinedAt)
	c := f.Counters()
	rep.Fabric.Drops = map[string]uint64{}
	for r := sim.DropReason(0); r < sim.NumDropReasons; r++ {
		if n := c.Dropped(r); n > 0 {
			rep.Fabric.Drops[r.String()] = n
		}
	}
	return rep
}

func (r *simReport) printTable(w io.Writer) {
	fmt.Fprintf(w, "%-8s %-26s %6s %8s %6s %8s %-8s %6s %10s %s\n",
		"HOST", "GID", "LID", "QPN", "MLID", "JOIN", "PEER", "DLID", "RTT", "STATUS")
	for _, h := range r.Hosts {
		status := "ok"
		if h.Error != "" {
			status = h.Error
		}
		rtt := "-"
		if h.RTTMicros > 0 {
			rtt = fmt.Sprintf("%.1fus", h.RTTMicros)
		}
		fmt.Fprintf(w, "%-8s %-26s %#6x %#8x %#6x %7.1fms %-8s %#6x %10s %s\n",
			h.Host, h.GID, h.LID, h.QPN, h.MLID, h.JoinMs, h.Neighbour, h.PathDLID, rtt, status)
	}
	t := r.Totals
	fmt.Fprintf(w, "\n%d/%d hosts ok: %d joined (all by %.1fms), %d pings answered (RTT p50 %.1fus, p99 %.1fus), %d heard the broadcast; %d SA queries, %d retransmitted; took %s\n",
		t.OK, t.Hosts, t.Joined, t.AllJoinedMs, t.PingsOK, t.RTTP50Micros, t.RTTP99Micros, t.HeardB, t.SAQueries, t.SARetries, r.Elapsed)
	if len(r.Fabric.Drops) > 0 {
		fmt.Fprintf(w, "fabric drops: %v\n", r.Fabric.Drops)
	}
	if r.Pcap != "" {
		fmt.Fprintf(w, "raw IB capture: %s (open it in Wireshark)\n", r.Pcap)
	}
}
