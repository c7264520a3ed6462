package main

// Where the control socket lives and who may remove it. The socket's
// directory is private to the user (created 0700, and refused when
// someone else owns it or may write to it); a lock file next to the
// socket, held for the daemon's lifetime, decides which daemon owns the
// path; and a daemon removes only the socket it created itself.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ifNameMax is the longest interface name Linux accepts: IFNAMSIZ (16,
// <linux/if.h>) less the terminating NUL.
const ifNameMax = 15

// checkIfName accepts what Linux accepts as an interface name
// (dev_valid_name): 1 to 15 bytes, no '/', ':' or white space. Names made
// only of dots are refused too: the name becomes a file name in the
// socket directory, and "." and ".." would leave it.
func checkIfName(name string) error {
	switch {
	case name == "":
		return errors.New("--name: empty; want an interface name such as ib0")
	case len(name) > ifNameMax:
		return fmt.Errorf("--name %q: longer than %d bytes, the limit of an interface name", name, ifNameMax)
	case strings.Trim(name, ".") == "":
		return fmt.Errorf("--name %q: a name of dots only is not an interface name", name)
	case strings.ContainsAny(name, "/:") || strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("--name %q: an interface name has no '/', ':', spaces or control characters", name)
	}
	return nil
}

// defaultSocketDir is where control sockets live unless --socket says:
// $XDG_RUNTIME_DIR/ipoibd (a login session's private runtime directory),
// /run/ipoibd for root, and otherwise a per-user directory under the
// temporary directory, whose owner and mode are checked before use.
func defaultSocketDir() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "ipoibd")
	}
	if os.Geteuid() == 0 {
		return "/run/ipoibd"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ipoibd-%d", os.Geteuid()))
}

// privateDir creates dir with mode 0700 if it does not exist, then checks
// that it is a directory (not a link to one), owned by this user and
// closed to everyone else. A directory another user created first, in a
// shared place such as /tmp, is refused: whoever owns it could replace
// the socket.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("control socket directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("control socket directory %s is not a directory (%v); remove it or pass --socket", dir, fi.Mode().Type())
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("control socket directory %s belongs to uid %d, not to this user (%d): someone may have created it to take over the socket; remove it or pass --socket", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("control socket directory %s has mode %v: others may reach or replace the socket; chmod 700 it or pass --socket", dir, fi.Mode().Perm())
	}
	return nil
}

// ctlSocket is a control socket this daemon created, with the lock that
// makes the path its own.
type ctlSocket struct {
	ln   *net.UnixListener
	path string
	lock *os.File
	// dev and ino identify the socket file created, so close removes
	// that file and never one that replaced it.
	dev, ino uint64
}

// lockPath is the lock file of the socket at path.
func lockPath(path string) string { return path + ".lock" }

// socketBound runs between the bind of the control socket under its
// temporary name and its rename into place; tests look at it there.
var socketBound = func(tmp string) {}

// listenSocket takes the lock of path, removes a socket a dead daemon left
// there, and listens on a new socket of mode 0600 at path. The socket is
// created with that mode and bound under a temporary name, then renamed
// into place, so there is no moment when it is open to more than the user
// and path never names a socket not yet listening.
// The lock file stays (removing it would let two daemons lock two
// different files); it holds the owner's process ID.
func listenSocket(path string) (*ctlSocket, error) {
	lk, err := os.OpenFile(lockPath(path), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: lock: %w", path, err)
	}
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(lockPath(path))
		lk.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("control socket %s: another ipoibd is serving it (pid %s holds %s); stop it with 'ipoibd down' or pick another --name", path, strings.TrimSpace(string(pid)), lockPath(path))
		}
		return nil, fmt.Errorf("control socket %s: lock: %w", path, err)
	}
	fail := func(err error) (*ctlSocket, error) {
		lk.Close()
		return nil, err
	}
	_ = lk.Truncate(0)
	_, _ = lk.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	// With the lock held, a socket at path is a dead daemon's; anything
	// else is not ours to remove.
	if err := removeStaleSocket(path); err != nil {
		return fail(err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := removeStaleSocket(tmp); err != nil {
		return fail(err)
	}
	// Linux's bind gives the socket file the mode of the socket's inode
	// (less the umask), which fchmod before bind sets: the file is 0600
	// from the moment it exists, whatever the umask.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), "unix", tmp)
	if err != nil {
		return fail(fmt.Errorf("control socket: %w", err))
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(false)
	socketBound(tmp)
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return fail(fmt.Errorf("control socket: %w", err))
	}
	s := &ctlSocket{ln: ln, path: path, lock: lk}
	if fi, err := os.Lstat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			s.dev, s.ino = uint64(st.Dev), st.Ino
		}
	}
	return s, nil
}

// removeStaleSocket removes the socket at path, if there is one, and
// refuses to remove anything else.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s: a %v is in the way and is not ipoibd's to remove; remove it or pass another --socket", path, fileKind(fi))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket %s: removing the socket a stopped daemon left: %w", path, err)
	}
	return nil
}

// fileKind names a file's type for an error message.
func fileKind(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "regular file"
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "file of type " + t.String()
	}
}

// close stops listening, removes the socket (see remove) and gives up
// the lock.
func (s *ctlSocket) close() {
	s.remove()
	s.unlock()
}

// remove stops listening and removes the socket if it is still the one
// this daemon created. The lock stays held: the path is still this
// daemon's until it has finished tearing down.
func (s *ctlSocket) remove() {
	s.ln.Close()
	if fi, err := os.Lstat(s.path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Dev) == s.dev && st.Ino == s.ino {
			os.Remove(s.path)
		}
	}
}

// unlock gives up the lock; the process exiting does the same.
func (s *ctlSocket) unlock() { s.lock.Close() }

// waitUnlocked waits until no daemon holds the lock of the socket at
// path (its process has exited or let go), or until limit. It reports
// whether the lock is free; a missing lock file counts as free.
func waitUnlocked(path string, limit time.Duration) bool {
	f, err := os.OpenFile(lockPath(path), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return true
	}
	defer f.Close()
	deadline := time.Now().Add(limit)
	for {
		if unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) == nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
