package pcap

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Link types this package writes (the tcpdump.org LINKTYPE_ registry).
const (
	// LinkTypeERF is LINKTYPE_ERF: each record is an Endace ERF record.
	// Wireshark reads InfiniBand packets in this form (ERF type 21).
	LinkTypeERF layers.LinkType = 197
	// LinkTypeIPoIB is LINKTYPE_IPOIB: IP over InfiniBand with a 40-byte
	// pseudo-header before the 4-byte IPoIB header.
	LinkTypeIPoIB layers.LinkType = 242
	// LinkTypeInfiniBand is LINKTYPE_INFINIBAND, raw IB packets. The
	// format is defined, but tshark 4.0 cannot open such files; use
	// LinkTypeERF for raw packets instead.
	LinkTypeInfiniBand layers.LinkType = 247
)

// DefaultSnaplen is the snapshot length NewWriter callers use when they
// have no reason to cut packets short: libpcap's default, above any IB
// packet (8190 bytes) and any IPoIB connected-mode frame (65524 bytes plus
// the pseudo-header).
const DefaultSnaplen = 262144

// Writer writes a pcap file (nanosecond timestamps) of one link type.
// It is safe for concurrent use: each record is written whole under a
// lock, so goroutines may share one Writer and records never interleave.
// Write errors are sticky in the sense that the file is then corrupt; the
// caller should stop writing.
type Writer struct {
	linkType layers.LinkType
	snaplen  uint32

	mu      sync.Mutex
	pw      *pcapgo.Writer
	scratch []byte // joins WriteJoined's parts; guarded by mu
}

// NewWriter writes the pcap file header to w and returns a Writer for
// records of the given link type. Records longer than snaplen are cut to
// it (their original length is still recorded).
func NewWriter(w io.Writer, linkType layers.LinkType, snaplen uint32) (*Writer, error) {
	if snaplen == 0 {
		return nil, fmt.Errorf("pcap: new writer for link type %d: snaplen 0", linkType)
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(snaplen, linkType); err != nil {
		return nil, fmt.Errorf("pcap: write file header: %w", err)
	}
	return &Writer{linkType: linkType, snaplen: snaplen, pw: pw}, nil
}

// LinkType returns the link type in the file header; every record's bytes
// must be in that link type's form.
func (w *Writer) LinkType() layers.LinkType { return w.linkType }

// Snaplen returns the snapshot length in the file header.
func (w *Writer) Snaplen() uint32 { return w.snaplen }

// WritePacket writes one record: data, already in the link type's form,
// captured at ts. A zero ts stands for now.
func (w *Writer) WritePacket(ts time.Time, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(ts, data)
}

// WriteJoined writes one record whose bytes are head followed by body, for
// link types that put a pseudo-header before the packet (ERF, IPoIB), so
// the caller need not assemble them in a buffer of its own. It allocates
// only when a record is larger than any before it.
func (w *Writer) WriteJoined(ts time.Time, head, body []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scratch = append(append(w.scratch[:0], head...), body...)
	return w.writeLocked(ts, w.scratch)
}

// writeLocked writes one record; w.mu is held.
func (w *Writer) writeLocked(ts time.Time, data []byte) error {
	if ts.IsZero() {
		ts = time.Now()
	}
	ci := gopacket.CaptureInfo{Timestamp: ts, Length: len(data), CaptureLength: len(data)}
	if uint64(len(data)) > uint64(w.snaplen) {
		ci.CaptureLength = int(w.snaplen)
		data = data[:w.snaplen]
	}
	if err := w.pw.WritePacket(ci, data); err != nil {
		return fmt.Errorf("pcap: write %d-byte record: %w", ci.Length, err)
	}
	return nil
}
