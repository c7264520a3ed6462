//go:build !race

package netdev

// raceEnabled is false outside -race builds: the data-path calls trust
// their caller to be on the device's loop; the race-detector runs check.
const raceEnabled = false
