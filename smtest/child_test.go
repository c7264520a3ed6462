package smtest

// The child process: ipoibd's control plane on an ibsim HCA, driven one
// command per line. It is this test binary, started by the harness with
// libumad2sim preloaded; run directly, TestChild skips.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/aio"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/verbs"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/netdev"
	"github.com/ipoibd/ipoibd/sim"
)

// reply is one answer of the child.
type reply struct {
	Err   string             `json:"err,omitempty"`
	Skip  string             `json:"skip,omitempty"`
	Attr  *ib.PortAttr       `json:"attr,omitempty"`
	Group *ipoib.GroupInfo   `json:"group,omitempty"`
	Path  *ib.PathRecord     `json:"path,omitempty"`
	MC    *ib.MCMemberRecord `json:"mc,omitempty"`
	Peers []ipoib.PeerInfo   `json:"peers,omitempty"`
	SA    *ib.SAClientStats  `json:"sa,omitempty"`
}

// childState is what the child's commands work on. Loop only.
type childState struct {
	loop *aio.Context
	fab  *sim.Fabric
	dev  *SplitDevice
	sa   *ib.SAClient
	link *ipoib.Link
	log  *slog.Logger
	// ca and port name the HCA port: "" and 1 on ibsim (libumad2sim's one
	// HCA), the real one in real-fabric mode.
	ca      string
	portNum int
}

// TestChild is the child process's main program.
func TestChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("the OpenSM tests' child process; runs only when they start it")
	}
	say := func(r reply) {
		b, _ := json.Marshal(r)
		fmt.Printf("%s%s\n", replyPrefix, b)
	}
	ca, port := os.Getenv(realCAEnv), 1
	if v := os.Getenv(realPortEnv); v != "" {
		port, _ = strconv.Atoi(v)
	}
	if ca == "" && !verbs.UMADSimulated() {
		say(reply{Err: "libumad2sim is not preloaded"})
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	loop, err := aio.New(aio.WithName("smtest-child"))
	if err != nil {
		say(reply{Err: err.Error()})
		return
	}
	stop := loop.Start()
	defer func() { _ = stop() }()

	cs := &childState{loop: loop, log: log, ca: ca, portNum: port}
	var startErr error
	if err := loop.Call("smtest start", func() { startErr = cs.start() }); err != nil {
		startErr = err
	}
	if startErr != nil {
		if errors.Is(startErr, ib.ErrUnavailable) {
			say(reply{Skip: "OpenSM on ibsim tests skipped: " + startErr.Error()})
		} else {
			say(reply{Err: startErr.Error()})
		}
		return
	}
	defer func() { _ = loop.Call("smtest stop", cs.stop) }()
	say(reply{})

	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return
		}
		log.Info("command", "line", sc.Text())
		r := cs.command(f)
		log.Info("answer", "err", r.Err)
		say(r)
	}
}

// start builds the split device: a simulator host with the ibsim HCA's
// port GUID, LID and P_Key table as the data plane, the HCA's MAD port
// and port attributes as the control plane.
func (cs *childState) start() error {
	attr, err := verbs.QueryUMADPort(cs.ca, cs.portNum)
	if err != nil {
		return err
	}
	cs.log.Info("ibsim port", "lid", attr.LID, "sm", attr.SMLID, "state", attr.State, "gid", attr.GIDs[0], "pkeys", attr.PKeys)
	prefix := uint64(0)
	for _, b := range attr.GIDs[0][:8] {
		prefix = prefix<<8 | uint64(b)
	}
	cs.fab, err = sim.New(cs.loop, sim.Config{Name: fmt.Sprintf("smtest%d", os.Getpid()), SubnetPrefix: prefix})
	if err != nil {
		return err
	}
	h, err := cs.fab.AddHost("hca", sim.HostConfig{PortGUIDs: []ib.GUID{attr.GUID()}, LIDs: []ib.LID{attr.LID}, PKeys: attr.PKeys})
	if err != nil {
		return err
	}
	if err := cs.fab.Start(); err != nil {
		return err
	}
	data, err := h.Open(cs.loop)
	if err != nil {
		return err
	}
	mad, err := verbs.OpenMADPort(cs.loop, cs.ca, cs.portNum)
	if err != nil {
		_ = data.Close()
		return err
	}
	cs.dev = NewSplitDevice(data, attr, mad)
	return cs.newSA()
}

