package main

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/ipoibd/ipoibd"
	"github.com/ipoibd/ipoibd/internal/streamtest"
)

// tunNetnsEnv marks the test binary re-run inside a network namespace of
// its own, where TestTUN may create interfaces without touching the host.
const tunNetnsEnv = "IPOIBD_TEST_IN_NETNS"

// TestTUN runs `ipoibd up --dhcp --tun ipt0` on a simulated fabric inside
// a fresh network namespace and checks that the interface carries the
// leased address, and that the kernel's own sockets reach a
// second IPoIB host through it, and that host the kernel's: an echo
// request from a kernel ICMP socket is answered, a kernel TCP client's
// bytes come back byte-identical from a listener on the other host (and a
// kernel UDP client's datagram from a UDP socket there), the
// other host's connection to a kernel listener on the TUN address does the
// same, and its ping is answered by the kernel. On the way out the
// interface, its address and its route are gone.
func TestTUN(t *testing.T) {
	if os.Getenv(tunNetnsEnv) == "" {
		runInNetns(t, "TestTUN")
		return
	}
	startFabric(t, "tun", 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// b serves the one address of its pool; the daemon with the TUN
	// interface leases it.
	b, err := ipoibd.Open(ctx, ipoibd.Config{Device: "sim:tun/host1", Name: "ib1", Addr: netip.MustParsePrefix("10.13.0.2/24"),
		DHCPServer: &ipoibd.DHCPServer{PoolStart: netip.MustParseAddr("10.13.0.1"), PoolEnd: netip.MustParseAddr("10.13.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a := startDaemon(t, "tun", 0, "dhcp", "--tun", "ipt0")
	if !strings.Contains(a.out.String(), "tun ipt0 10.13.0.1/24 mtu 2044") {
		t.Errorf("up's progress lacks the TUN line with the leased address:\n%s", a.out.String())
	}
	checkTUNConfigured(t, "ipt0", "10.13.0.1/24", true)
	tcpEchoOn(t, b.Listen, ":7")

	t.Run("kernel-ping", func(t *testing.T) {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for seq := 1; seq <= 3; seq++ {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x1b, Seq: seq, Data: []byte("ipoibd tun")}}
			wb, _ := msg.Marshal(nil)
			if _, err := c.WriteTo(wb, &net.IPAddr{IP: net.IPv4(10, 13, 0, 2)}); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				rb := make([]byte, 1500)
				n, from, err := c.ReadFrom(rb)
				if err != nil {
					t.Fatalf("echo %d: %v", seq, err)
				}
				m, err := icmp.ParseMessage(1, rb[:n])
				if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
					continue // our own request, seen by the raw socket
				}
				if e := m.Body.(*icmp.Echo); e.Seq == seq && from.String() == "10.13.0.2" {
					break
				}
			}
		}
	})
	t.Run("kernel-tcp-to-link", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", "10.13.0.2:7", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "10.13.0.1" {
			t.Errorf("kernel connection from %s, not the TUN address", got)
		}
		streamtest.Check(t, c, 1<<20)
	})
	t.Run("kernel-udp-to-link", func(t *testing.T) {
		udpEchoOn(t, b.ListenPacket, ":7")
		c, err := net.Dial("udp", "10.13.0.2:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := []byte("a kernel datagram over IPoIB")
		buf := make([]byte, 2000)
		for try := 0; ; try++ {
			c.Write(msg)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil {
				if string(buf[:n]) != string(msg) {
					t.Fatalf("answer %q", buf[:n])
				}
				break
			}
			if try == 5 {
				t.Fatalf("no answer: %v", err)
			}
		}
	})
	t.Run("link-tcp-to-kernel", func(t *testing.T) {
		tcpEchoOn(t, net.Listen, "10.13.0.1:8")
		c, err := b.DialContext(ctx, "tcp", "10.13.0.1:8")
		if err != nil {
			t.Fatal(err)
		}
		streamtest.Check(t, c, 1<<20)
	})
	t.Run("link-ping-answered-by-kernel", func(t *testing.T) {
		before := kernelInEchos(t)
		st, err := b.Ping(ctx, netip.MustParseAddr("10.13.0.1"), ipoibd.PingOptions{Count: 3, Interval: 10 * time.Millisecond, Size: 56})
		if err != nil || st.Received != 3 {
			t.Fatalf("ping: %+v, %v", st, err)
		}
		if got := kernelInEchos(t) - before; got < 3 {
			t.Errorf("the kernel counted %d echo requests, not 3", got)
		}
	})
	t.Run("daemon-still-pings", func(t *testing.T) {
		if code, out, errOut := runCLI(t, "ping", "--socket", a.sock, "-c", "2", "-i", "0.01", "10.13.0.2"); code != exitOK {
			t.Errorf("ipoibd ping through the daemon: exit %d: %s%s", code, out, errOut)
		}
	})
	a.stopOK()
	checkTUNConfigured(t, "ipt0", "10.13.0.1/24", false)
}

