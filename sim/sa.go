package sim

// The subnet administrator. Requests arrive as UD packets on QP1 of the
// SM's port and answers leave the same way, built with the ib codecs. It
// implements PathRecord Get and MCMemberRecord Get, Set (join) and Delete
// (leave); every other method and attribute is answered with the MAD
// status "method/attribute combination not supported". Fabric loop only.

import (
	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
)

// saState is the SA's scratch space, reused for every request.
type saState struct {
	req  ib.SAMAD
	resp ib.SAMAD
	mad  [ib.MADLen]byte
	pkt  ib.Packet
	psn  uint32
}

// Component masks a create-join must carry: OpenSM refuses to create a
// group unless the joiner states every parameter that is not negotiated
// with a selector (IBA 15.2.5.17 leaves it to the SA; OpenSM's rule is the
// de-facto one, and IPoIB clients follow it).
const mcCreateRequired = ib.MCMemberCompQKey | ib.MCMemberCompPKey | ib.MCMemberCompSL |
	ib.MCMemberCompFlowLabel | ib.MCMemberCompTClass | ib.MCMemberCompJoinState | ib.MCMemberCompPortGID

// saReceive handles one packet for the SA. pkt is the fabric's decode
// scratch; the reply is built in the SA's own.
func (f *Fabric) saReceive(in *port, pkt *ib.Packet, pkIdx int) {
	if pkt.DETH.QKey != ib.QKeyGSI {
		f.drop(DropQKey, in, nil)
		return
	}
	if !f.sm.up {
		f.drop(DropSMDown, in, nil)
		return
	}
	b := pkt.Payload
	if len(b) != ib.MADLen || b[0] != ib.MADBaseVersion || ib.Method(b[3]).IsResponse() {
		f.drop(DropMAD, in, nil)
		return
	}
	counter.Inc(&f.counters.V.Delivered)
	sa := &f.sa
	req, resp := &sa.req, &sa.resp
	if err := req.Decode(b); err != nil {
		// The header is good enough to answer: a bad class version or
		// RMPP header is the requester's to fix.
		var m ib.MAD
		_ = m.Decode(b)
		st := ib.MADStatusInvalidValue
		if b[2] != ib.SAClassVersion {
			st = ib.MADStatusBadVersion
		}
		m.Method = errorMethod(m.Method)
		m.Status = st
		_ = m.Encode(sa.mad[:])
		f.saSend(pkt, pkIdx, sa.mad[:])
		return
	}
	var status ib.SAStatus
	recLen := 0
	var madStatus ib.MADStatus
	switch {
	case req.AttributeID == ib.SAAttrPathRecord && req.Method == ib.MethodGet:
		var rec ib.PathRecord
		rec, status = f.saPathGet(req, pkt.LRH.SLID)
		recLen = ib.PathRecordLen
		resp.InitResponse(req, status, recLen)
		if status == ib.SAStatusOK {
			_ = rec.Encode(resp.Data[:])
		}
	case req.AttributeID == ib.SAAttrMCMemberRecord &&
		(req.Method == ib.MethodSet || req.Method == ib.MethodDelete || req.Method == ib.MethodGet):
		var rec ib.MCMemberRecord
		switch req.Method {
		case ib.MethodSet:
			rec, status = f.saJoin(req, pkt.LRH.SLID)
		case ib.MethodDelete:
			rec, status = f.saLeave(req, pkt.LRH.SLID)
		default:
			rec, status = f.saMCGet(req)
		}
		recLen = ib.MCMemberRecordLen
		resp.InitResponse(req, status, recLen)
		if status == ib.SAStatusOK {
			_ = rec.Encode(resp.Data[:])
		}
	default:
		madStatus = ib.MADStatusMethodAttrUnsupported
		resp.InitResponse(req, ib.SAStatusOK, 0)
		resp.Method = errorMethod(req.Method)
		resp.Status = madStatus
	}
	if resp.Status != 0 {
		// Errors echo the request's record, as OpenSM does, so the
		// requester can see what was refused.
		resp.Data = req.Data
	}
	if err := resp.Encode(sa.mad[:]); err != nil {
		f.drop(DropMAD, in, nil)
		return
	}
	f.saSend(pkt, pkIdx, sa.mad[:])
}

