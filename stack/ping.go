package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping limits.
const (
	// PingMaxSize is the largest echo payload Ping sends: an IPv4
	// datagram's 65535 bytes less the 20-byte IPv4 and 8-byte ICMP
	// headers (RFC 791, RFC 792).
	PingMaxSize = 65535 - header.IPv4MinimumSize - header.ICMPv4MinimumSize
	// pingStampLen is the part of the payload Ping uses to match a reply
	// to its request: an 8-byte run cookie and an 8-byte request index.
	pingStampLen = 16
	// PingLinger is how long Ping waits for replies after its last
	// request, unless ctx ends first.
	PingLinger = time.Second
)

// PingStats summarises a Ping run.
type PingStats struct {
	// Sent counts echo requests handed to the stack; SendErrors those it
	// refused (counted in Sent too, and lost).
	Sent, SendErrors int
	// Received counts distinct requests answered; Duplicates further
	// answers to a request already answered; Corrupt replies whose
	// payload differed from the request's.
	Received, Duplicates, Corrupt int
	// Loss is the fraction of Sent not answered, 0 to 1.
	Loss float64
	// RTT statistics over the answered requests; zero when none were.
	Min, Avg, Max, StdDev, P50, P99 time.Duration
	// RTTs holds the round-trip time of each answered request in the
	// order the answers came.
	RTTs []time.Duration
}

// String formats the summary the way ping(8) ends.
func (p PingStats) String() string {
	return fmt.Sprintf("%d transmitted, %d received, %.1f%% loss, rtt min/avg/max/mdev = %v/%v/%v/%v, p50 %v, p99 %v",
		p.Sent, p.Received, 100*p.Loss, p.Min, p.Avg, p.Max, p.StdDev, p.P50, p.P99)
}

// PingReply is one answered request, as PingWith reports it.
type PingReply struct {
	// Seq is the request's index, from 0.
	Seq int
	// Bytes is the ICMP message's length (header and payload).
	Bytes int
	// TTL is the reply's IPv4 time to live.
	TTL uint8
	// RTT is the round-trip time.
	RTT time.Duration
}

// PingOptions are PingWith's optional settings.
type PingOptions struct {
	// Linger is how long to wait for replies after the last request;
	// zero means PingLinger.
	Linger time.Duration
	// OnReply, if set, is called for each answered request as it comes,
	// on Ping's goroutine.
	OnReply func(PingReply)
}

// Ping is PingWith with the default options.
func Ping(ctx context.Context, s *gvstack.Stack, dst netip.Addr, count int, interval time.Duration, size int) (PingStats, error) {
	return PingWith(ctx, s, dst, count, interval, size, PingOptions{})
}

