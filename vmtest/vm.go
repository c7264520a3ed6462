package vmtest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
)

// Defaults of Config.
const (
	// DefaultMemoryMB is each VM's memory: enough for the kernel, rxe and a
	// Go test binary, small enough for two VMs on a CI machine.
	DefaultMemoryMB = 512
	// DefaultTimeout bounds a whole Run: boot (about 6 s to rxe0 ACTIVE
	// under TCG), the guest's work and power-off.
	DefaultTimeout = 4 * time.Minute
	// DefaultMTU is eth0's MTU; rxe derives active_mtu from it (1500
	// gives 1024, 2200 gives 2048, 4200 and up 4096).
	DefaultMTU = 1500
)

// exitMarker starts the line the PID-1 script prints with the guest
// script's exit status, the one thing Run reads from the serial log.
const exitMarker = "VMTEST-EXIT="

var exitRE = regexp.MustCompile(exitMarker + `(\d+)`)

// VM is one guest of a Run.
type VM struct {
	// Name names the VM in logs and file names ([a-z0-9-]).
	Name string
	// Script is the shell (busybox sh) that runs as PID 1 once the
	// standard set-up is done: modules loaded, /share mounted, eth0 up
	// with GuestIPv4(index), rxe0 created on it, memlock unlimited. Its
	// exit status is the VM's result. The variables VMTEST_INDEX,
	// VMTEST_NAME and VMTEST_IP are set.
	Script string
	// NoRDMA boots the VM without the kernel's RDMA stack: no InfiniBand
	// module is loaded and no rxe0 created, as on a host where only a
	// userspace RoCE driver runs.
	NoRDMA bool
}

// Config says how to run VMs.
type Config struct {
	// Kernel to boot (FetchKernel).
	Kernel *Kernel
	// Share is the host folder mounted read-write at GuestShare in every
	// VM (9p): test binaries in, results out.
	Share string
	// Binaries are host ELF files the guests run; the image gets their
	// shared libraries.
	Binaries []string
	// Modules to load; nil means BaseModules.
	Modules []string
	// MemoryMB per VM (DefaultMemoryMB when 0).
	MemoryMB int
	// CPUs is the number of virtual CPUs per VM (1 when 0).
	CPUs int
	// MTU of eth0 (DefaultMTU when 0).
	MTU int
	// Timeout for the whole Run (DefaultTimeout when 0); VMs still
	// running then are killed and reported as timed out.
	Timeout time.Duration
	// WorkDir receives the initramfs and the logs (a temporary folder
	// when empty).
	WorkDir string
	// WireCapture, when set, is a pcap file (Ethernet) the hub writes
	// every frame between the VMs to: a capture taken on the wire.
	WireCapture string
}

// Result is what one VM did.
type Result struct {
	// Name is the VM's name.
	Name string
	// LogPath is the serial console log on the host.
	LogPath string
	// Log is its content.
	Log []byte
	// ExitCode is the guest script's exit status, -1 when the VM stopped
	// without printing it (a crash, a hang, a kernel panic).
	ExitCode int
	// TimedOut says the VM was killed at the deadline.
	TimedOut bool
	// QEMUErr is how qemu itself ended, if it failed.
	QEMUErr error
	// Elapsed is the VM's wall time.
	Elapsed time.Duration
}

// Passed reports whether the guest script ran to the end with status 0.
func (r *Result) Passed() bool { return r.ExitCode == 0 && !r.TimedOut }

// Tail returns the last n bytes of the serial log.
func (r *Result) Tail(n int) string { return tail(r.Log, n) }

