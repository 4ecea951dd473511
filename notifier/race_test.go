//go:build race

package notifier

// raceSlowdown is how much slower the race detector makes the code, for timing checks.
const raceSlowdown = 4
