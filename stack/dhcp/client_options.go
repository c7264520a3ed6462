// The client's options: what it asks for, and what every message it
// sends carries.

package dhcp

import (
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// requestedOptions is the parameter request list (option 55) the client
// sends: what Lease holds.
var requestedOptions = []dhcpv4.OptionCode{
	dhcpv4.OptionSubnetMask,
	dhcpv4.OptionRouter,
	dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionDomainName,
	dhcpv4.OptionIPAddressLeaseTime,
	dhcpv4.OptionRenewTimeValue,
	dhcpv4.OptionRebindingTimeValue,
}

// sameServer reports whether m comes from server, judged by its server
// identifier; a message without one is given the benefit of the doubt.
func sameServer(m *dhcpv4.DHCPv4, server netip.Addr) bool {
	sid := m.Options.Get(dhcpv4.OptionServerIdentifier)
	return sid == nil || addrOf(sid) == server
}

// message starts a client message of type mt in the current transaction
// with what every one carries: the RFC 4390 fields and option 61.
func (c *Client) message(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m := newIPoIBMessage(dhcpv4.OpcodeBootRequest, c.xid, mt)
	m.UpdateOption(dhcpv4.OptClientIdentifier(c.id))
	secs := c.clock.Now().Sub(c.began) / time.Second
	m.NumSeconds = uint16(min(max(secs, 0), 0xffff))
	return m
}

// withParams adds the parameter request list and hostname.
func (c *Client) withParams(m *dhcpv4.DHCPv4) {
	m.UpdateOption(dhcpv4.OptParameterRequestList(requestedOptions...))
	if c.cfg.Hostname != "" {
		m.UpdateOption(dhcpv4.OptHostName(c.cfg.Hostname))
	}
}