// saSend sends mad from the SM's QP1 back to the requester of pkt, on the
// partition of the SM port's P_Key table entry pkIdx that accepted the
// request (the SM's own, usually full, key: a limited member's key would
// not be accepted back by a limited member).
func (f *Fabric) saSend(req *ib.Packet, pkIdx int, mad []byte) {
	sa := &f.sa
	src := f.sm.port
	p := &sa.pkt
	*p = ib.Packet{}
	p.LRH.SL = req.LRH.SL
	p.LRH.DLID = req.LRH.SLID
	p.LRH.SLID = src.lid
	if req.HasGRH {
		p.HasGRH = true
		p.GRH.SGID = src.gids[0]
		p.GRH.DGID = req.GRH.SGID
		p.GRH.HopLmt = req.GRH.HopLmt
	}
	p.BTH.OpCode = ib.OpUDSendOnly
	p.BTH.PKey = src.pkeys[pkIdx]
	p.BTH.DestQP = req.DETH.SrcQP
	p.BTH.PSN = sa.psn & 0xFFFFFF
	sa.psn++
	p.DETH.QKey = ib.QKeyGSI
	p.DETH.SrcQP = ib.QPNGSI
	p.Payload = mad
	if err := f.dp.emit(src, p, nil, 0); err != nil {
		f.drop(DropMalformed, src, nil)
	}
}

// portByGID returns the active, addressed port whose default GID is gid.
func (f *Fabric) portByGID(gid ib.GID) *port {
	p := f.sm.byGID[gid]
	if p == nil || p.state != ib.PortActive || p.lid == 0 {
		return nil
	}
	return p
}

// portByLID returns the active port that owns lid.
func (f *Fabric) portByLID(lid ib.LID) *port {
	p := f.sm.lids[lid]
	if p == nil || p.state != ib.PortActive {
		return nil
	}
	return p
}

// commonPKey picks the partition a path between ports a and b uses: want,
// if the query names one, else the first key in a's table that b accepts
// (IBA 10.9.3 matching). ok is false when they share no partition.
func commonPKey(a, b *port, want ib.PKey, have bool) (ib.PKey, bool) {
	for _, k := range a.pkeys {
		if !k.Valid() || (have && k.Base() != want.Base()) {
			continue
		}
		for _, d := range b.pkeys {
			if k.Matches(d) {
				if have {
					return want, true
				}
				return k, true
			}
		}
	}
	return 0, false
}

// pickMTU applies an MTU selector to what a path or port offers.
func pickMTU(avail ib.MTU, sel ib.Selector, want ib.MTU) (ib.MTU, bool) {
	switch sel {
	case ib.SelectorGreaterThan:
		return avail, avail > want
	case ib.SelectorLessThan:
		m := min(avail, want-1)
		return m, want > ib.MTU256 && m.Valid()
	case ib.SelectorExactly:
		return want, want.Valid() && want <= avail
	default:
		return avail, true
	}
}

// rateCodes lists every rate encoding, for "less than" selectors.
var rateCodes = []ib.Rate{
	ib.Rate2_5Gbps, ib.Rate5Gbps, ib.Rate10Gbps, ib.Rate14Gbps, ib.Rate20Gbps,
	ib.Rate25Gbps, ib.Rate30Gbps, ib.Rate40Gbps, ib.Rate56Gbps, ib.Rate60Gbps,
	ib.Rate80Gbps, ib.Rate100Gbps, ib.Rate112Gbps, ib.Rate120Gbps, ib.Rate168Gbps,
	ib.Rate200Gbps, ib.Rate300Gbps,
}

// pickRate applies a rate selector, comparing speeds, not codes.
func pickRate(avail ib.Rate, sel ib.Selector, want ib.Rate) (ib.Rate, bool) {
	switch sel {
	case ib.SelectorGreaterThan:
		return avail, avail.Mbps() > want.Mbps()
	case ib.SelectorLessThan:
		best := ib.Rate(0)
		for _, r := range rateCodes {
			if r.Mbps() < want.Mbps() && r.Mbps() <= avail.Mbps() && r.Mbps() > best.Mbps() {
				best = r
			}
		}
		return best, best != 0
	case ib.SelectorExactly:
		return want, want.Mbps() != 0 && want.Mbps() <= avail.Mbps()
	default:
		return avail, true
	}
}