// newSA (re)opens the SA client the path and raw join commands use.
func (cs *childState) newSA() error {
	if cs.sa != nil {
		_ = cs.sa.Close()
	}
	attr, err := cs.dev.QueryPort(1)
	if err != nil {
		return err
	}
	port, err := cs.dev.OpenMADPort(1)
	if err != nil {
		return err
	}
	cs.sa, err = ib.NewSAClient(cs.loop, port, attr, ib.SAClientConfig{})
	return err
}

// stop closes everything.
func (cs *childState) stop() {
	if cs.link != nil {
		_ = cs.link.Close()
	}
	if cs.sa != nil {
		_ = cs.sa.Close()
	}
	if cs.dev != nil {
		_ = cs.dev.Close()
	}
	if cs.fab != nil {
		_ = cs.fab.Close()
	}
}

// call runs fn on the loop.
func (cs *childState) call(fn func()) {
	_ = cs.loop.Call("smtest command", fn)
}

// command runs one command line:
//
//	attr                       the control plane's port attributes
//	up <pkey>                  open an IPoIB link on the partition, wait for the broadcast join
//	group                      the link's broadcast group
//	wait-rejoin <unix-nanos>   wait until the broadcast group is joined after the given time
//	join <ipv4> / leave <ipv4> IP multicast group join and leave through the link
//	joinleave <ipv4>...        join and at once leave each group, in one turn of the loop,
//	                           so that every leave finds its join still on its way to the SA
//	peers                      the link's peer cache
//	sajoin <pkey> [<ipv4>]     a raw join, without the link, of the partition's broadcast group
//	                           (or of an IPv4 group that exists)
//	path <gid>                 the PathRecord ipoib asks for to reach gid
//	sastats                    the raw SA client's counters
//	resolve <gid> <since-unix-nanos>  send a packet to the IPoIB address (QPN peerQPN, gid) through the
//	                           link and wait until ipoib has a path for it resolved after the given time
//	port <event> <lid> <smlid> <state>  the port changed: new values and the event
func (cs *childState) command(f []string) reply {
	switch f[0] {
	case "attr":
		var a ib.PortAttr
		var err error
		cs.call(func() { a, err = cs.dev.QueryPort(1) })
		return errReply(err, reply{Attr: &a})
	case "up":
		return cs.up(f)
	case "group":
		var g ipoib.GroupInfo
		cs.call(func() { g = cs.link.Group() })
		return reply{Group: &g}
	case "wait-rejoin":
		if len(f) != 2 {
			return reply{Err: "usage: wait-rejoin <unix-nanos>"}
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return reply{Err: err.Error()}
		}
		return cs.waitGroup(func(g ipoib.GroupInfo) bool { return g.Joined && g.JoinedAt.UnixNano() > ns })
	case "join", "leave":
		return cs.multicast(f)
	case "joinleave":
		return cs.joinLeave(f[1:])
	case "peers":
		var p []ipoib.PeerInfo
		var err error
		cs.call(func() { p, err = cs.link.Peers() })
		return errReply(err, reply{Peers: p})
	case "sastats":
		var st ib.SAClientStats
		cs.call(func() { st = cs.sa.Stats() })
		return reply{SA: &st}
	case "sajoin":
		return cs.saJoin(f)
	case "path":
		return cs.path(f)
	case "resolve":
		return cs.resolve(f)
	case "port":
		return cs.port(f)
	}
	return reply{Err: fmt.Sprintf("unknown command %q", f[0])}
}

// errReply is r, or the error.
func errReply(err error, r reply) reply {
	if err != nil {
		return reply{Err: err.Error()}
	}
	return r
}

// parsePKey reads a P_Key in hex.
func parsePKey(s string) (ib.PKey, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 16)
	return ib.PKey(v), err
}

// up opens the IPoIB link and waits for the broadcast group.
func (cs *childState) up(f []string) reply {
	if len(f) != 2 {
		return reply{Err: "usage: up <pkey>"}
	}
	pkey, err := parsePKey(f[1])
	if err != nil {
		return reply{Err: err.Error()}
	}
	cs.call(func() {
		cs.link, err = ipoib.New(cs.loop, cs.dev, ipoib.Config{Name: "ib0", PKey: pkey, Logger: cs.log})
		if err == nil {
			err = cs.link.NetDev().Open()
		}
	})
	if err != nil {
		return reply{Err: err.Error()}
	}
	return cs.waitGroup(func(g ipoib.GroupInfo) bool { return g.Joined })
}

