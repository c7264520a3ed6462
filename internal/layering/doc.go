// Package layering holds the test that keeps the import graph as
// docs/architecture.md draws it. The table of ranks lives in that page,
// between the layers:begin and layers:end markers, so the picture a
// reader sees and the rule the test enforces cannot drift apart: change
// the table and the test follows, add a package without a row and the
// test fails.
package layering
