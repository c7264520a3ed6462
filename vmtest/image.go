package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Guest folders the image and the PID-1 script agree on.
const (
	// GuestShare is where the host's shared folder is mounted (9p).
	GuestShare = "/share"
	// guestApplets holds busybox's applet links, last in PATH so that
	// iproute2's ip and rdma win over busybox's look-alikes.
	guestApplets = "/bb"
	// shareTag is the 9p mount tag of the shared folder.
	shareTag = "share"
)

// BaseModules are the kernel modules every VM loads, in this order:
// virtio PCI and network for eth0, crc32_generic before rdma_rxe (which
// otherwise fails with "failed to init crc32 algorithm err:-2"), rdma_rxe,
// the verbs and MAD character devices, the 9p file system for the shared
// folder, and virtio-rng so the guest has entropy at once (a Go binary's
// runtime reads getrandom at start).
var BaseModules = []string{
	"virtio_pci", "virtio_net", "crc32_generic", "rdma_rxe", "ib_uverbs", "ib_umad",
	"9pnet_virtio", "9p", "virtio_rng",
}

// hostTools are the host programs copied into every image. busybox
// (static) provides the shell and the basic commands; iproute2's ip and
// rdma configure the link and create rxe0 (busybox's ip cannot); ibv_devinfo
// prints the device for the log.
var hostTools = []string{"busybox", "ip", "rdma", "ibv_devinfo"}

// providerFiles are the libibverbs provider for rdma_rxe, the file that
// tells libibverbs to load it, and rdma-core's libraries themselves: the
// verbs driver loads them with dlopen, so ldd does not name them.
var providerFiles = []string{
	"/usr/lib/x86_64-linux-gnu/libibverbs.so.1",
	"/usr/lib/x86_64-linux-gnu/libibumad.so.3",
	"/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so",
	"/etc/libibverbs.d/rxe.driver",
}

// guestModulePath is where a module file goes in the image: under
// /usr/lib, the real folder behind the /lib symlink.
func guestModulePath(release, file string) string {
	return filepath.Join("/usr/lib/modules", release, file)
}

// lookTool finds a host program, also in the sbin folders a non-root PATH
// leaves out.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("vmtest: host program %s not found: %w", name, ErrUnavailable)
}

// imagePath is where a host file goes in the image: its folder with
// symlinks resolved (so /lib/x86_64-linux-gnu/libc.so.6 lands in
// /usr/lib/...) and its own name kept (so a library's soname survives even
// when the host file is a symlink to a versioned name).
func imagePath(host string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Dir(host))
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	return filepath.Join(dir, filepath.Base(host)), nil
}

// addHostFile copies a host file (following symlinks) into the image.
func addHostFile(a *Archive, host string) error {
	dst, err := imagePath(host)
	if err != nil {
		return err
	}
	if a.Has(dst) {
		return nil
	}
	data, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	st, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return a.File(dst, data, st.Mode().Perm())
}

// sharedLibs lists the shared libraries (and the dynamic loader) an ELF
// file needs, as ldd reports them; a static file needs none.
func sharedLibs(ctx context.Context, file string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", file).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) || bytes.Contains(out, []byte("statically linked")) {
			return nil, nil
		}
		return nil, fmt.Errorf("vmtest: ldd %s: %w: %s", file, err, tail(out, 300))
	}
	return parseLDD(out)
}

// parseLDD extracts the library paths from ldd's output.
func parseLDD(out []byte) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("vmtest: ldd: %s", line)
		}
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
				break
			}
		}
	}
	return libs, nil
}

// ImageConfig says what goes into a VM's initramfs.
type ImageConfig struct {
	// Kernel supplies the modules.
	Kernel *Kernel
	// Modules are loaded at boot after their dependencies; nil means
	// BaseModules.
	Modules []string
	// Binaries are host ELF files the guest will run (from the shared
	// folder, typically); the image gets the shared libraries they need.
	Binaries []string
	// Init is the PID-1 script, from InitScript.
	Init string
}

// BuildImage assembles the initramfs: the merged-/usr folder layout of
// the host, busybox and the host tools, the rxe provider, the kernel
// modules, every shared library the tools and cfg.Binaries need, and
// cfg.Init as /init. It returns the archive and the module files in load
// order (relative to the release's modules folder).
func BuildImage(ctx context.Context, cfg ImageConfig) (*Archive, []string, error) {
	if cfg.Kernel == nil {
		return nil, nil, fmt.Errorf("vmtest: build image: no kernel")
	}
	a := NewArchive()
	for _, l := range [][2]string{{"/bin", "usr/bin"}, {"/sbin", "usr/sbin"}, {"/lib", "usr/lib"}, {"/lib64", "usr/lib64"}} {
		if err := a.Symlink(l[0], l[1]); err != nil {
			return nil, nil, err
		}
	}
	for _, d := range []string{"/usr/bin", "/usr/sbin", "/usr/lib64", "/proc", "/sys", "/dev", "/tmp", "/run", "/etc", GuestShare, guestApplets} {
		if err := a.Dir(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	var elves []string
	for _, t := range hostTools {
		p, err := lookTool(t)
		if err != nil {
			return nil, nil, err
		}
		if err := addHostFile(a, p); err != nil {
			return nil, nil, err
		}
		elves = append(elves, p)
	}
	for _, p := range providerFiles {
		if _, err := os.Stat(p); err != nil {
			return nil, nil, fmt.Errorf("vmtest: rxe provider (package ibverbs-providers): %w: %w", err, ErrUnavailable)
		}
		if err := addHostFile(a, p); err != nil {
			return nil, nil, err
		}
	}
	elves = append(elves, providerFiles[0])
	elves = append(elves, cfg.Binaries...)
	for _, e := range elves {
		libs, err := sharedLibs(ctx, e)
		if err != nil {
			return nil, nil, err
		}
		for _, l := range libs {
			if err := addHostFile(a, l); err != nil {
				return nil, nil, err
			}
		}
	}
	mods := cfg.Modules
	if mods == nil {
		mods = BaseModules
	}
	order, err := cfg.Kernel.LoadOrder(mods...)
	if err != nil {
		return nil, nil, fmt.Errorf("vmtest: %w", err)
	}
	for _, m := range order {
		data, err := os.ReadFile(filepath.Join(cfg.Kernel.ModulesDir(), m))
		if err != nil {
			return nil, nil, fmt.Errorf("vmtest: %w", err)
		}
		if err := a.File(guestModulePath(cfg.Kernel.Release, m), data, 0o644); err != nil {
			return nil, nil, err
		}
	}
	if err := a.File("/init", []byte(cfg.Init), 0o755); err != nil {
		return nil, nil, err
	}
	return a, order, nil
}
