// IPoIB on Ethernet link-layer (RoCE) ports.
//
// A RoCE port has no subnet manager and no subnet administrator: nobody
// answers a PathRecord query or an MCMemberRecord join. Everything the SA
// would hand out is therefore decided here, locally and the same way on
// every host of the link, so that hosts agree without talking:
//
//   - A multicast group is "joined" by attaching the QP to its MGID (MLID
//     0: Ethernet has no LIDs; the verbs driver also joins the matching
//     IPv6 group on the port's network interface). The group's Q_Key is
//     the configured one (0x0B1B by default), its MTU the port's active
//     MTU (which follows the NIC's MTU), its rate the port's.
//   - A unicast path is an address vector with a GRH whose DGID is the
//     peer's GID, taken from its IPoIB address; no query is sent and the
//     packet that asked goes out at once.
//
// Control plane, like join.go and path.go: these run on the device's
// loop. resolveLocal is also reached from the data path (xmit), where it
// replaces the SA query; it does not block.

package ipoib

import (
	"fmt"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/netdev"
)

// roceHopLimit is the GRH hop limit (the IPv6 hop limit or IPv4 TTL of
// the RoCEv2 packet) of every datagram the link sends on a RoCE port. An
// IPoIB link is one broadcast domain (RFC 4391 section 1), so nothing it
// sends should be routed beyond the first hop.
const roceHopLimit = 1

// LocalPaths counts unicast paths resolved locally on RoCE ports, where
// there is no SA to query.
var LocalPaths = netdev.MustRegister(netdev.RegisterCounter("ipoib_local_paths"))

// isRoCE reports whether attr describes a port where paths and groups
// are resolved locally.
func isRoCE(attr ib.PortAttr) bool { return attr.LinkLayer == ib.LinkLayerEthernet }

// roceMTU is the IB MTU the link uses on a RoCE port: the port's active
// MTU, which the verbs provider derives from the NIC's MTU (a 1500-byte
// Ethernet MTU gives 1024), or the configured broadcast MTU when the port
// does not say.
func (d *driver) roceMTU() ib.MTU {
	if a := d.attr.ActiveMTU; a.Valid() {
		return a
	}
	return d.cfg.BroadcastMTU
}

// roceRate is the static rate of the link's address vectors on a RoCE
// port: the port's own.
func (d *driver) roceRate() ib.Rate {
	if r := d.attr.Rate; r.Mbps() != 0 {
		return r
	}
	return d.cfg.BroadcastRate
}

// localGroupRecord is the MCMemberRecord an SA would have answered a join
// of g with, made up from local settings. The broadcast group takes the
// configuration and the port's MTU and rate; the other groups copy the
// broadcast group's, as on an IB fabric.
func (d *driver) localGroupRecord(g *group) ib.MCMemberRecord {
	rec, _ := d.joinRecord(g)
	rec.MLID = 0
	rec.PKey = d.l.PKey()
	if g.bcast {
		rec.MTU, rec.Rate = d.roceMTU(), d.roceRate()
		rec.HopLimit, rec.TClass, rec.FlowLabel = roceHopLimit, 0, 0
	}
	return rec
}

// startLocalJoin "joins" g on a RoCE port. The answer is delivered from a
// bottom half rather than at once, as an SA answer would be, so that the
// callers of startJoin (netdev's Open, xmitGroup, a flush) never see the
// link change under them. A forget or a newer join in the meantime makes
// the pending answer void.
func (d *driver) startLocalJoin(g *group) {
	rec := d.localGroupRecord(g)
	g.localSeq++
	seq := g.localSeq
	g.querying = true
	if g.status == groupIdle {
		g.status = groupJoining
	}
	d.loop.ScheduleOneshot("ipoib local join "+d.cfg.Name, func() {
		if !g.querying || g.localSeq != seq || d.closed {
			return
		}
		d.joinDone(g, rec, nil)
	})
}

// resolveLocal gives unicast peer p its path on a RoCE port: an address
// handle with a GRH to the peer's GID, from the interface's GID. The
// packets parked for p go out at once. A path that exists already only
// has its age renewed: nothing it was built from can have changed without
// a port event, which flushes it.
func (d *driver) resolveLocal(p *Peer, st *peerState) error {
	now := d.loop.Now()
	if _, ok := p.Path(); ok {
		st.stale, st.since = false, now
		return nil
	}
	mtu, rate := d.roceMTU(), d.roceRate()
	ah, err := d.dev.CreateAH(ib.AddressVector{
		Port: d.cfg.Port, SL: d.cfg.SL, StaticRate: rate,
		GlobalRoute: true, DGID: p.addr.GID, SGIDIndex: d.cfg.GIDIndex, HopLimit: roceHopLimit,
	})
	if err != nil {
		return fmt.Errorf("ipoib %s: local path to %v: %w", d.cfg.Name, p.addr.GID, err)
	}
	if err := d.cache.SetPath(st.ref, Path{SL: d.cfg.SL, Rate: rate, MTU: mtu, AH: ah}); err != nil {
		d.retireAH(ah)
		return fmt.Errorf("ipoib %s: local path to %v: %w", d.cfg.Name, p.addr.GID, err)
	}
	st.since, st.stale = now, false
	d.nd.Stats().Inc(LocalPaths)
	d.sendParked(st.ref)
	return nil
}
