// Package backend defines what contextd needs from a storage backend, in
// bytes: a Store that keeps a context's entries with revisions, plus a
// locker.Locker and a broadcaster.Broadcaster. Backend is the three together;
// the memory and Redis backends implement it in one type, and Compose mixes
// parts of different backends.
//
// # Optional capabilities
//
// A backend can do better than the generic write path (acquire locks, commit,
// publish, release) when it offers capabilities, reported by Capable and
// backed by the optional interfaces of this package and of package locker:
//
//   - AtomicPublish (AtomicPublisher): Commit publishes its event in the same
//     atomic step, so a write costs one round trip and no event can be lost
//     between commit and publish.
//   - LockAwareCommit: Commit itself refuses a write to a key that another
//     holder has locked (ErrLocked) and a write carrying a lease that is no
//     longer held (locker.ErrNotHeld). Writes then need no lock round trips
//     when keys are free, and fenced writes are exact.
//   - ChangeLog (ChangeLog): the store keeps recent events, so an instance
//     that missed some fetches just those instead of a whole snapshot.
//   - ReleaseNotify (locker.ReleaseWatcher): waiters wake up on release
//     instead of sleeping a retry delay.
//
// contextd looks the capabilities up once, with CapabilitiesOf, when a
// Context is built. The conformance package checks both the capabilities a
// backend declares and the absence of those it does not.
//
// # Errors
//
// A backend does one job per call: it does not retry, keeps the raw cause
// reachable with %w, and translates its own errors at the boundary into the
// sentinels below (for example redis.Nil into ErrNotFound). contextd wraps
// them once more with the context name and key.
//
// # Events
//
// The event wire format (EncodeEvent, DecodeEvent) lives here rather than in
// package contextd because a store with AtomicPublish must produce it inside
// its own atomic step (the Redis backend frames it in a Lua script). contextd
// still owns it: backends only ever produce it through this package's
// functions or the framing described on EncodeEvent.
package backend
