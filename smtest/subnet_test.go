package smtest

// The harness: an ibsim fabric, OpenSMs on its HCAs, infiniband-diags for
// the reference answers, and the child process that runs the control
// plane under test.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipoibd/ipoibd/ib"
	"github.com/ipoibd/ipoibd/ib/verbs"
)

// packages are the Debian packages the tests need, for the skip line.
const packages = "ibsim-utils opensm infiniband-diags"

// netFile is the ibsim topology (testdata/fabric.net).
const netFile = "testdata/fabric.net"

// umad2simGlob finds libumad2sim.so (package libumad2sim0, which
// ibsim-utils depends on) in any multiarch directory.
const umad2simGlob = "/usr/lib/*/umad2sim/libumad2sim.so"

// childEnv marks the child process (TestChild).
const childEnv = "IPOIBD_SMTEST_CHILD"

// replyPrefix starts each of the child's answer lines, so that anything
// else on its stdout (the testing package's own lines) is skipped.
const replyPrefix = "smtest-reply "

// subnetSeq keeps ibsim socket names unique within the process.
var subnetSeq atomic.Uint64

// tools are the programs the tests run, found once.
type tools struct {
	ibsim, opensm, saquery, smpquery, sminfo, umad2sim string
}

// needTools finds the tools or skips the test with one line naming the
// packages to install.
func needTools(t *testing.T) tools {
	t.Helper()
	if testing.Short() {
		t.Skip("OpenSM tests skipped in -short mode")
	}
	var tl tools
	var missing []string
	look := func(dst *string, name string) {
		p, err := exec.LookPath(name)
		if err != nil {
			// Debian puts the diags and opensm in /usr/sbin, which a
			// user's PATH may lack.
			for _, dir := range []string{"/usr/sbin", "/sbin"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					p = filepath.Join(dir, name)
				}
			}
		}
		if p == "" {
			missing = append(missing, name)
		}
		*dst = p
	}
	look(&tl.ibsim, "ibsim")
	look(&tl.opensm, "opensm")
	look(&tl.saquery, "saquery")
	look(&tl.smpquery, "smpquery")
	look(&tl.sminfo, "sminfo")
	if m, _ := filepath.Glob(umad2simGlob); len(m) > 0 {
		tl.umad2sim = m[0]
	} else {
		missing = append(missing, "libumad2sim.so")
	}
	if len(missing) > 0 {
		t.Skipf("OpenSM on ibsim tests skipped: %s not installed; install: apt-get install %s", strings.Join(missing, ", "), packages)
	}
	// The control plane talks to ibsim through libibumad, which only a
	// cgo build with rdma-core's headers loads.
	if _, err := verbs.QueryUMADPort("", 1); errors.Is(err, ib.ErrUnavailable) {
		t.Skipf("OpenSM on ibsim tests skipped: %v", err)
	}
	return tl
}

// Real-fabric mode: with IPOIBD_SMTEST_CA naming an HCA, TestRealFabricSM
// runs the checks against the SM of the fabric that HCA is on, through
// the kernel's umad devices instead of ibsim (docs/hardware.md).
const (
	realCAEnv    = "IPOIBD_SMTEST_CA"
	realPortEnv  = "IPOIBD_SMTEST_PORT"
	realPKeyEnv  = "IPOIBD_SMTEST_PKEY"
	realPeersEnv = "IPOIBD_SMTEST_PEERS"
	realSMKeyEnv = "IPOIBD_SMTEST_SMKEY"
)

// subnet is a running ibsim fabric and its OpenSMs, or in real-fabric
// mode the fabric of an HCA of this host.
type subnet struct {
	t  *testing.T
	tl tools
	// realCA and realPort are set in real-fabric mode.
	realCA, realPort string
	// smKey is the SM_Key saquery presents to see group members.
	smKey   string
	dir     string
	sock    string
	ibsim   *exec.Cmd
	console io.WriteCloser
	sms     map[string]*exec.Cmd
	// partitions is OpenSM's partitions.conf; every SM of the subnet
	// reads it.
	partitions string
}

// defaultPartitions is the rule OpenSM applies without a file: the
// default partition, IPoIB-capable, everyone a full member.
const defaultPartitions = "Default=0x7fff, ipoib : ALL=full ;\n"