// GuestIPv4 is the IPv4 address of VM index i on eth0 (/24).
func GuestIPv4(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

// guestMAC is VM index i's MAC address (locally administered QEMU range).
func guestMAC(i int) string { return fmt.Sprintf("52:54:00:77:00:%02x", i+1) }

var vmNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// initTemplate is the PID-1 script. It finds its VM index and name on the
// kernel command line, so one image serves every VM of a Run.
var initTemplate = template.Must(template.New("init").Parse(`#!/usr/bin/busybox sh
/usr/bin/busybox --install -s {{.Applets}}
export PATH=/usr/sbin:/usr/bin:{{.Applets}}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
VMTEST_INDEX=0
VMTEST_NAME=vm
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmtest.index=*) VMTEST_INDEX="${arg#*=}" ;;
	vmtest.name=*) VMTEST_NAME="${arg#*=}" ;;
	vmtest.nordma=1) VMTEST_NORDMA=1 ;;
	esac
done
VMTEST_IP="10.77.0.$((VMTEST_INDEX + 1))"
export VMTEST_INDEX VMTEST_NAME VMTEST_IP
echo "vmtest: $VMTEST_NAME loading modules"
{{range .Modules}}case "$VMTEST_NORDMA{{.}}" in 1*/infiniband/*) ;; *) insmod {{.}} || echo "vmtest: insmod {{.}} failed" ;; esac
{{end}}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {{.Tag}} {{.Share}} || echo "vmtest: mounting the shared folder failed"
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
/usr/sbin/ip link set lo up
/usr/sbin/ip link set eth0 mtu {{.MTU}} up
/usr/sbin/ip addr add "$VMTEST_IP/24" dev eth0
[ -n "$VMTEST_NORDMA" ] || rdma link add rxe0 type rxe netdev eth0 || echo "vmtest: rdma link add failed"
# Wait for the link-local address: until it exists the kernel has no
# fe80::/64 route and RoCE address handles to link-local GIDs fail.
n=0
until /usr/sbin/ip -6 addr show dev eth0 scope link | grep -q fe80 || [ $n -ge 100 ]; do sleep 0.05; n=$((n + 1)); done
ulimit -l unlimited
echo "vmtest: $VMTEST_NAME ready, $VMTEST_IP"
case "$VMTEST_NAME" in
{{range .VMs}}{{.Name}}) sh /vmtest/{{.Name}}.sh ;;
{{end}}*) echo "vmtest: no script for $VMTEST_NAME"; false ;;
esac
echo "{{.Marker}}$?"
sync
poweroff -f
`))

// InitScript renders the PID-1 script for vms.
func InitScript(release string, moduleFiles []string, mtu int, vms []VM) (string, error) {
	mods := make([]string, len(moduleFiles))
	for i, m := range moduleFiles {
		mods[i] = guestModulePath(release, m)
	}
	var b strings.Builder
	err := initTemplate.Execute(&b, map[string]any{
		"Applets": guestApplets,
		"Modules": mods,
		"Tag":     shareTag,
		"Share":   GuestShare,
		"MTU":     mtu,
		"VMs":     vms,
		"Marker":  exitMarker,
	})
	if err != nil {
		return "", fmt.Errorf("vmtest: render init script: %w", err)
	}
	return b.String(), nil
}

// ParseExit finds the guest script's exit status in a serial log, or -1.
func ParseExit(log []byte) int {
	m := exitRE.FindAllSubmatch(log, -1)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(string(m[len(m)-1][1]))
	if err != nil {
		return -1
	}
	return n
}

// QEMU returns the path of qemu-system-x86_64, or an error wrapping
// ErrUnavailable.
func QEMU() (string, error) { return lookTool("qemu-system-x86_64") }

// Run boots every VM of vms on one private Ethernet, each with its own
// serial log, waits until all have powered off or the timeout passes, and
// returns their results in order. The VMs share one initramfs; each runs
// its own Script. Errors are about the harness itself (no qemu, an image
// that cannot be built); what the guests did is in the results.
func Run(ctx context.Context, cfg Config, vms []VM) ([]Result, error) {
	if len(vms) == 0 {
		return nil, fmt.Errorf("vmtest: run: no VMs")
	}
	qemu, err := QEMU()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, vm := range vms {
		if !vmNameRE.MatchString(vm.Name) || seen[vm.Name] {
			return nil, fmt.Errorf("vmtest: VM name %q: want a unique [a-z0-9-] name", vm.Name)
		}
		seen[vm.Name] = true
	}
	cfg.MemoryMB = cmp.Or(cfg.MemoryMB, DefaultMemoryMB)
	cfg.MTU = cmp.Or(cfg.MTU, DefaultMTU)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	if cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "vmtest-"); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
	}
	initrd, err := writeImage(ctx, cfg, vms)
	if err != nil {
		return nil, err
	}
	h, err := newHub(len(vms), cfg.WireCapture)
	if err != nil {
		return nil, err
	}
	defer h.close()

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	results := make([]Result, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		r := &results[i]
		r.Name = vm.Name
		r.LogPath = filepath.Join(cfg.WorkDir, vm.Name+".serial.log")
		args := []string{
			"-accel", "tcg", "-cpu", "max", "-smp", strconv.Itoa(max(cfg.CPUs, 1)), "-m", strconv.Itoa(cfg.MemoryMB),
			"-nodefaults", "-nographic", "-no-reboot", "-monitor", "none",
			"-serial", "file:" + r.LogPath,
			"-kernel", cfg.Kernel.Image, "-initrd", initrd,
			"-append", fmt.Sprintf("console=ttyS0 panic=-1 loglevel=4 vmtest.index=%d vmtest.name=%s%s", i, vm.Name, noRDMAArg(vm)),
			"-netdev", fmt.Sprintf("socket,id=n0,udp=%s,localaddr=%s", h.hubAddr(i), h.vmAddr(i)),
			"-device", "virtio-net-pci,netdev=n0,romfile=,mac=" + guestMAC(i),
			"-device", "virtio-rng-pci",
		}
		if cfg.Share != "" {
			args = append(args, "-virtfs",
				fmt.Sprintf("local,path=%s,mount_tag=%s,security_model=none,multidevs=remap", cfg.Share, shareTag))
		}
		cmd := exec.CommandContext(ctx, qemu, args...)
		qlog, err := os.Create(filepath.Join(cfg.WorkDir, vm.Name+".qemu.log"))
		if err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
		cmd.Stdout, cmd.Stderr = qlog, qlog
		cmd.WaitDelay = 5 * time.Second
		start := time.Now()
		if err := cmd.Start(); err != nil {
			qlog.Close()
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("vmtest: start qemu for %s: %w", vm.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer qlog.Close()
			err := cmd.Wait()
			r.Elapsed = time.Since(start)
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				r.TimedOut = true
			}
			if err != nil {
				q, _ := os.ReadFile(qlog.Name())
				r.QEMUErr = fmt.Errorf("qemu: %w: %s", err, tail(q, 400))
			}
		}()
	}
	wg.Wait()
	for i := range results {
		r := &results[i]
		r.Log, _ = os.ReadFile(r.LogPath)
		r.ExitCode = ParseExit(r.Log)
		if r.ExitCode >= 0 {
			r.TimedOut = false // it finished; the deadline hit a sibling
		}
	}
	return results, nil
}

