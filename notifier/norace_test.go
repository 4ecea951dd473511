//go:build !race

package notifier

// raceSlowdown is 1 without the race detector.
const raceSlowdown = 1
