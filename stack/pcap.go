package stack

import (
	"fmt"
	"io"
	"time"

	"github.com/ipoibd/ipoibd/counter"
	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ipoib"
	"github.com/ipoibd/ipoibd/ipoib/capture"
	"github.com/ipoibd/ipoibd/netdev"
)

// pcapTap writes what an endpoint sends and receives as a LINKTYPE_IPOIB
// capture in the 44-byte form tshark and tcpdump read: sent frames with
// the destination-address pseudo-header, received ones with the GRH form,
// which keeps the sender's QPN and GID.
type pcapTap struct {
	w *capture.Writer
}

// newPcapTap writes the capture's file header to w. The capture form
// needs 20-byte IPoIB addresses, so other links are refused.
func newPcapTap(w io.Writer, link netdev.LinkProtocol) (*pcapTap, error) {
	if link.AddrLen() != ipoib.AddrLen {
		return nil, fmt.Errorf("pcap tap: %s link has %d-byte addresses, the IPoIB capture form needs %d: %w",
			link.Name(), link.AddrLen(), ipoib.AddrLen, netdev.ErrInvalidConfig)
	}
	pw, err := capture.NewWriter(w)
	if err != nil {
		return nil, fmt.Errorf("pcap tap: %w", err)
	}
	return &pcapTap{w: pw}, nil
}

// transmit records a packet handed to the device for dst. It runs on the
// loop; a write error is counted, never returned to the data path.
func (t *pcapTap) transmit(e *Endpoint, dst []byte, proto uint16, payload []byte) {
	var a ipoib.Addr
	if a.Decode(dst) != nil || t.w.WriteTransmit(time.Now(), a, proto, payload) != nil {
		counter.Inc(&e.stats.V.TapErrors)
	}
}

// receive records a frame delivered from src to dst. The GRH is rebuilt
// from the addresses (SGID from the source, DGID from the destination,
// which is the port GID or the group's MGID), which is all a GRH-form
// capture keeps besides traffic class and flow label; the data flows up
// without the wire GRH, so the tap does not ask the driver for it.
func (t *pcapTap) receive(e *Endpoint, b *netdev.Buffer, proto uint16, dst, src []byte) {
	var s, d ipoib.Addr
	if s.Decode(src) != nil || d.Decode(dst) != nil {
		counter.Inc(&e.stats.V.TapErrors)
		return
	}
	grh := ib.GRH{IPVer: ib.GRHIPVer, SGID: s.GID, DGID: d.GID}
	if t.w.WriteReceive(time.Now(), &grh, s.QPN, proto, b.Bytes()) != nil {
		counter.Inc(&e.stats.V.TapErrors)
	}
}