// pickLifeTime applies a PacketLifeTime selector; a longer lifetime than
// the subnet's is always safe to promise, a shorter one is not.
func pickLifeTime(avail uint8, sel ib.Selector, want uint8) (uint8, bool) {
	switch sel {
	case ib.SelectorGreaterThan:
		v := max(avail, want+1)
		return v, want < 63
	case ib.SelectorLessThan:
		return avail, avail < want
	case ib.SelectorExactly:
		return want, want >= avail && want <= 63
	default:
		return avail, true
	}
}

// selector reads a selector/value pair of a query: present says the
// value constrains the answer; a value without its selector bit means
// "exactly".
func selector(m, selBit, valBit ib.ComponentMask, sel ib.Selector) (ib.Selector, bool) {
	switch {
	case m.Has(selBit) && m.Has(valBit):
		return sel, true
	case m.Has(valBit):
		return ib.SelectorExactly, true
	}
	return ib.SelectorLargest, false
}

// saPathGet answers a PathRecord Get from the port at slid.
func (f *Fabric) saPathGet(req *ib.SAMAD, slid ib.LID) (ib.PathRecord, ib.SAStatus) {
	var q ib.PathRecord
	if err := q.Decode(req.Data[:]); err != nil {
		return q, ib.SAErrReqInvalid
	}
	m := req.ComponentMask
	var src *port
	switch {
	case m.Has(ib.PathRecCompSGID):
		src = f.portByGID(q.SGID)
	case m.Has(ib.PathRecCompSLID):
		src = f.portByLID(q.SLID)
	default:
		src = f.portByLID(slid)
	}
	if src == nil {
		return q, ib.SAErrNoRecords
	}
	r := ib.PathRecord{
		ServiceID: q.ServiceID,
		SGID:      src.gids[0],
		SLID:      src.lid,
		SL:        f.cfg.PathSL,
		NumbPath:  0,
	}
	var dst *port
	var g *group
	var mtu ib.MTU
	var rate ib.Rate
	switch {
	case m.Has(ib.PathRecCompDGID) && q.DGID.IsMulticast():
		g = f.sm.groups[q.DGID]
	case m.Has(ib.PathRecCompDGID):
		dst = f.portByGID(q.DGID)
	case m.Has(ib.PathRecCompDLID) && q.DLID.IsMulticast():
		g = f.sm.byMLID[q.DLID]
	case m.Has(ib.PathRecCompDLID):
		dst = f.portByLID(q.DLID)
	default:
		return q, ib.SAErrReqInsufficientComponents
	}
	switch {
	case g != nil:
		if g.member(src) < 0 || matchPKey(src.pkeys, g.pkey) < 0 {
			return q, ib.SAErrNoRecords
		}
		r.DGID, r.DLID, r.PKey, r.SL = g.mgid, g.mlid, g.pkey, g.sl
		r.FlowLabel, r.TClass, r.HopLimit = g.flowLabel, g.tclass, g.hopLimit
		mtu, rate = g.mtu, g.rate
		if m.Has(ib.PathRecCompPKey) && q.PKey.Base() != g.pkey.Base() {
			return q, ib.SAErrNoRecords
		}
	case dst != nil:
		pk, ok := commonPKey(src, dst, q.PKey, m.Has(ib.PathRecCompPKey))
		if !ok {
			return q, ib.SAErrNoRecords
		}
		var reached *port
		if src == dst {
			reached, mtu, rate, ok = src, src.activeMTU, src.rate, true
		} else {
			reached, mtu, rate, ok = f.route(src, dst.lid)
		}
		if !ok || reached != dst {
			return q, ib.SAErrNoRecords
		}
		r.DGID, r.DLID, r.PKey = dst.gids[0], dst.lid, pk
		r.Reversible = true
	default:
		return q, ib.SAErrNoRecords
	}
	if m.Has(ib.PathRecCompSL) {
		if g != nil && q.SL != g.sl {
			return q, ib.SAErrNoRecords
		}
		r.SL = q.SL
	}
	if m.Has(ib.PathRecCompFlowLabel) {
		r.FlowLabel = q.FlowLabel
	}
	if m.Has(ib.PathRecCompTClass) {
		r.TClass = q.TClass
	}
	if m.Has(ib.PathRecCompHopLimit) {
		r.HopLimit = q.HopLimit
	}
	ok := true
	if sel, have := selector(m, ib.PathRecCompMTUSelector, ib.PathRecCompMTU, q.MTUSelector); have {
		mtu, ok = pickMTU(mtu, sel, q.MTU)
	}
	if !ok {
		return q, ib.SAErrNoRecords
	}
	if sel, have := selector(m, ib.PathRecCompRateSelector, ib.PathRecCompRate, q.RateSelector); have {
		rate, ok = pickRate(rate, sel, q.Rate)
	}
	if !ok {
		return q, ib.SAErrNoRecords
	}
	plt := f.cfg.PacketLifeTime
	if sel, have := selector(m, ib.PathRecCompPacketLifeTimeSelector, ib.PathRecCompPacketLifeTime, q.PacketLifeTimeSelector); have {
		plt, ok = pickLifeTime(plt, sel, q.PacketLifeTime)
	}
	if !ok {
		return q, ib.SAErrNoRecords
	}
	r.MTUSelector, r.MTU = ib.SelectorExactly, mtu
	r.RateSelector, r.Rate = ib.SelectorExactly, rate
	r.PacketLifeTimeSelector, r.PacketLifeTime = ib.SelectorExactly, plt
	return r, ib.SAStatusOK
}

