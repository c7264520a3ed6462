package ipoib

import "net/netip"

// Control plane: both methods run on the link's loop, as the stack's
// endpoint calls them.

// JoinLinkGroup joins the IPv4 group on the fabric for the gVisor endpoint
// (it makes *Link a stack.LinkGroups): the 20-byte link address the
// endpoint passes is derived from the group, so the group alone decides.
func (l *Link) JoinLinkGroup(group netip.Addr, _ []byte) error { return l.JoinMulticast(group) }

// LeaveLinkGroup leaves what JoinLinkGroup joined.
func (l *Link) LeaveLinkGroup(group netip.Addr, _ []byte) error { return l.LeaveMulticast(group) }
