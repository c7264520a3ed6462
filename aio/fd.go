// File descriptor handler internals. Home goroutine only; the exported
// SetFDHandler and RemoveFDHandler are in control.go.

package aio

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// FDHandler holds the callbacks for one file descriptor. Read runs when the
// fd is readable (or has hung up or failed), Write when it is writable (or
// has hung up or failed). Poll is an optional userspace readiness check
// that the loop calls while busy polling instead of asking the kernel; it
// must be cheap and must not block. When Poll returns true the loop calls
// PollReady, which should consume the work Poll saw.
type FDHandler struct {
	Read      func()
	Write     func()
	Poll      func() bool
	PollReady func()
}

func (h FDHandler) empty() bool {
	return h.Read == nil && h.Write == nil && h.Poll == nil && h.PollReady == nil
}

func (h FDHandler) epollEvents() uint32 {
	var ev uint32
	if h.Read != nil {
		ev |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if h.Write != nil {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// fdHandler is one registration. gen is stored in the epoll event so that
// an event reported for an fd that was removed (and maybe re-added) during
// the same batch is recognised as stale and dropped.
type fdHandler struct {
	fd      int
	gen     uint32
	h       FDHandler
	events  uint32
	removed bool
}

const readyIn = unix.EPOLLIN | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLRDHUP
const readyOut = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR

func (c *Context) lookup(fd int, gen uint32) *fdHandler {
	if fd < 0 || fd >= len(c.fds) {
		return nil
	}
	h := c.fds[fd]
	if h == nil || h.gen != gen {
		return nil
	}
	return h
}

func (c *Context) setFD(fd int, h FDHandler) error {
	if fd < 0 {
		return fmt.Errorf("aio %q: set handler for fd %d: %w", c.name, fd, unix.EBADF)
	}
	if fd == c.evfd || fd == c.epfd {
		return fmt.Errorf("aio %q: set handler for fd %d: fd belongs to the loop: %w", c.name, fd, unix.EINVAL)
	}
	events := h.epollEvents()
	if fd < len(c.fds) && c.fds[fd] != nil {
		r := c.fds[fd]
		if events != r.events {
			ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(r.gen)}
			if err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
				return fmt.Errorf("aio %q: epoll_ctl mod fd %d: %w", c.name, fd, err)
			}
			r.events = events
		}
		// Updated in place: an event already collected for this fd in the
		// current batch calls the new callbacks.
		r.h = h
		c.rebuildPollers()
		return nil
	}
	c.fdGen++
	if c.fdGen == 0 {
		c.fdGen = 1 // 0 tags the loop's own eventfd
	}
	r := &fdHandler{fd: fd, gen: c.fdGen, h: h, events: events}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(r.gen)}
	if err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("aio %q: epoll_ctl add fd %d: %w", c.name, fd, err)
	}
	for fd >= len(c.fds) {
		c.fds = append(c.fds, nil)
	}
	c.fds[fd] = r
	c.nfds++
	c.rebuildPollers()
	return nil
}

func (c *Context) removeFD(fd int) error {
	if fd < 0 || fd >= len(c.fds) || c.fds[fd] == nil {
		return fmt.Errorf("aio %q: remove handler for fd %d: %w", c.name, fd, ErrNotRegistered)
	}
	r := c.fds[fd]
	c.fds[fd] = nil
	c.nfds--
	r.removed = true
	c.rebuildPollers()
	err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	// A closed fd has already left the epoll set; the handler is gone
	// either way, which is what the caller asked for.
	if err != nil && !errors.Is(err, unix.EBADF) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("aio %q: epoll_ctl del fd %d: %w", c.name, fd, err)
	}
	return nil
}

// rebuildPollers makes a fresh slice rather than editing in place, because
// the busy-poll loop may be iterating the old one when a PollReady callback
// changes the handler set.
func (c *Context) rebuildPollers() {
	var ps []*fdHandler
	all := true
	for _, r := range c.fds {
		if r == nil {
			continue
		}
		if r.h.Poll != nil {
			ps = append(ps, r)
		} else {
			all = false
		}
	}
	c.pollers = ps
	c.allPoll = all
}

// runPollers calls every userspace Poll function once and PollReady for
// those that report work.
func (c *Context) runPollers() bool {
	progress := false
	for _, r := range c.pollers {
		if r.removed || r.h.Poll == nil || !r.h.Poll() {
			continue
		}
		// Poll itself may have removed or changed the handler.
		if !r.removed && r.h.PollReady != nil {
			c.ls.fdDispatches++
			r.h.PollReady()
			progress = true
		}
	}
	return progress
}

// dispatchFDs runs the handlers for one batch of epoll events. Each handler
// is looked up again right before it is called, so a callback that removes
// or replaces another fd's handler takes effect even for events already in
// the batch.
func (c *Context) dispatchFDs(events []unix.EpollEvent) bool {
	progress := false
	for i := range events {
		ev := events[i]
		fd, gen := int(ev.Fd), uint32(ev.Pad)
		if gen == 0 && fd == c.evfd {
			c.drainEventfd()
			continue
		}
		if ev.Events&readyIn != 0 {
			if r := c.lookup(fd, gen); r != nil && r.h.Read != nil {
				c.ls.fdDispatches++
				progress = true
				r.h.Read()
			}
		}
		if ev.Events&readyOut != 0 {
			if r := c.lookup(fd, gen); r != nil && r.h.Write != nil {
				c.ls.fdDispatches++
				progress = true
				r.h.Write()
			}
		}
	}
	return progress
}

func (c *Context) drainEventfd() {
	var buf [8]byte
	// EAGAIN means another pass drained it first; nothing else can fail
	// on an eventfd we own.
	_, _ = unix.Read(c.evfd, buf[:])
}