// joinTarget checks who a join or leave is for: PortGID must name an
// active port, and unless ProxyJoin is set it must be the requester.
func (f *Fabric) joinTarget(q *ib.MCMemberRecord, slid ib.LID) (*port, ib.SAStatus) {
	p := f.portByGID(q.PortGID)
	if p == nil {
		return nil, ib.SAErrReqInvalid
	}
	if !q.ProxyJoin && p.lid != slid {
		return nil, ib.SAErrReqInvalid
	}
	return p, ib.SAStatusOK
}

// saJoin answers an MCMemberRecord Set: a join, creating the group on the
// first full-member join.
func (f *Fabric) saJoin(req *ib.SAMAD, slid ib.LID) (ib.MCMemberRecord, ib.SAStatus) {
	var q ib.MCMemberRecord
	if err := q.Decode(req.Data[:]); err != nil {
		return q, ib.SAErrReqInvalid
	}
	m := req.ComponentMask
	if !m.Has(ib.MCMemberCompPortGID | ib.MCMemberCompJoinState) {
		return q, ib.SAErrReqInsufficientComponents
	}
	if q.JoinState == 0 {
		return q, ib.SAErrReqInvalid
	}
	p, st := f.joinTarget(&q, slid)
	if st != ib.SAStatusOK {
		return q, st
	}
	mgid := q.MGID
	if !m.Has(ib.MCMemberCompMGID) {
		mgid = ib.GID{}
	}
	if !mgid.IsZero() && !mgid.IsMulticast() {
		return q, ib.SAErrReqInvalid
	}
	var g *group
	if !mgid.IsZero() {
		g = f.sm.groups[mgid]
	}
	if g == nil {
		if q.JoinState&fullMember == 0 {
			return q, ib.SAErrNoRecords
		}
		var st ib.SAStatus
		if g, st = f.createGroup(&q, m, mgid, p); st != ib.SAStatusOK {
			return q, st
		}
	} else if st := g.admits(&q, m); st != ib.SAStatusOK {
		return q, st
	}
	// The joining port must be able to take the group's traffic.
	if matchPKey(p.pkeys, g.pkey) < 0 || p.activeMTU < g.mtu || p.rate.Mbps() < g.rate.Mbps() {
		if len(g.members) == 0 {
			f.deleteGroup(g)
		}
		return q, ib.SAErrReqInvalid
	}
	i := g.member(p)
	if i < 0 {
		g.members = append(g.members, member{port: p})
		i = len(g.members) - 1
	}
	g.members[i].state |= q.JoinState
	g.members[i].proxy = q.ProxyJoin
	f.buildTree(g)
	var r ib.MCMemberRecord
	g.record(&r)
	r.PortGID = p.gids[0]
	r.JoinState = g.members[i].state
	r.ProxyJoin = q.ProxyJoin
	return r, ib.SAStatusOK
}

