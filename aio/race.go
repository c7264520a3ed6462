//go:build race

package aio

// raceEnabled turns on the home-goroutine checks of the hot home-only calls
// (Poll, Timer methods), kept to race-detector runs, which hunt such misuse.
const raceEnabled = true
