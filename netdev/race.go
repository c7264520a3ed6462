//go:build race

package netdev

// raceEnabled turns on the home-loop check of the data-path calls
// (Transmit, TxComplete, Receive, ...), which costs a gettid system call
// per packet: worth it in race-detector runs, not in production.
const raceEnabled = true