// writeImage builds the shared initramfs of a Run into WorkDir.
func writeImage(ctx context.Context, cfg Config, vms []VM) (string, error) {
	order, err := cfg.Kernel.LoadOrder(moduleList(cfg.Modules)...)
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	init, err := InitScript(cfg.Kernel.Release, order, cfg.MTU, vms)
	if err != nil {
		return "", err
	}
	a, _, err := BuildImage(ctx, ImageConfig{Kernel: cfg.Kernel, Modules: cfg.Modules, Binaries: cfg.Binaries, Init: init})
	if err != nil {
		return "", err
	}
	for _, vm := range vms {
		if err := a.File("/vmtest/"+vm.Name+".sh", []byte(vm.Script+"\n"), 0o755); err != nil {
			return "", err
		}
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		return "", err
	}
	p := filepath.Join(cfg.WorkDir, "initramfs.cpio")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	return p, nil
}

func moduleList(m []string) []string {
	if m == nil {
		return BaseModules
	}
	return m
}

// hub is the private Ethernet between the VMs: each VM's socket netdev
// sends its frames to its own UDP port here, and the hub floods every
// frame to all the other VMs. qemu's point-to-point UDP netdev joins only
// two VMs; the hub joins any number, with no host multicast routing.
type hub struct {
	conns []*net.UDPConn
	vms   []*net.UDPAddr
	wg    sync.WaitGroup
	wire  *wireCapture // nil unless Config.WireCapture
}

func newHub(n int, capture string) (*hub, error) {
	h := &hub{}
	if capture != "" {
		var err error
		if h.wire, err = newWireCapture(capture); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			h.close()
			return nil, fmt.Errorf("vmtest: hub socket: %w", err)
		}
		h.conns = append(h.conns, c)
		// A port for the VM's end: bind one to learn a free number and
		// release it for qemu.
		v, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			h.close()
			return nil, fmt.Errorf("vmtest: hub socket: %w", err)
		}
		h.vms = append(h.vms, v.LocalAddr().(*net.UDPAddr))
		v.Close()
	}
	for i := range h.conns {
		h.wg.Add(1)
		go h.forward(i)
	}
	return h, nil
}

func (h *hub) hubAddr(i int) string { return h.conns[i].LocalAddr().String() }
func (h *hub) vmAddr(i int) string  { return h.vms[i].String() }

// forward floods VM i's frames to the other VMs until the hub closes.
func (h *hub) forward(i int) {
	defer h.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := h.conns[i].ReadFromUDP(buf)
		if err != nil {
			return
		}
		h.wire.write(buf[:n])
		for j, c := range h.conns {
			if j != i {
				_, _ = c.WriteToUDP(buf[:n], h.vms[j])
			}
		}
	}
}

func (h *hub) close() {
	for _, c := range h.conns {
		c.Close()
	}
	h.wg.Wait()
	h.wire.close()
}
