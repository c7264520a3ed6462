package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrUnavailable says something the VM tests need is missing on this
// machine (qemu, busybox, the kernel package, a tool); tests skip on it
// rather than fail.
var ErrUnavailable = errors.New("vmtest: not available on this machine")

// Kernel is a Debian kernel package unpacked into a cache directory.
type Kernel struct {
	// Release is the kernel release, the name of its lib/modules folder
	// ("6.1.0-56-amd64").
	Release string
	// Root is where the package was unpacked (holding boot/ and
	// lib/modules/).
	Root string
	// Image is the bootable kernel image (boot/vmlinuz-<release>).
	Image string
	// deps maps a module name to its file (relative to the modules
	// folder) and the files it depends on, from modules.dep.
	deps map[string]moduleDeps
}

type moduleDeps struct {
	file string
	deps []string
}

// CacheDir returns the folder the harness keeps kernels and images in:
// $IPOIBD_VMTEST_CACHE, else <user cache dir>/ipoibd-vmtest, else
// /var/cache/ipoibd-vmtest.
func CacheDir() (string, error) {
	dir := os.Getenv("IPOIBD_VMTEST_CACHE")
	if dir == "" {
		if c, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(c, "ipoibd-vmtest")
		} else {
			dir = "/var/cache/ipoibd-vmtest"
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("vmtest: cache folder: %w", err)
	}
	return dir, nil
}

// kernelPackageRE matches the versioned image package that Debian's
// linux-image-amd64 metapackage depends on.
var kernelPackageRE = regexp.MustCompile(`Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b`)

// KernelPackage asks apt which versioned kernel package
// linux-image-amd64 stands for ("linux-image-6.1.0-56-amd64").
func KernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %w: %w", err, ErrUnavailable)
	}
	m := kernelPackageRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package (run apt-get update?): %w", ErrUnavailable)
	}
	return string(m[1]), nil
}

// FetchKernel makes the kernel package pkg available unpacked under
// cache: it downloads the .deb with apt-get download (nothing is
// installed on the host), unpacks it with dpkg-deb -x and builds
// modules.dep with depmod -b, which the package does not ship. Work
// already done by an earlier run is reused.
func FetchKernel(ctx context.Context, cache, pkg string) (*Kernel, error) {
	root := filepath.Join(cache, pkg)
	stamp := filepath.Join(root, ".ready")
	if _, err := os.Stat(stamp); err != nil {
		if err := unpackKernel(ctx, cache, pkg, root); err != nil {
			return nil, err
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
	}
	return LoadKernel(root)
}

func unpackKernel(ctx context.Context, cache, pkg, root string) error {
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) == 0 {
		for _, tool := range []string{"apt-get", "dpkg-deb", "depmod"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("vmtest: %s not found: %w", tool, ErrUnavailable)
			}
		}
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("vmtest: apt-get download %s: %w: %s: %w", pkg, err, tail(out, 400), ErrUnavailable)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		if len(debs) == 0 {
			return fmt.Errorf("vmtest: apt-get download %s left no .deb in %s: %w", pkg, cache, ErrUnavailable)
		}
	}
	tmp := root + ".tmp"
	_ = os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: dpkg-deb -x %s: %w: %s", debs[0], err, tail(out, 400))
	}
	rels, _ := filepath.Glob(filepath.Join(tmp, "lib/modules/*"))
	if len(rels) != 1 {
		return fmt.Errorf("vmtest: %s holds %d module folders, want 1", debs[0], len(rels))
	}
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		// Debian keeps depmod in /usr/sbin, outside a normal user's PATH.
		depmod = "/usr/sbin/depmod"
	}
	if out, err := exec.CommandContext(ctx, depmod, "-b", tmp, filepath.Base(rels[0])).CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: depmod -b %s: %w: %s", tmp, err, tail(out, 400))
	}
	_ = os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}

// LoadKernel reads an unpacked kernel package (one lib/modules/<release>
// folder with a modules.dep, and boot/vmlinuz-<release>).
func LoadKernel(root string) (*Kernel, error) {
	rels, _ := filepath.Glob(filepath.Join(root, "lib/modules/*"))
	if len(rels) != 1 {
		return nil, fmt.Errorf("vmtest: %s: want exactly one lib/modules/<release>, found %d", root, len(rels))
	}
	k := &Kernel{Release: filepath.Base(rels[0]), Root: root}
	k.Image = filepath.Join(root, "boot", "vmlinuz-"+k.Release)
	if _, err := os.Stat(k.Image); err != nil {
		return nil, fmt.Errorf("vmtest: kernel image: %w", err)
	}
	f, err := os.Open(filepath.Join(rels[0], "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	k.deps, err = parseModulesDep(f)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", f.Name(), err)
	}
	return k, nil
}

// ModulesDir is the folder module files are relative to.
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Root, "lib/modules", k.Release)
}

// moduleName turns a module file path into the name the kernel uses:
// the base name without .ko and compression suffix, dashes as
// underscores.
func moduleName(file string) string {
	b := filepath.Base(file)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// parseModulesDep reads depmod's modules.dep: one line per module,
// "file: dep dep ...", dependencies listed so that the last is loaded
// first.
func parseModulesDep(r io.Reader) (map[string]moduleDeps, error) {
	out := map[string]moduleDeps{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		file, rest, ok := strings.Cut(text, ":")
		if !ok || file == "" {
			return nil, fmt.Errorf("modules.dep line %d: no \"file:\" prefix", line)
		}
		out[moduleName(file)] = moduleDeps{file: file, deps: strings.Fields(rest)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return out, nil
}

// LoadOrder returns the module files (relative to ModulesDir) to insmod,
// in order, so that the named modules load with everything they depend
// on, each file once, dependencies first, the named ones in the order
// given.
func (k *Kernel) LoadOrder(names ...string) ([]string, error) {
	return loadOrder(k.deps, names)
}

func loadOrder(deps map[string]moduleDeps, names []string) ([]string, error) {
	var out []string
	done := map[string]bool{}
	var visit func(name string, depth int) error
	visit = func(name string, depth int) error {
		if done[name] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module %s: dependency chain too deep (a cycle?)", name)
		}
		m, ok := deps[name]
		if !ok {
			return fmt.Errorf("module %s: not in modules.dep", name)
		}
		for i := len(m.deps) - 1; i >= 0; i-- {
			if err := visit(moduleName(m.deps[i]), depth+1); err != nil {
				return fmt.Errorf("module %s: %w", name, err)
			}
		}
		done[name] = true
		out = append(out, m.file)
		return nil
	}
	for _, n := range names {
		if err := visit(strings.ReplaceAll(n, "-", "_"), 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tail returns the last n bytes of b as a string, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
