package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// TestReliabilityDocCorpusCounts: the corpus column of docs/reliability.md's
// fuzz table gives, for each target of a row, the number of inputs checked
// in under the package's testdata/fuzz/TARGET.
func TestReliabilityDocCorpusCounts(t *testing.T) {
	root := moduleRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## What is fuzzed")
	table, _, _ = strings.Cut(table, "\n## ")
	targetRE := regexp.MustCompile("`(Fuzz[A-Za-z0-9_]*)`")
	var rows int
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 6 || !strings.Contains(cells[2], "`Fuzz") {
			continue
		}
		rows++
		pkg := strings.TrimSpace(cells[1])
		targets := targetRE.FindAllStringSubmatch(cells[2], -1)
		counts := strings.Split(cells[4], ",")
		if len(counts) != len(targets) {
			t.Errorf("%s: %d targets, %d corpus counts", pkg, len(targets), len(counts))
			continue
		}
		for i, m := range targets {
			entries, err := os.ReadDir(filepath.Join(root, pkg, "testdata", "fuzz", m[1]))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if got, want := strconv.Itoa(len(entries)), strings.TrimSpace(counts[i]); got != want {
				t.Errorf("%s %s: the table says %s inputs, %d are checked in", pkg, m[1], want, len(entries))
			}
		}
	}
	if rows < 10 {
		t.Errorf("read only %d rows of the fuzz table: the parsing is broken", rows)
	}
}
