package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReliabilityDocListsEveryFuzzTarget: docs/reliability.md's table of
// fuzz targets names every fuzz target in the module.
func TestReliabilityDocListsEveryFuzzTarget(t *testing.T) {
	root := moduleRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	fuzzRE := regexp.MustCompile(`(?m)^func (Fuzz[A-Za-z0-9_]*)\(`)
	var found int
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzRE.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(string(doc), "`"+m[1]+"`") {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s: %s is not in docs/reliability.md", rel, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 10 {
		t.Errorf("found only %d fuzz targets: the search is broken", found)
	}
}
