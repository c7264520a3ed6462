// The client's lease file: the lease it holds, as JSON, so that a
// restarted client asks for the same address in INIT-REBOOT (RFC 2131
// section 3.2) instead of starting over.

package dhcp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// clientLeaseVersion is written into every client lease file; a file of
// another version is ignored.
const clientLeaseVersion = 1

// clientLeaseFile is the JSON document.
type clientLeaseFile struct {
	Version int `json:"version"`
	// ClientID is option 61 in hex: a file written by another client
	// (another port, the same file name) is not ours to reuse.
	ClientID string `json:"client_id"`
	Lease    Lease  `json:"lease"`
}

// saveLease writes l to the lease file, if there is one; a failure is
// logged and the client carries on.
func (c *Client) saveLease(l *Lease) {
	if c.cfg.LeaseFile == "" {
		return
	}
	data, err := json.MarshalIndent(clientLeaseFile{Version: clientLeaseVersion, ClientID: hex.EncodeToString(c.id), Lease: l.clone()}, "", "  ")
	if err == nil {
		err = writeFileAtomic(c.cfg.LeaseFile, append(data, '\n'))
	}
	if err != nil {
		c.stats.configErrors.Add(1)
		c.logf("lease file %s: %v", c.cfg.LeaseFile, err)
	}
}

// forgetLease removes the lease file, once the lease is gone.
func (c *Client) forgetLease() {
	if c.cfg.LeaseFile == "" {
		return
	}
	if err := os.Remove(c.cfg.LeaseFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.stats.configErrors.Add(1)
		c.logf("lease file %s: %v", c.cfg.LeaseFile, err)
	}
}

// loadLease returns the lease of the lease file when it is this client's
// and still runs at now.
func (c *Client) loadLease(now time.Time) (*Lease, bool) {
	if c.cfg.LeaseFile == "" {
		return nil, false
	}
	data, err := os.ReadFile(c.cfg.LeaseFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.logf("lease file %s: %v", c.cfg.LeaseFile, err)
		}
		return nil, false
	}
	l, err := parseClientLease(data, c.id, now)
	if err != nil {
		c.logf("lease file %s: %v; starting afresh", c.cfg.LeaseFile, err)
		return nil, false
	}
	return l, true
}

// parseClientLease decodes a client lease file written for id and checks
// its lease is one the client could hold at now. It is fuzzed
// (FuzzClientLeaseFile).
func parseClientLease(data, id []byte, now time.Time) (*Lease, error) {
	var f clientLeaseFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if f.Version != clientLeaseVersion {
		return nil, fmt.Errorf("version %d, this client reads %d: %w", f.Version, clientLeaseVersion, ErrMalformed)
	}
	if got, err := hex.DecodeString(f.ClientID); err != nil || !bytes.Equal(got, id) {
		return nil, fmt.Errorf("written for client %q, not this one: %w", f.ClientID, ErrMalformed)
	}
	l := &f.Lease
	switch {
	case !l.Addr.IsValid() || !isUsableUnicast(l.Addr.Addr()) || l.Addr.Bits() < 1 || l.Addr.Bits() > 30:
		return nil, fmt.Errorf("address %v: %w", l.Addr, ErrMalformed)
	case !isUsableUnicast(l.ServerID):
		return nil, fmt.Errorf("server %v: %w", l.ServerID, ErrMalformed)
	case l.Duration <= 0 || l.T1 < 0 || l.T2 < l.T1:
		return nil, fmt.Errorf("lease times %v, %v, %v: %w", l.Duration, l.T1, l.T2, ErrMalformed)
	case !l.Infinite() && !now.Before(l.Expiry()):
		return nil, fmt.Errorf("lease of %v expired at %v: %w", l.Addr, l.Expiry().Format(time.RFC3339), ErrMalformed)
	}
	if l.Router.IsValid() && !l.Addr.Masked().Contains(l.Router) {
		l.Router = netip.Addr{}
	}
	return l, nil
}

// writeFileAtomic writes data to path through a temporary file in the
// same directory and a rename, so a crash leaves the old file or the
// new one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
