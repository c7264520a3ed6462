//go:build race

package netdev

// raceEnabled turns on the home-loop check of the data-path calls
// (Transmit, TxComplete, Receive, ...), a goroutine-id read and a
// branch per packet: kept to race-detector runs, which hunt such misuse.
const raceEnabled = true