// waitGroup polls the broadcast group until ok, for 60 seconds.
func (cs *childState) waitGroup(ok func(ipoib.GroupInfo) bool) reply {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var g ipoib.GroupInfo
		cs.call(func() { g = cs.link.Group() })
		if ok(g) {
			return reply{Group: &g}
		}
		if time.Now().After(deadline) {
			return reply{Err: fmt.Sprintf("broadcast group not joined as expected within 60s: %+v", g), Group: &g}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// multicast joins or leaves an IPv4 group through the link and waits
// until the link's peer cache shows it joined, or no longer shows it.
func (cs *childState) multicast(f []string) reply {
	if len(f) != 2 {
		return reply{Err: "usage: join|leave <ipv4>"}
	}
	ip, err := netip.ParseAddr(f[1])
	if err != nil {
		return reply{Err: err.Error()}
	}
	var mgid []byte
	cs.call(func() {
		if f[0] == "join" {
			err = cs.link.JoinMulticast(ip)
		} else {
			err = cs.link.LeaveMulticast(ip)
		}
		if err == nil {
			mgid, err = cs.link.Multicast(ip, nil)
		}
	})
	if err != nil {
		return reply{Err: err.Error()}
	}
	// A group left stays in the peer cache, unpinned, until evicted.
	done := func(state string) bool { return state == "joined" }
	if f[0] == "leave" {
		done = func(state string) bool { return state != "joined" && state != "joining" }
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var peers []ipoib.PeerInfo
		cs.call(func() { peers, err = cs.link.Peers() })
		if err != nil {
			return reply{Err: err.Error()}
		}
		state := ""
		for _, p := range peers {
			if p.Multicast && p.Addr == cs.link.AddrString(mgid) {
				state = p.State
			}
		}
		if done(state) {
			return reply{Peers: peers}
		}
		if time.Now().After(deadline) {
			return reply{Err: fmt.Sprintf("%s group %v: still %q after 30s", f[0], ip, state), Peers: peers}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// joinLeave joins and leaves each group before the loop gets to read any
// answer from the SA.
func (cs *childState) joinLeave(groups []string) reply {
	ips := make([]netip.Addr, len(groups))
	for i, s := range groups {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return reply{Err: err.Error()}
		}
		ips[i] = ip
	}
	var err error
	cs.call(func() {
		for _, ip := range ips {
			if err = cs.link.JoinMulticast(ip); err != nil {
				return
			}
			if err = cs.link.LeaveMulticast(ip); err != nil {
				return
			}
		}
	})
	return errReply(err, reply{})
}

// saJoin sends the join of a partition's broadcast group, or of an IPv4
// group on it, through the SA client alone, with the components ipoib
// sends for an existing group.
func (cs *childState) saJoin(f []string) reply {
	if len(f) != 2 && len(f) != 3 {
		return reply{Err: "usage: sajoin <pkey> [<ipv4>]"}
	}
	pkey, err := parsePKey(f[1])
	if err != nil {
		return reply{Err: err.Error()}
	}
	mgid := ipoib.BroadcastGID(pkey)
	if len(f) == 3 {
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			return reply{Err: err.Error()}
		}
		if mgid, err = ipoib.IPv4MulticastGID(pkey, ip); err != nil {
			return reply{Err: err.Error()}
		}
	}
	return cs.askSA(func(answer func(reply)) error {
		q, mask := ib.MCMemberQuery(mgid, cs.sa.PortGID(), pkey|ib.PKeyFullMember, ib.JoinFullMember)
		_, err := cs.sa.SetMCMemberRecord(q, mask, func(r ib.MCMemberRecord, err error) {
			answer(errReply(err, reply{MC: &r}))
		})
		return err
	})
}

// path asks the SA for the path to a GID, as ipoib does for a peer.
func (cs *childState) path(f []string) reply {
	if len(f) != 2 {
		return reply{Err: "usage: path <gid>"}
	}
	dgid, err := ib.ParseGID(f[1])
	if err != nil {
		return reply{Err: err.Error()}
	}
	return cs.askSA(func(answer func(reply)) error {
		q, mask := ib.PathQueryByGID(cs.sa.PortGID(), dgid, ib.PKeyDefault)
		_, err := cs.sa.GetPathRecord(q, mask, func(r ib.PathRecord, err error) {
			answer(errReply(err, reply{Path: &r}))
		})
		return err
	})
}

// askSA sends an SA query on the loop (send starts it, with answer for
// its callback) and waits for the answer, or returns why it was not sent.
func (cs *childState) askSA(send func(answer func(reply)) error) reply {
	done := make(chan reply, 1)
	var err error
	cs.call(func() { err = send(func(r reply) { done <- r }) })
	if err != nil {
		return reply{Err: err.Error()}
	}
	return <-done
}

// port records the port's new LID, SM LID and state and raises the event.
func (cs *childState) port(f []string) reply {
	if len(f) != 5 {
		return reply{Err: "usage: port <event> <lid> <smlid> <state>"}
	}
	var ev ib.EventType
	for e := ib.EventType(0); e < 32; e++ {
		if e.String() == f[1] {
			ev = e
		}
	}
	lid, err1 := strconv.ParseUint(f[2], 0, 16)
	sm, err2 := strconv.ParseUint(f[3], 0, 16)
	st, err3 := strconv.ParseUint(f[4], 0, 8)
	if ev == 0 || errors.Join(err1, err2, err3) != nil {
		return reply{Err: fmt.Sprintf("bad port command %q", strings.Join(f, " "))}
	}
	var err error
	cs.call(func() {
		var a ib.PortAttr
		if a, err = cs.dev.QueryPort(1); err != nil {
			return
		}
		a.LID, a.SMLID, a.State = ib.LID(lid), ib.LID(sm), ib.PortState(st)
		cs.dev.PortChanged(a, ev)
		// The raw SA client follows the port as ipoib's does.
		err = cs.sa.UpdatePort(a)
	})
	return errReply(err, reply{})
}

// peerQPN is the QPN of the IPoIB addresses resolve sends to: any valid
// one, since the packet's fate does not matter, only the path query.
const peerQPN = 0x000049

// resolve makes ipoib resolve the path to a peer the way it does for
// traffic: a packet is transmitted to the peer's IPoIB address, ipoib
// parks it and asks the SA for the path. It waits until the peer cache
// shows the path resolved after since and returns the peer's entry.
func (cs *childState) resolve(f []string) reply {
	if len(f) != 3 {
		return reply{Err: "usage: resolve <gid> <since-unix-nanos>"}
	}
	gid, err := ib.ParseGID(f[1])
	if err != nil {
		return reply{Err: err.Error()}
	}
	since, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return reply{Err: err.Error()}
	}
	var hw [ipoib.AddrLen]byte
	if err := (ipoib.Addr{QPN: peerQPN, GID: gid}).Encode(hw[:]); err != nil {
		return reply{Err: err.Error()}
	}
	var addr string
	cs.call(func() { addr = cs.link.AddrString(hw[:]) })
	deadline := time.Now().Add(30 * time.Second)
	for sent := false; ; {
		var peers []ipoib.PeerInfo
		cs.call(func() {
			if !sent {
				nd := cs.link.NetDev()
				var b *netdev.Buffer
				if b, err = nd.AllocBuffer(); err != nil {
					return
				}
				if err = b.Append(make([]byte, 28)); err != nil {
					return
				}
				// The frame may be refused once the path is known and
				// the data plane cannot reach the peer; only the query
				// matters here.
				_ = nd.Transmit(b, hw[:], 0x0800)
				sent = true
			}
			peers, err = cs.link.Peers()
		})
		if err != nil {
			return reply{Err: err.Error()}
		}
		for _, p := range peers {
			if p.Addr == addr && p.State == "resolved" && time.Now().Add(-p.Age).UnixNano() > since {
				return reply{Peers: []ipoib.PeerInfo{p}}
			}
		}
		if time.Now().After(deadline) {
			return reply{Err: fmt.Sprintf("path to %v not resolved within 30s", gid), Peers: peers}
		}
		time.Sleep(50 * time.Millisecond)
	}
}