// newSubnet starts ibsim on the test topology. partitions is the
// partitions.conf the SMs will read ("" for defaultPartitions).
func newSubnet(t *testing.T, partitions string) *subnet {
	t.Helper()
	tl := needTools(t)
	net, err := filepath.Abs(netFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &subnet{
		t: t, tl: tl, dir: tempDir(t), sms: map[string]*exec.Cmd{}, smKey: "1",
		sock: fmt.Sprintf("ipoibd-smtest-%d-%d", os.Getpid(), subnetSeq.Add(1)),
	}
	if partitions == "" {
		partitions = defaultPartitions
	}
	s.partitions = filepath.Join(s.dir, "partitions.conf")
	if err := os.WriteFile(s.partitions, []byte(partitions), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(s.dir, "ibsim.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.ibsim = exec.Command(tl.ibsim, "-s", net)
	s.ibsim.Dir = s.dir
	s.ibsim.Env = append(os.Environ(), "IBSIM_SOCKNAME="+s.sock)
	s.ibsim.Stdout, s.ibsim.Stderr = log, log
	if s.console, err = s.ibsim.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	err = startProc(s.ibsim)
	log.Close() // ibsim has its own copy
	if err != nil {
		t.Fatalf("start ibsim: %v", err)
	}
	t.Cleanup(s.stop)
	s.waitFor("ibsim ready", 10*time.Second, func() bool {
		b, _ := os.ReadFile(log.Name())
		return strings.Contains(string(b), "simulator ready")
	})
	return s
}

// realSubnet is the fabric of the HCA IPOIBD_SMTEST_CA names, for
// TestRealFabricSM; without it the test skips.
func realSubnet(t *testing.T) *subnet {
	t.Helper()
	ca := os.Getenv(realCAEnv)
	if ca == "" {
		t.Skipf("real-fabric SM checks skipped: set %s=<HCA> (and %s, %s, %s, %s) to run them against this host's fabric (docs/hardware.md)",
			realCAEnv, realPortEnv, realPKeyEnv, realPeersEnv, realSMKeyEnv)
	}
	var tl tools
	for _, p := range []struct {
		dst  *string
		name string
	}{{&tl.saquery, "saquery"}, {&tl.smpquery, "smpquery"}, {&tl.sminfo, "sminfo"}} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			path = filepath.Join("/usr/sbin", p.name)
		}
		*p.dst = path
	}
	s := &subnet{t: t, tl: tl, dir: tempDir(t), realCA: ca, realPort: "1", smKey: "1"}
	if v := os.Getenv(realPortEnv); v != "" {
		s.realPort = v
	}
	if v := os.Getenv(realSMKeyEnv); v != "" {
		s.smKey = v
	}
	return s
}

// stop ends the SMs, then ibsim, and shows their logs if the test failed.
func (s *subnet) stop() {
	for _, c := range s.sms {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	quit(s.ibsim, s.console, "Quit\n", 5*time.Second)
	if s.t.Failed() {
		for _, name := range []string{"ibsim.log", "opensm-Hca1.log", "opensm-Hca3.log"} {
			if b, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil {
				s.t.Logf("--- %s (last 3000 bytes):\n%s", name, tail(b, 3000))
			}
		}
	}
}

// quit asks the process c runs to end by writing command to its input
// in, which it then closes, and kills it if it has not exited within
// wait.
func quit(c *exec.Cmd, in io.WriteCloser, command string, wait time.Duration) {
	_, _ = io.WriteString(in, command)
	_ = in.Close()
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		_ = c.Process.Kill()
		<-done
	}
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// env is the environment of a process attached to the ibsim HCA host.
func (s *subnet) env(host string) []string {
	if s.realCA != "" {
		return append(os.Environ(), realCAEnv+"="+s.realCA, realPortEnv+"="+s.realPort)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LD_PRELOAD=") && !strings.HasPrefix(kv, "SIM_HOST=") {
			env = append(env, kv)
		}
	}
	// OpenSM keeps its cache (guid2lid and the like) per instance.
	cache := filepath.Join(s.dir, "cache-"+host)
	_ = os.MkdirAll(cache, 0o755)
	return append(env, "LD_PRELOAD="+s.tl.umad2sim, "SIM_HOST="+host, "IBSIM_SOCKNAME="+s.sock,
		"OSM_CACHE_DIR="+cache, "OSM_TMP_DIR="+cache)
}

// startSM starts OpenSM on host with the given priority. Its SMInfo
// polling is fast, so a standby notices a dead master within about two
// seconds, and it sweeps every second.
// Extra lines of opensm.conf may follow.
func (s *subnet) startSM(host string, priority int, extra ...string) {
	s.t.Helper()
	conf := filepath.Join(s.dir, "opensm-"+host+".conf")
	text := fmt.Sprintf("sm_priority %d\nsweep_interval 1\nsminfo_polling_timeout 500\npolling_retry_number 2\n"+
		"partition_config_file %s\nlog_file %s\n", priority, s.partitions, filepath.Join(s.dir, "opensm-"+host+".log"))
	for _, l := range extra {
		text += l + "\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(s.dir, "opensm-"+host+".out"))
	if err != nil {
		s.t.Fatal(err)
	}
	c := exec.Command(s.tl.opensm, "-F", conf)
	c.Dir = s.dir
	c.Env = s.env(host)
	c.Stdout, c.Stderr = out, out
	err = startProc(c)
	out.Close() // OpenSM has its own copy
	if err != nil {
		s.t.Fatalf("start opensm on %s: %v", host, err)
	}
	s.sms[host] = c
}

// killSM kills the OpenSM on host, as a crash would.
func (s *subnet) killSM(host string) {
	s.t.Helper()
	c := s.sms[host]
	_ = c.Process.Kill()
	_ = c.Wait()
	delete(s.sms, host)
}

// smInfo is what sminfo reports of the master SM.
type smInfo struct {
	LID      int
	GUID     uint64
	Priority int
	State    int
}

// smInfoRE matches sminfo's one line.
var smInfoRE = regexp.MustCompile(`sm lid (\d+) sm guid 0x([0-9a-f]+), activity count \d+ priority (\d+) state (\d+)`)

// smInfo asks, from host, the SM the port knows for its SMInfo.
func (s *subnet) smInfo(host string) (smInfo, error) {
	out, err := s.run(host, s.tl.sminfo)
	if err != nil {
		return smInfo{}, err
	}
	m := smInfoRE.FindStringSubmatch(out)
	if m == nil {
		return smInfo{}, fmt.Errorf("sminfo: unexpected output %q", out)
	}
	var i smInfo
	i.LID, _ = strconv.Atoi(m[1])
	i.GUID, _ = strconv.ParseUint(m[2], 16, 64)
	i.Priority, _ = strconv.Atoi(m[3])
	i.State, _ = strconv.Atoi(m[4])
	return i, nil
}

// smMaster is SMInfo's state of a master SM (IBA 14.2.5.13).
const smMaster = 3

// waitMaster waits until the SM on host is master and the subnet is
// configured: host's port is active and the broadcast group exists.
func (s *subnet) waitMaster(host string) {
	s.t.Helper()
	s.waitFor("OpenSM on "+host+" master with the broadcast group made", 60*time.Second, func() bool {
		i, err := s.smInfo("Hca2")
		if err != nil || i.State != smMaster {
			return false
		}
		p, err := s.portInfo("Hca2")
		if err != nil || p["LinkState"] != "Active" || p["SMLid"] != strconv.Itoa(i.LID) {
			return false
		}
		gs, err := s.saquery("Hca2", "MCMemberRecord group dump:", "-g")
		if err != nil {
			return false
		}
		for _, g := range gs {
			if g["mgid"] == "ff12:401b:ffff::ffff:ffff" {
				return true
			}
		}
		return false
	})
}

// waitFor polls ok until it holds or the time is up.
func (s *subnet) waitFor(what string, limit time.Duration, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// run runs a libibumad tool attached to host and returns its output.
func (s *subnet) run(host, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if s.realCA != "" {
		args = append([]string{"-C", s.realCA, "-P", s.realPort}, args...)
	}
	c := exec.CommandContext(ctx, prog, args...)
	c.Dir = s.dir
	c.Env = s.env(host)
	out, err := combinedOutput(c)
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// saquery runs saquery from host and parses the records of its dump
// whose header line is header; keys are lower-cased.
func (s *subnet) saquery(host, header string, args ...string) ([]map[string]string, error) {
	out, err := s.run(host, s.tl.saquery, args...)
	if err != nil {
		return nil, err
	}
	return parseDump(out, header), nil
}

// dumpLine is one "name....value" line of an saquery or smpquery dump.
var dumpLine = regexp.MustCompile(`^\s*([A-Za-z_0-9 ]+?):?\.{2,}(.*)$`)

// parseDump splits a dump into records, each starting at a line that
// contains header ("" means the whole output is one record).
func parseDump(out, header string) []map[string]string {
	var recs []map[string]string
	var cur map[string]string
	if header == "" {
		cur = map[string]string{}
		recs = append(recs, cur)
	}
	for _, line := range strings.Split(out, "\n") {
		if header != "" && strings.Contains(line, header) {
			cur = map[string]string{}
			recs = append(recs, cur)
			continue
		}
		m := dumpLine.FindStringSubmatch(line)
		if m == nil || cur == nil {
			continue
		}
		cur[strings.ToLower(strings.TrimSpace(m[1]))] = strings.TrimSpace(m[2])
	}
	return recs
}

// portInfo is smpquery's PortInfo of host's port 1 (keys as smpquery
// spells them).
func (s *subnet) portInfo(host string) (map[string]string, error) {
	out, err := s.run(host, s.tl.smpquery, "-D", "portinfo", "0", "1")
	if err != nil {
		return nil, err
	}
	rec := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := dumpLine.FindStringSubmatch(line); m != nil {
			rec[strings.TrimSpace(m[1])] = strings.TrimSpace(m[2])
		}
	}
	return rec, nil
}

// consoleCmd sends one command to ibsim's console.
func (s *subnet) consoleCmd(cmd string) {
	s.t.Helper()
	if _, err := io.WriteString(s.console, cmd+"\n"); err != nil {
		s.t.Fatalf("ibsim console %q: %v", cmd, err)
	}
}

// child is the control plane under test, in its own process.
type child struct {
	t     *testing.T
	c     *exec.Cmd
	in    io.WriteCloser
	lines chan string
	log   string
}

// startChild starts the child attached to host.
func (s *subnet) startChild(host string) *child {
	s.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		s.t.Fatal(err)
	}
	ch := &child{t: s.t, lines: make(chan string, 16), log: filepath.Join(s.dir, "child-"+host+".log")}
	logf, err := os.Create(ch.log)
	if err != nil {
		s.t.Fatal(err)
	}
	ch.c = exec.Command(exe, "-test.run=^TestChild$", "-test.timeout=10m")
	ch.c.Dir = s.dir
	ch.c.Env = append(s.env(host), childEnv+"=1")
	ch.c.Stderr = logf
	if ch.in, err = ch.c.StdinPipe(); err != nil {
		s.t.Fatal(err)
	}
	out, err := ch.c.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := startProc(ch.c); err != nil {
		s.t.Fatalf("start child: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), replyPrefix); ok {
				ch.lines <- line
			} else {
				fmt.Fprintln(logf, "stdout:", sc.Text())
			}
		}
		close(ch.lines)
	}()
	s.t.Cleanup(ch.stop)
	var r reply
	ch.read(&r, "start-up")
	if r.Skip != "" {
		s.t.Skip(r.Skip)
	}
	if r.Err != "" {
		s.t.Fatalf("child on %s failed to start: %s", host, r.Err)
	}
	return ch
}

// stop ends the child and shows its log if the test failed.
func (ch *child) stop() {
	quit(ch.c, ch.in, "quit\n", 10*time.Second)
	if ch.t.Failed() {
		if b, err := os.ReadFile(ch.log); err == nil {
			ch.t.Logf("--- child log (last 6000 bytes):\n%s", tail(b, 6000))
		}
	}
}

// read decodes the child's next answer into r.
func (ch *child) read(r *reply, what string) {
	ch.t.Helper()
	select {
	case line, ok := <-ch.lines:
		if !ok {
			ch.t.Fatalf("child exited before answering %s", what)
		}
		if err := json.Unmarshal([]byte(line), r); err != nil {
			ch.t.Fatalf("child's answer to %s: %v: %q", what, err, line)
		}
	case <-time.After(90 * time.Second):
		ch.t.Fatalf("child did not answer %s within 90s", what)
	}
}

// do sends one command and returns the answer; an answer with an error
// fails the test unless mayFail.
func (ch *child) do(cmd string) reply {
	ch.t.Helper()
	r := ch.try(cmd)
	if r.Err != "" {
		ch.t.Fatalf("child: %s: %s", cmd, r.Err)
	}
	return r
}

// try sends one command and returns the answer, error or not.
func (ch *child) try(cmd string) reply {
	ch.t.Helper()
	if _, err := io.WriteString(ch.in, cmd+"\n"); err != nil {
		ch.t.Fatalf("child: %s: %v", cmd, err)
	}
	var r reply
	ch.read(&r, cmd)
	return r
}

// portGID is host's port GID: the subnet prefix and port GUID its
// subnet management agent reports.
func (s *subnet) portGID(t *testing.T, host string) ib.GID {
	t.Helper()
	var gid ib.GID
	for _, q := range []struct {
		attr, field string
		at          int
	}{{"portinfo", "GidPrefix", 0}, {"nodeinfo", "PortGuid", 8}} {
		out, err := s.run(host, s.tl.smpquery, "-D", q.attr, "0", "1")
		if err != nil {
			t.Fatal(err)
		}
		v, ok := parseDump(strings.ReplaceAll(out, ":.", "."), "")[0][strings.ToLower(q.field)]
		n, err := strconv.ParseUint(v, 0, 64)
		if !ok || err != nil {
			t.Fatalf("smpquery %s on %s: no %s in %q", q.attr, host, q.field, out)
		}
		binary.BigEndian.PutUint64(gid[q.at:], n)
	}
	return gid
}
