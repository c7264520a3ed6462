//go:build race

package aio

// raceEnabled turns on the home-goroutine checks of the hot home-only calls
// (Poll, Timer methods), which cost a gettid system call each.
const raceEnabled = true