// TestTUNWithoutCapNetAdmin: a daemon without CAP_NET_ADMIN asked for a
// TUN interface says so in one line and exits, both when it may not create
// the interface and when it may open one (a persistent interface its user
// owns, made beforehand by `ip tuntap`) but not configure it.
func TestTUNWithoutCapNetAdmin(t *testing.T) {
	tests := []struct {
		name, tun string
		before    string // a shell command run in the namespace first, with the capability
		want      string
	}{
		{"create", "ipt1", "", "--tun ipt1: creating a TUN interface " + needCapNetAdmin},
		{"configure", "ipt4", "ip tuntap add dev ipt4 mode tun user 0",
			"--tun ipt4: netlink: MTU 2044: operation not permitted: configuring the interface " + needCapNetAdmin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if os.Getenv(tunNetnsEnv) == "" {
				setpriv, err := exec.LookPath("setpriv")
				if err != nil {
					t.Skip("no setpriv(1) to drop CAP_NET_ADMIN")
				}
				wrap := []string{setpriv, "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"}
				if tt.before != "" {
					wrap = append([]string{"sh", "-c", tt.before + ` && exec "$@"`, "sh"}, wrap...)
				}
				runInNetns(t, "TestTUNWithoutCapNetAdmin/"+tt.name, wrap...)
				return
			}
			startFabric(t, "nocap", 1, nil)
			code, out, errOut := runCLI(t, "up", "--device", "sim:nocap/host0", "--socket", t.TempDir()+"/s", "--addr", "10.14.0.1/24", "--tun", tt.tun)
			want := "ipoibd up: " + tt.want + "\n"
			if code != exitFailure || strings.Count(errOut, "--tun") != 1 || !strings.HasSuffix(errOut, want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and the line %q", code, errOut, exitFailure, want)
			}
			if strings.Contains(out, "ready") {
				t.Errorf("the daemon said it was ready:\n%s", out)
			}
		})
	}
}

// runInNetns runs test in this test binary again, inside a network
// namespace of its own (and under the command wrap, if any), and fails if
// it did not pass there.
func runInNetns(t *testing.T, test string, wrap ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a network namespace and a TUN device")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN device: %v", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1) to make a network namespace")
	}
	args := append([]string{"--net", "--"}, wrap...)
	args = append(args, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), tunNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("%s in a network namespace: %v\n%s", test, err, out)
	}
	t.Logf("%s in a network namespace:\n%s", test, out)
}