// PingWith sends count ICMP echo requests of size payload bytes to dst from
// gVisor stack s, interval apart, and collects the replies until all have
// come, PingLinger after the last request, or ctx ends. It uses a gVisor
// ICMP datagram endpoint, as ping(8) uses a ping socket: gVisor chooses
// the identifier and delivers only replies bearing it. A reply is matched
// to its request by sequence number and, when size allows (16 bytes or
// more), by a cookie and index in the payload, so late or foreign replies
// never skew the figures; every reply's payload is compared with what was
// sent. It returns the statistics with an error only when it could not
// ping at all or ctx ended before it finished sending.
func PingWith(ctx context.Context, s *gvstack.Stack, dst netip.Addr, count int, interval time.Duration, size int, opt PingOptions) (PingStats, error) {
	var st PingStats
	linger := opt.Linger
	if linger <= 0 {
		linger = PingLinger
	}
	if !dst.Is4() || count <= 0 || interval < 0 || size < 0 || size > PingMaxSize {
		return st, fmt.Errorf("ping %v: count %d, interval %v, size %d: %w", dst, count, interval, size, ErrBadOptions)
	}
	var wq waiter.Queue
	ep, e := s.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if e != nil {
		return st, fmt.Errorf("ping %v: ICMP endpoint: %w: %s", dst, ErrGVisor, e)
	}
	defer ep.Close()
	if e := ep.Connect(tcpip.FullAddress{Addr: addrToTCPIP(dst)}); e != nil {
		return st, fmt.Errorf("ping %v: connect: %w: %s", dst, ErrGVisor, e)
	}
	local, e := ep.GetLocalAddress()
	if e != nil {
		return st, fmt.Errorf("ping %v: local address: %w: %s", dst, ErrGVisor, e)
	}
	ident := local.Port
	ep.SocketOptions().SetReceiveTTL(true)

	we, readable := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)

	var cookie [8]byte
	_, _ = rand.Read(cookie[:])
	payload := func(i int, b []byte) []byte {
		p := b[:size]
		for j := range p {
			p[j] = byte(i + j)
		}
		if size >= pingStampLen {
			copy(p, cookie[:])
			binary.BigEndian.PutUint64(p[8:], uint64(i))
		}
		return p
	}

	sentAt := make([]time.Time, 0, min(count, 1<<16))
	answered := make([]bool, 0, cap(sentAt))
	req := make([]byte, header.ICMPv4MinimumSize+size)
	want := make([]byte, size)
	var rbuf bytes.Buffer

	send := func() {
		i := len(sentAt)
		h := header.ICMPv4(req)
		h.SetType(header.ICMPv4Echo)
		h.SetCode(0)
		h.SetIdent(ident)
		h.SetSequence(uint16(i))
		payload(i, req[header.ICMPv4MinimumSize:])
		sentAt = append(sentAt, time.Now())
		answered = append(answered, false)
		st.Sent++
		var r bytes.Reader
		r.Reset(req)
		if _, e := ep.Write(&r, tcpip.WriteOptions{}); e != nil {
			st.SendErrors++
		}
	}
	// index maps a reply's sequence number and payload to the request it
	// answers, or -1.
	index := func(seq uint16, p []byte) int {
		if size >= pingStampLen {
			if len(p) < pingStampLen || !bytes.Equal(p[:8], cookie[:]) {
				return -1
			}
			i := binary.BigEndian.Uint64(p[8:])
			if i >= uint64(len(sentAt)) || uint16(i) != seq {
				return -1
			}
			return int(i)
		}
		// Without a stamp, the newest request with this sequence number.
		last := len(sentAt) - 1
		if last < 0 {
			return -1
		}
		i := last - int(uint16(last)-seq)
		if i < 0 {
			return -1
		}
		return i
	}
	drain := func() {
		for {
			rbuf.Reset()
			res, e := ep.Read(&rbuf, tcpip.ReadOptions{})
			if e != nil || res.Count == 0 {
				return
			}
			now := time.Now()
			h := header.ICMPv4(rbuf.Bytes())
			if len(h) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4EchoReply || h.Ident() != ident {
				continue
			}
			p := h.Payload()
			i := index(h.Sequence(), p)
			if i < 0 {
				continue
			}
			if !bytes.Equal(p, payload(i, want)) {
				st.Corrupt++
				continue
			}
			if answered[i] {
				st.Duplicates++
				continue
			}
			answered[i] = true
			st.Received++
			st.RTTs = append(st.RTTs, now.Sub(sentAt[i]))
			if opt.OnReply != nil {
				opt.OnReply(PingReply{Seq: i, Bytes: len(h), TTL: res.ControlMessages.TTL, RTT: now.Sub(sentAt[i])})
			}
		}
	}

	tick := time.NewTimer(0)
	defer tick.Stop()
	var lingerC <-chan time.Time
	var ctxErr error
loop:
	for {
		select {
		case <-tick.C:
			send()
			drain()
			if len(sentAt) < count {
				tick.Reset(interval)
			} else {
				lingerC = time.After(linger)
			}
		case <-readable:
			drain()
		case <-lingerC:
			break loop
		case <-ctx.Done():
			if len(sentAt) < count {
				ctxErr = fmt.Errorf("ping %v: %d of %d requests sent: %w", dst, len(sentAt), count, ctx.Err())
			}
			break loop
		}
		if len(sentAt) == count && st.Received == count {
			break
		}
	}
	drain()
	st.summarise()
	return st, ctxErr
}

// summarise fills in loss and the RTT statistics.
func (p *PingStats) summarise() {
	if p.Sent > 0 {
		p.Loss = float64(p.Sent-p.Received) / float64(p.Sent)
	}
	n := len(p.RTTs)
	if n == 0 {
		return
	}
	sorted := slices.Clone(p.RTTs)
	slices.Sort(sorted)
	var sum float64
	for _, d := range sorted {
		sum += float64(d)
	}
	mean := sum / float64(n)
	var sq float64
	for _, d := range sorted {
		sq += (float64(d) - mean) * (float64(d) - mean)
	}
	p.Min, p.Max = sorted[0], sorted[n-1]
	p.Avg = time.Duration(mean)
	p.StdDev = time.Duration(math.Sqrt(sq / float64(n)))
	p.P50 = percentile(sorted, 50)
	p.P99 = percentile(sorted, 99)
}

// percentile returns the nearest-rank q-th percentile of sorted values.
func percentile(sorted []time.Duration, q int) time.Duration {
	rank := (q*len(sorted) + 99) / 100 // ceil(q/100 * n)
	return sorted[max(rank, 1)-1]
}
