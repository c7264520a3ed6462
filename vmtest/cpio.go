package vmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// The initramfs format is the "new ASCII" cpio archive the kernel unpacks
// at boot (Linux Documentation/driver-api/early-userspace/buffer-format;
// the format itself is POSIX cpio's "newc" variant): per entry a 110-byte
// header of the magic and thirteen 8-digit hex fields, the NUL-terminated
// name padded to 4 bytes, then the data padded to 4 bytes; a final entry
// named TRAILER!!! ends the archive.
const (
	cpioMagic     = "070701"
	cpioHeaderLen = 110
	cpioTrailer   = "TRAILER!!!"
	// File type bits of the mode field (POSIX <sys/stat.h> values, which
	// cpio stores as is).
	cpioTypeMask    = 0o170000
	cpioModeDir     = 0o040000
	cpioModeRegular = 0o100000
	cpioModeSymlink = 0o120000
)

// ErrBadPath says an archive path is empty, relative after cleaning, or
// climbs out of the root.
var ErrBadPath = errors.New("vmtest: bad archive path")

// entry is one file, directory or symlink of an Archive.
type entry struct {
	mode uint32 // type and permission bits
	data []byte // file contents or symlink target
}

// Archive is an initramfs being assembled in memory: a set of absolute
// paths, each a directory, a regular file or a symlink. Parent
// directories are created implicitly. Adding a path twice replaces it.
type Archive struct {
	entries map[string]entry
}

// NewArchive returns an empty archive.
func NewArchive() *Archive {
	return &Archive{entries: map[string]entry{}}
}

// clean normalises an archive path to "a/b/c" form (no leading slash).
func clean(p string) (string, error) {
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: must be absolute: %w", p, ErrBadPath)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" || c == "." || strings.HasPrefix(c, "../") || c == ".." {
		return "", fmt.Errorf("%q: %w", p, ErrBadPath)
	}
	return c, nil
}

// Dir adds a directory.
func (a *Archive) Dir(p string, perm fs.FileMode) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	a.parents(c)
	a.entries[c] = entry{mode: cpioModeDir | uint32(perm.Perm())}
	return nil
}

// File adds a regular file with the given contents.
func (a *Archive) File(p string, data []byte, perm fs.FileMode) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	a.parents(c)
	a.entries[c] = entry{mode: cpioModeRegular | uint32(perm.Perm()), data: data}
	return nil
}

// Symlink adds a symbolic link to target.
func (a *Archive) Symlink(p, target string) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("symlink %q: empty target: %w", p, ErrBadPath)
	}
	a.parents(c)
	a.entries[c] = entry{mode: cpioModeSymlink | 0o777, data: []byte(target)}
	return nil
}

// Has reports whether p is in the archive.
func (a *Archive) Has(p string) bool {
	c, err := clean(p)
	if err != nil {
		return false
	}
	_, ok := a.entries[c]
	return ok
}

// parents adds the missing directories above c.
func (a *Archive) parents(c string) {
	for d := path.Dir(c); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := a.entries[d]; !ok {
			a.entries[d] = entry{mode: cpioModeDir | 0o755}
		}
	}
}

// WriteTo writes the archive in newc format, directories before what they
// hold (sorted paths give that), and returns the number of bytes written.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriter(w)
	cw := &countWriter{w: bw}
	for i, n := range names {
		e := a.entries[n]
		nlink := uint32(1)
		if e.mode&cpioTypeMask == cpioModeDir {
			nlink = 2
		}
		if err := writeCPIOEntry(cw, uint32(i+1), e.mode, nlink, n, e.data); err != nil {
			return cw.n, err
		}
	}
	if err := writeCPIOEntry(cw, 0, 0, 1, cpioTrailer, nil); err != nil {
		return cw.n, err
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("write initramfs: %w", err)
	}
	return cw.n, nil
}

// writeCPIOEntry writes one header, name and body with their padding.
func writeCPIOEntry(w io.Writer, ino, mode, nlink uint32, name string, data []byte) error {
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		cpioMagic, ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := make([]byte, 0, cpioHeaderLen+len(name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write initramfs entry %q: %w", name, err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write initramfs entry %q: %w", name, err)
	}
	if _, err := w.Write(make([]byte, pad4(len(data)))); err != nil {
		return fmt.Errorf("write initramfs entry %q: %w", name, err)
	}
	return nil
}

// pad4 is the number of zero bytes that bring n to a multiple of 4.
func pad4(n int) int { return (4 - n%4) % 4 }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
