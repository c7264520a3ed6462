//go:build !race

package aio

// raceEnabled is false outside -race builds: the hot home-only calls trust
// their caller there; the race-detector runs check.
const raceEnabled = false
