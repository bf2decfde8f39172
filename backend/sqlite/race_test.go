//go:build race

package sqlite_test

// raceEnabled: the race detector (with checkptr) slows modernc.org/sqlite,
// which is C translated to Go, about tenfold; the process tests then do
// less work.
const raceEnabled = true
