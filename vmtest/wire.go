package vmtest

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// wireCapture writes the frames the hub forwards to a pcap file: what
// crossed the VMs' Ethernet, bytes as the guests' kernels sent them.
// Every method is safe on a nil capture (none asked for) and from the
// hub's forwarding goroutines at once.
type wireCapture struct {
	mu sync.Mutex
	f  *os.File
	w  *pcapgo.Writer
}

// newWireCapture creates path as an Ethernet pcap.
func newWireCapture(path string) (*wireCapture, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("vmtest: wire capture: %w", err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmtest: wire capture %s: %w", path, err)
	}
	return &wireCapture{f: f, w: w}, nil
}

// write records one frame; errors end the capture, not the run.
func (c *wireCapture) write(frame []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(frame), Length: len(frame)}
	if err := c.w.WritePacket(ci, frame); err != nil {
		c.w = nil
	}
}

// close flushes and closes the file.
func (c *wireCapture) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = nil
	c.f.Close()
}

// noRDMAArg is the kernel command-line flag that tells the init script to
// leave the RDMA stack out (VM.NoRDMA).
func noRDMAArg(vm VM) string {
	if vm.NoRDMA {
		return " vmtest.nordma=1"
	}
	return ""
}
