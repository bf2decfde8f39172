package sqlite

import "time"

// Fairness between writers of different connections.
//
// SQLite queues nobody for its write lock: a connection that finds it taken
// polls (retry), while the holder's Backend hands its write connection
// straight to its next queued goroutine, which takes the lock again at
// once. A process that writes without pause could so keep the lock from
// others for longer than BusyTimeout. The gate lets waiters say that they
// wait, and a holder with waiters step back after its commit: it keeps its
// write connection (so its own queue pauses too) until no waiter is left
// waiting (a waiter withdraws as soon as it holds the lock) or handOffMax
// has passed. Then it goes on, and if the lock is taken, waits in turn.
//
// Waiters say so with a shared flock(2) on a side file, <db>-contextd-wait,
// and a holder probes with an exclusive, non-blocking one on a descriptor
// of its own. Only that side file is opened: closing a descriptor of the
// database's own files would drop SQLite's POSIX locks. Where flock is not
// available the gate does nothing.

// handOffMax bounds how long a holder steps back for waiters: a few of
// their polling pauses (at most 250 µs each).
const handOffMax = time.Millisecond

// handOffPoll is the pause between two probes while stepping back.
const handOffPoll = 100 * time.Microsecond

// handOff steps back while other connections wait for the write lock, at
// most handOffMax. It is called with the write connection held, right
// after a commit.
func (b *Backend) handOff() {
	if !b.gate.othersWaiting() {
		return
	}
	deadline := time.Now().Add(handOffMax)
	for time.Now().Before(deadline) {
		time.Sleep(handOffPoll)
		if !b.gate.othersWaiting() {
			return
		}
	}
}
