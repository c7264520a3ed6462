//go:build !race

package ipoib

// raceEnabled is false outside -race builds: the data-path calls trust
// their caller to be on the cache's loop; the race-detector runs check.
const raceEnabled = false
