package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestShNamesWhatIsMissing runs test.sh's first step on a PATH that
// has only bash and the two tools it uses, as on a fresh machine with Go
// and nothing else: its first lines must name the one command that
// installs gcc and tshark, and what is skipped without them.
func TestTestShNamesWhatIsMissing(t *testing.T) {
	root := moduleRoot(t)
	bin := t.TempDir()
	for _, tool := range []string{"bash", "dirname", "id"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s not found", tool)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "bash"), filepath.Join(root, "test.sh"))
	cmd.Env = []string{"PATH=" + bin, "IPOIBD_PREFLIGHT_ONLY=1", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("test.sh preflight: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "== missing: ") {
		t.Fatalf("first line %q, want the missing packages:\n%s", lines[0], out)
	}
	install := lines[1]
	if !strings.Contains(install, "apt-get install") || strings.Count(install, "apt-get install") != 1 {
		t.Errorf("second line %q, want one apt-get install command", install)
	}
	for _, pkg := range []string{" gcc", " tshark", " qemu-system-x86"} {
		if !strings.Contains(install, pkg) {
			t.Errorf("install line %q lacks%s", install, pkg)
		}
	}
	for _, skip := range []string{"race detector", "tshark", "qemu soft-RoCE tests"} {
		if !strings.Contains(string(out), "skipped without them: ") || !strings.Contains(string(out), skip) {
			t.Errorf("test.sh does not say it skips %q:\n%s", skip, out)
		}
	}
}
