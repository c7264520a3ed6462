package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
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
	// go test hides the skip lines of a passing package: test.sh's line
	// is the one a run without the OpenSM tests shows. Without gcc they
	// cannot run (the verbs driver's C side reaches ibsim).
	if !strings.Contains(lineWith(lines, "race detector"), "OpenSM on ibsim tests (smtest)") {
		t.Errorf("test.sh does not say the OpenSM tests skip without gcc:\n%s", out)
	}
	// test.sh also finds the OpenSM tools where Debian puts them, outside
	// this PATH: only a machine without one names its package.
	for _, tool := range []struct{ path, pkg string }{
		{"/usr/bin/ibsim", "ibsim-utils"}, {"/usr/sbin/opensm", "opensm"}, {"/usr/sbin/saquery", "infiniband-diags"},
	} {
		if _, err := os.Stat(tool.path); err == nil {
			continue
		}
		if !strings.Contains(install, " "+tool.pkg) {
			t.Errorf("install line %q lacks %s (no %s)", install, tool.pkg, tool.path)
		}
		if !strings.Contains(string(out), "the OpenSM on ibsim tests (go test ./smtest") {
			t.Errorf("test.sh does not say it skips the OpenSM tests without %s:\n%s", tool.path, out)
		}
	}
}

// lineWith is the first of lines that contains s, or "".
func lineWith(lines []string, s string) string {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestAllocTestsRunWithoutRace: test.sh runs the steady-state allocation
// tests without the race detector (which allocates, so they skip under
// it) by name, with -run 'Alloc'. Every test that counts allocations must
// match that pattern, or it never runs anywhere.
func TestAllocTestsRunWithoutRace(t *testing.T) {
	root := moduleRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "test.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "go test -count=1 -run 'Alloc' ./...") {
		t.Fatal("test.sh no longer runs the allocation tests without -race as this test expects")
	}
	fset := token.NewFileSet()
	var found int
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil || !strings.HasPrefix(fn.Name.Name, "Test") {
				continue
			}
			counts := false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "AllocsPerRun" {
					counts = true
				}
				return !counts
			})
			if !counts {
				continue
			}
			found++
			if !strings.Contains(fn.Name.Name, "Alloc") {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s: %s counts allocations but its name lacks \"Alloc\": test.sh never runs it without -race", rel, fn.Name.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 5 {
		t.Errorf("found only %d allocation tests: the search is broken", found)
	}
}
