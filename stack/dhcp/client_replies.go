package dhcp

import (
	"bytes"
	"context"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/ipoibd/ipoibd/counter"
)

// bind configures l and enters BOUND. A renewal that kept the address
// and router leaves the NIC alone; one that changed them replaces the old
// configuration (and counts as a new binding if the address changed).
func (c *Client) bind(l *Lease, renewed bool) {
	if old := c.lease; old != nil && (old.Addr != l.Addr || old.Router != l.Router) {
		renewed = renewed && old.Addr == l.Addr
		c.lease = nil
		if err := c.netc.deconfigure(old); err != nil {
			counter.Inc(&c.stats.V.ConfigErrors)
			c.logf("%v", err)
		}
	}
	if c.lease == nil {
		if err := c.netc.configure(l); err != nil {
			counter.Inc(&c.stats.V.ConfigErrors)
			c.logf("%v", err)
		}
	}
	c.lease, c.pending, c.offer, c.reboot = l, nil, nil, nil
	c.saveLease(l)
	c.setState(StateBound)
	if renewed {
		c.logf("renewed %v", l)
		c.emit(EventRenewed, l)
	} else {
		c.logf("bound %v", l)
		c.emit(EventBound, l)
	}
	c.leaseTick()
}

// --- receiving ---

// handleMessage processes one datagram from the server port. Nothing in
// it may panic on any input: it is fuzzed (FuzzClientHandle).
func (c *Client) handleMessage(b []byte) {
	m, err := decode(b)
	if err != nil {
		counter.Inc(&c.stats.V.Malformed)
		return
	}
	if m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != c.xid {
		counter.Inc(&c.stats.V.Ignored)
		return
	}
	// RFC 6842 servers echo the client identifier; a reply carrying
	// someone else's is for someone else, whatever its xid.
	if id := m.Options.Get(dhcpv4.OptionClientIdentifier); id != nil && !bytes.Equal(id, c.id) {
		counter.Inc(&c.stats.V.Ignored)
		return
	}
	switch mt := m.MessageType(); {
	case mt == dhcpv4.MessageTypeOffer && c.state == StateSelecting:
		c.handleOffer(m)
	case mt == dhcpv4.MessageTypeAck && c.state == StateRequesting:
		c.handleSelectingAck(m)
	case mt == dhcpv4.MessageTypeAck && c.state == StateRebooting:
		c.handleRebootAck(m)
	case mt == dhcpv4.MessageTypeNak && c.state == StateRebooting:
		counter.Inc(&c.stats.V.Naks)
		l := c.reboot
		c.logf("NAK for %v in INIT-REBOOT: %q", l.Addr, m.Message())
		c.reboot = nil
		c.forgetLease()
		c.emit(EventNak, l)
		c.enterInit()
	case mt == dhcpv4.MessageTypeNak && c.state == StateRequesting:
		if !sameServer(m, addrOf(c.offer.ServerIdentifier())) {
			counter.Inc(&c.stats.V.Ignored)
			return
		}
		counter.Inc(&c.stats.V.Naks)
		c.logf("NAK for %v from %v: %q", c.offer.YourIPAddr, c.offer.ServerIdentifier(), m.Message())
		c.emit(EventNak, nil)
		c.enterInit()
	case mt == dhcpv4.MessageTypeAck && (c.state == StateRenewing || c.state == StateRebinding):
		l, err := leaseFromAck(m, c.reqSent)
		if err != nil {
			counter.Inc(&c.stats.V.Malformed)
			return
		}
		counter.Inc(&c.stats.V.Acks)
		c.bind(l, true)
	case mt == dhcpv4.MessageTypeNak && (c.state == StateRenewing || c.state == StateRebinding):
		counter.Inc(&c.stats.V.Naks)
		l := c.lease
		c.logf("NAK renewing %v: %q", l.Addr, m.Message())
		c.dropLease()
		c.emit(EventNak, l)
		c.enterInit()
	default:
		counter.Inc(&c.stats.V.Ignored)
	}
}

// handleOffer takes the first usable offer (RFC 2131 section 4.4.1 lets
// the client choose; waiting for more buys nothing on a fabric with one
// server) and requests it.
func (c *Client) handleOffer(m *dhcpv4.DHCPv4) {
	if !isUsableUnicast(addrOf(m.YourIPAddr)) || !isUsableUnicast(addrOf(m.ServerIdentifier())) {
		counter.Inc(&c.stats.V.Malformed)
		return
	}
	counter.Inc(&c.stats.V.Offers)
	c.offer = m
	c.attempt = 0
	c.reqSent = c.clock.Now()
	c.setState(StateRequesting)
	c.sendSelectingRequest()
	c.armIn(c.backoff())
}

// handleSelectingAck checks an ACK against the offer requested and binds
// it, after the Probe hook when there is one.
func (c *Client) handleSelectingAck(m *dhcpv4.DHCPv4) {
	ours := sameServer(m, addrOf(c.offer.ServerIdentifier())) && m.YourIPAddr.Equal(c.offer.YourIPAddr)
	c.acceptAck(m, ours)
}

// handleRebootAck binds the address asked for in INIT-REBOOT, after the
// Probe hook when there is one.
func (c *Client) handleRebootAck(m *dhcpv4.DHCPv4) {
	c.acceptAck(m, addrOf(m.YourIPAddr) == c.reboot.Addr.Addr())
}

// acceptAck turns an ACK that answers what the client asked for (ours)
// into a lease and binds it.
func (c *Client) acceptAck(m *dhcpv4.DHCPv4, ours bool) {
	if !ours {
		counter.Inc(&c.stats.V.Ignored)
		return
	}
	l, err := leaseFromAck(m, c.reqSent)
	if err != nil {
		counter.Inc(&c.stats.V.Malformed)
		return
	}
	counter.Inc(&c.stats.V.Acks)
	c.probeThenBind(l)
}

// probeThenBind binds an acknowledged lease, or first runs the Probe
// hook on it (PROBING) when there is one.
func (c *Client) probeThenBind(l *Lease) {
	c.stopTimer()
	if c.cfg.Probe == nil {
		c.bind(l, false)
		return
	}
	c.pending = l
	c.setState(StateProbing)
	ctx, cancel := context.WithCancel(context.Background())
	c.probeStop = cancel
	c.probeGen++
	gen, probe, addr := c.probeGen, c.cfg.Probe, l.Addr.Addr()
	go func() {
		inUse, err := probe(ctx, addr)
		if err != nil {
			inUse = false
		}
		c.post(event{kind: evProbe, gen: gen, inUse: inUse})
	}()
}

// probeDone binds the probed lease, or declines it and pauses.
func (c *Client) probeDone(inUse bool) {
	c.cancelProbe()
	l := c.pending
	if !inUse {
		c.bind(l, false)
		return
	}
	c.logf("%v is in use, declining it", l.Addr.Addr())
	c.sendDecline(l)
	c.pending, c.offer, c.reboot = nil, nil, nil
	c.forgetLease()
	c.emit(EventDeclined, l)
	c.setState(StateInit)
	c.armIn(c.cfg.DeclineWait)
}

// cancelProbe ends a running probe.
func (c *Client) cancelProbe() {
	if c.probeStop != nil {
		c.probeStop()
		c.probeStop = nil
	}
	c.probeGen++
}
