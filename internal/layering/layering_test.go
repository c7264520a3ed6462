package layering

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	modulePath = "github.com/ipoibd/ipoibd"
	docPath    = "docs/architecture.md"
	beginMark  = "<!-- layers:begin"
	endMark    = "<!-- layers:end"
	gvisorPath = "gvisor.dev/gvisor"
)

// Kinds of row in the table.
const (
	kindLayer   = "layer"
	kindDriver  = "driver"
	kindAPI     = "api"
	kindCommand = "command"
	kindTest    = "test"
)

// noRank is the rank of test packages: outside the order.
const noRank = -1

// row is one package of the table.
type row struct {
	rank int
	kind string
}

// moduleRoot is two directories up from this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// readTable parses the rows between the markers of docs/architecture.md:
// | rank | `package` | kind | what it owns |.
func readTable(t *testing.T, root string) map[string]row {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, docPath))
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]row{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, beginMark):
			in = true
			continue
		case strings.HasPrefix(line, endMark):
			in = false
			continue
		}
		if !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "| rank") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			t.Fatalf("%s:%d: want | rank | package | kind | ..., got %q", docPath, n, line)
		}
		rankText := strings.TrimSpace(cells[0])
		pkg := strings.Trim(strings.TrimSpace(cells[1]), "`")
		kind := strings.TrimSpace(cells[2])
		r := row{rank: noRank, kind: kind}
		if rankText != "-" {
			if r.rank, err = strconv.Atoi(rankText); err != nil {
				t.Fatalf("%s:%d: rank %q: %v", docPath, n, rankText, err)
			}
		}
		switch kind {
		case kindLayer, kindDriver, kindAPI, kindCommand:
			if r.rank == noRank {
				t.Fatalf("%s:%d: %s %s needs a rank", docPath, n, kind, pkg)
			}
		case kindTest:
			if r.rank != noRank {
				t.Fatalf("%s:%d: test package %s takes rank -", docPath, n, pkg)
			}
		default:
			t.Fatalf("%s:%d: unknown kind %q", docPath, n, kind)
		}
		if _, dup := table[pkg]; dup {
			t.Fatalf("%s:%d: %s listed twice", docPath, n, pkg)
		}
		table[pkg] = r
	}
	if len(table) == 0 {
		t.Fatalf("%s: no table between %q and %q", docPath, beginMark, endMark)
	}
	return table
}

// pkgInfo is what go list says of one package of the module.
type pkgInfo struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// listModule runs go list -deps over the module and keeps its own
// packages, keyed by path relative to the module ("." for the root).
func listModule(t *testing.T, root string) map[string]pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-test=false", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	pkgs := map[string]pkgInfo{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if rel, ok := relative(p.ImportPath); ok {
			pkgs[rel] = p
		}
	}
	return pkgs
}

// relative turns a module import path into the table's form.
func relative(path string) (string, bool) {
	if path == modulePath {
		return ".", true
	}
	rel, ok := strings.CutPrefix(path, modulePath+"/")
	return rel, ok
}

// check returns why importer (with its row) may not import imported, or
// "" when it may. test says the import is from a _test.go file.
func check(importer string, from row, imported string, to row, test bool) string {
	switch {
	case imported == importer:
		return "" // an external test package importing its own package
	case to.kind == kindCommand:
		return "imports a command"
	case from.kind == kindTest:
		return ""
	case to.kind == kindTest:
		if test {
			return ""
		}
		return "imports a test package outside its tests"
	case test && to.kind == kindDriver:
		return "" // tests of any package may run on the simulator or another driver
	case to.kind == kindDriver && from.kind != kindAPI && from.kind != kindCommand:
		return fmt.Sprintf("imports driver %s: only the API and the commands name a driver; reach it through ib's table", imported)
	case to.rank >= from.rank:
		return fmt.Sprintf("imports %s (rank %d) from rank %d: imports point down only", imported, to.rank, from.rank)
	}
	return ""
}

func TestLayering(t *testing.T) {
	root := moduleRoot(t)
	table := readTable(t, root)
	pkgs := listModule(t, root)
	stackRank := table["stack"].rank

	for name := range table {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("%s lists %s, which is not a package of the module", docPath, name)
		}
	}
	for name, p := range pkgs {
		from, ok := table[name]
		if !ok {
			t.Errorf("package %s has no row in %s: give it a rank and say what it owns", name, docPath)
			continue
		}
		lists := []struct {
			imports []string
			test    bool
		}{{p.Imports, false}, {p.TestImports, true}, {p.XTestImports, true}}
		for _, l := range lists {
			for _, imp := range l.imports {
				if strings.HasPrefix(imp, gvisorPath) && !l.test && from.kind != kindTest && from.rank < stackRank {
					t.Errorf("%s imports gVisor (%s): only stack and above may", name, imp)
				}
				rel, ok := relative(imp)
				if !ok {
					continue
				}
				to, ok := table[rel]
				if !ok {
					continue // reported above
				}
				if why := check(name, from, rel, to, l.test); why != "" {
					where := name
					if l.test {
						where += " (tests)"
					}
					t.Errorf("%s %s", where, why)
				}
			}
		}
	}
}

// TestCheck pins the rule on a few imports the real graph must never
// have, so that a rule broken by an edit to check shows here.
func TestCheck(t *testing.T) {
	stack := row{7, kindLayer}
	ib := row{1, kindLayer}
	ipoib := row{5, kindLayer}
	sim := row{3, kindDriver}
	api := row{8, kindAPI}
	cmd := row{9, kindCommand}
	harness := row{noRank, kindTest}
	tests := []struct {
		name         string
		from, to     row
		test, permit bool
	}{
		{"down", stack, ib, false, true},
		{"up", ib, stack, false, false},
		{"sideways", ipoib, ipoib, false, false},
		{"layer names a driver", ipoib, sim, false, false},
		{"layer's test runs on the simulator", ipoib, sim, true, true},
		{"api registers a driver", api, sim, false, true},
		{"layer imports a harness", stack, harness, false, false},
		{"layer's test imports a harness", stack, harness, true, true},
		{"harness imports the api", harness, api, false, true},
		{"harness imports a command", harness, cmd, false, false},
		{"test imports up", ib, stack, true, false},
	}
	for _, tc := range tests {
		why := check("from", tc.from, "to", tc.to, tc.test)
		if (why == "") != tc.permit {
			t.Errorf("%s: check says %q, want permitted=%v", tc.name, why, tc.permit)
		}
	}
}