// checkTUNConfigured checks that the interface name exists with addr and
// the subnet's route, or, when !want, that it is gone.
func checkTUNConfigured(t *testing.T, name, addr string, want bool) {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if !want {
		if err == nil {
			t.Errorf("%s still exists after the daemon left", name)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if l.Attrs().MTU != 2044 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: MTU %d, flags %v; want 2044, up", name, l.Attrs().MTU, l.Attrs().Flags)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != addr {
		t.Errorf("%s addresses: %v (%v); want %s", name, addrs, err, addr)
	}
	routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
	var found bool
	for _, r := range routes {
		found = found || (r.Dst != nil && r.Dst.String() == netip.MustParsePrefix(addr).Masked().String())
	}
	if err != nil || !found {
		t.Errorf("%s routes: %v (%v); want %s", name, routes, err, netip.MustParsePrefix(addr).Masked())
	}
}

// kernelInEchos reads the kernel's count of echo requests received.
func kernelInEchos(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == "InEchos" && i < len(fields) {
				v, _ := strconv.Atoi(fields[i])
				return v
			}
		}
	}
	t.Fatal("no Icmp InEchos in /proc/net/snmp")
	return 0
}

// TestTUNFollowsAddress: when the link's address changes (a DHCP lease
// moved or lost), the TUN interface's address and route follow it, and
// Close removes them.
func TestTUNFollowsAddress(t *testing.T) {
	if os.Getenv(tunNetnsEnv) == "" {
		runInNetns(t, "TestTUNFollowsAddress")
		return
	}
	fab, err := ipoibd.NewSimFabric(ipoibd.SimConfig{Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer fab.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ifc, err := ipoibd.Open(ctx, ipoibd.Config{Device: fab.Device(0), Name: "follow", Addr: netip.MustParsePrefix("10.16.0.1/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer ifc.Close()
	tun, err := startTUN("ipt2", ifc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	checkTUNConfigured(t, "ipt2", "10.16.0.1/24", true)
	// The test moves the address itself, as follow would on a lease
	// change; follow, which would move it back, stops.
	tun.stopFollowing()
	tun.sync(netip.MustParsePrefix("10.17.0.9/16"))
	checkTUNConfigured(t, "ipt2", "10.17.0.9/16", true)
	if got := tun.local.Load(); got != be32(netip.MustParseAddr("10.17.0.9")) {
		t.Errorf("the handler's address is %#x after the change", got)
	}
	tun.sync(netip.Prefix{})
	checkTUNBare(t, "ipt2", "after the link lost its address")
	tun.sync(netip.MustParsePrefix("10.16.0.1/24"))
	checkTUNConfigured(t, "ipt2", "10.16.0.1/24", true)

	// A second TUN interface on the same subnet finds the route taken.
	if _, err := startTUN("ipt3", ifc, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "the kernel already has a route to 10.16.0.0/24") {
		t.Errorf("a second TUN interface on the subnet: %v", err)
	}
	if _, err := netlink.LinkByName("ipt3"); err == nil {
		t.Error("the refused TUN interface ipt3 was left behind")
	}
	tun.Close()
	checkTUNConfigured(t, "ipt2", "10.16.0.1/24", false)

	// A persistent interface outlives the daemon's descriptor: what is
	// left of it shows that Close removed the address and the route.
	if out, err := exec.Command("ip", "tuntap", "add", "dev", "ipt5", "mode", "tun").CombinedOutput(); err != nil {
		t.Fatalf("ip tuntap add: %v: %s", err, out)
	}
	persistent, err := startTUN("ipt5", ifc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	checkTUNConfigured(t, "ipt5", "10.16.0.1/24", true)
	persistent.Close()
	checkTUNBare(t, "ipt5", "after Close")
}

// checkTUNBare checks that the interface name exists without an IPv4
// address or route; when says at what point.
func checkTUNBare(t *testing.T, name, when string) {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("%s %s: %v", name, when, err)
	}
	if addrs, err := netlink.AddrList(l, netlink.FAMILY_V4); err != nil || len(addrs) != 0 {
		t.Errorf("%s %s: addresses %v (%v), want none", name, when, addrs, err)
	}
	if routes, err := netlink.RouteList(l, netlink.FAMILY_V4); err != nil || len(routes) != 0 {
		t.Errorf("%s %s: routes %v (%v), want none", name, when, routes, err)
	}
}