// createGroup makes a group from a create-join, or says why it cannot.
func (f *Fabric) createGroup(q *ib.MCMemberRecord, m ib.ComponentMask, mgid ib.GID, p *port) (*group, ib.SAStatus) {
	if !m.Has(mcCreateRequired) {
		return nil, ib.SAErrReqInsufficientComponents
	}
	for _, pair := range [...][2]ib.ComponentMask{
		{ib.MCMemberCompMTUSelector, ib.MCMemberCompMTU},
		{ib.MCMemberCompRateSelector, ib.MCMemberCompRate},
		{ib.MCMemberCompPacketLifeTimeSelector, ib.MCMemberCompPacketLifeTime},
	} {
		if m.Has(pair[0]) != m.Has(pair[1]) {
			return nil, ib.SAErrReqInsufficientComponents
		}
	}
	if !q.PKey.Valid() || matchPKey(p.pkeys, q.PKey) < 0 || !q.SL.Valid() {
		return nil, ib.SAErrReqInvalid
	}
	// The creator's record is the group's, as OpenSM keeps it: MTU and
	// rate are worked out below, PacketLifeTime and Scope stay as sent,
	// whether the component mask names them or not (an IPoIB join names
	// neither, so OpenSM answers 0 for both; smtest compares).
	g := &group{
		qkey:      q.QKey,
		pkey:      q.PKey | ib.PKeyFullMember,
		sl:        q.SL,
		flowLabel: q.FlowLabel,
		tclass:    q.TClass,
		plt:       q.PacketLifeTime,
		scope:     q.Scope,
	}
	ok := true
	if m.Has(ib.MCMemberCompMTUSelector) {
		g.mtu, ok = pickMTU(p.activeMTU, q.MTUSelector, q.MTU)
	} else {
		g.mtu = min(f.cfg.Group.MTU, p.activeMTU)
	}
	if !ok {
		return nil, ib.SAErrReqInvalid
	}
	if m.Has(ib.MCMemberCompRateSelector) {
		g.rate, ok = pickRate(p.rate, q.RateSelector, q.Rate)
	} else {
		g.rate = slower(f.cfg.Group.Rate, p.rate)
	}
	if !ok {
		return nil, ib.SAErrReqInvalid
	}
	if m.Has(ib.MCMemberCompHopLimit) {
		g.hopLimit = q.HopLimit
	}
	if mgid.IsZero() {
		scope := uint8(ib.MGIDScopeLinkLocal)
		if m.Has(ib.MCMemberCompScope) && q.Scope != 0 {
			scope = q.Scope
		}
		mgid = f.allocMGID(scope, g.pkey)
	}
	g.mgid = mgid
	if g.mlid = f.allocMLID(); g.mlid == 0 {
		return nil, ib.SAErrNoResources
	}
	f.sm.groups[g.mgid] = g
	f.sm.byMLID[g.mlid] = g
	return g, ib.SAStatusOK
}

// admits checks a join to an existing group: every parameter the joiner
// states must agree with the group's.
func (g *group) admits(q *ib.MCMemberRecord, m ib.ComponentMask) ib.SAStatus {
	bad := m.Has(ib.MCMemberCompQKey) && q.QKey != g.qkey ||
		m.Has(ib.MCMemberCompPKey) && q.PKey.Base() != g.pkey.Base() ||
		m.Has(ib.MCMemberCompSL) && q.SL != g.sl ||
		m.Has(ib.MCMemberCompFlowLabel) && q.FlowLabel != g.flowLabel ||
		m.Has(ib.MCMemberCompTClass) && q.TClass != g.tclass ||
		m.Has(ib.MCMemberCompMLID) && q.MLID != 0 && q.MLID != g.mlid
	if bad {
		return ib.SAErrReqInvalid
	}
	if sel, have := selector(m, ib.MCMemberCompMTUSelector, ib.MCMemberCompMTU, q.MTUSelector); have {
		if got, ok := pickMTU(g.mtu, sel, q.MTU); !ok || (sel != ib.SelectorLessThan && got != g.mtu) {
			return ib.SAErrReqInvalid
		}
		if sel == ib.SelectorLessThan && g.mtu >= q.MTU {
			return ib.SAErrReqInvalid
		}
	}
	if sel, have := selector(m, ib.MCMemberCompRateSelector, ib.MCMemberCompRate, q.RateSelector); have {
		if got, ok := pickRate(g.rate, sel, q.Rate); !ok || (sel != ib.SelectorLessThan && got != g.rate) {
			return ib.SAErrReqInvalid
		}
		if sel == ib.SelectorLessThan && g.rate.Mbps() >= q.Rate.Mbps() {
			return ib.SAErrReqInvalid
		}
	}
	return ib.SAStatusOK
}

// saLeave answers an MCMemberRecord Delete: the port gives up the join
// states named, and the group goes when no full member is left.
func (f *Fabric) saLeave(req *ib.SAMAD, slid ib.LID) (ib.MCMemberRecord, ib.SAStatus) {
	var q ib.MCMemberRecord
	if err := q.Decode(req.Data[:]); err != nil {
		return q, ib.SAErrReqInvalid
	}
	m := req.ComponentMask
	if !m.Has(ib.MCMemberCompMGID | ib.MCMemberCompPortGID | ib.MCMemberCompJoinState) {
		return q, ib.SAErrReqInsufficientComponents
	}
	g := f.sm.groups[q.MGID]
	if g == nil || q.JoinState == 0 {
		return q, ib.SAErrReqInvalid
	}
	p, st := f.joinTarget(&q, slid)
	if st != ib.SAStatusOK {
		return q, st
	}
	i := g.member(p)
	if i < 0 {
		return q, ib.SAErrReqInvalid
	}
	var r ib.MCMemberRecord
	g.record(&r)
	r.PortGID = p.gids[0]
	r.JoinState = q.JoinState & g.members[i].state
	g.members[i].state &^= q.JoinState
	if g.members[i].state == 0 {
		g.members = append(g.members[:i], g.members[i+1:]...)
	}
	if g.hasFullMember() {
		f.buildTree(g)
	} else {
		f.deleteGroup(g)
	}
	return r, ib.SAStatusOK
}

// saMCGet answers an MCMemberRecord Get. With PortGID in the mask it
// returns that port's membership; without, the group itself (PortGID and
// JoinState zero, the view IBA gives unprivileged requesters). More than
// one match is ERR_TOO_MANY_RECORDS: a multi-record answer needs GetTable.
func (f *Fabric) saMCGet(req *ib.SAMAD) (ib.MCMemberRecord, ib.SAStatus) {
	var q ib.MCMemberRecord
	if err := q.Decode(req.Data[:]); err != nil {
		return q, ib.SAErrReqInvalid
	}
	m := req.ComponentMask
	var found ib.MCMemberRecord
	n := 0
	for _, g := range f.sm.groups {
		if m.Has(ib.MCMemberCompMGID) && q.MGID != g.mgid ||
			m.Has(ib.MCMemberCompMLID) && q.MLID != g.mlid ||
			m.Has(ib.MCMemberCompQKey) && q.QKey != g.qkey ||
			m.Has(ib.MCMemberCompPKey) && q.PKey.Base() != g.pkey.Base() ||
			m.Has(ib.MCMemberCompSL) && q.SL != g.sl {
			continue
		}
		if !m.Has(ib.MCMemberCompPortGID) {
			n++
			g.record(&found)
			continue
		}
		for _, mb := range g.members {
			if mb.port.gids[0] != q.PortGID {
				continue
			}
			if m.Has(ib.MCMemberCompJoinState) && mb.state&q.JoinState == 0 {
				continue
			}
			n++
			g.record(&found)
			found.PortGID = q.PortGID
			found.JoinState = mb.state
			found.ProxyJoin = mb.proxy
		}
	}
	switch n {
	case 0:
		return q, ib.SAErrNoRecords
	case 1:
		return found, ib.SAStatusOK
	}
	return q, ib.SAErrTooManyRecords
}

// errorMethod is the method of an answer that carries an error status: the
// request's response method when that has the response bit (GetResp for
// Get and Set), otherwise the request's method with the response bit set.
// A Trap's usual answer, TrapRepress, is an acknowledgement without the
// bit, so it cannot tell the sender its method was refused.
func errorMethod(m ib.Method) ib.Method {
	if r := m.Response(); r.IsResponse() {
		return r
	}
	return m | ib.MethodResponse
}
