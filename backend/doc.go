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
// Two optional interfaces change only the number of round trips, and are
// checked with a type assertion where they are used, without a flag:
// MultiGetter (GetMany: a receiver of an event that omitted many values
// fetches them in bulk) and ConflictError (a refused condition says what
// the key holds now, so Modify retries without reading it).
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
// its own atomic step (the Redis backend builds it in a Lua script, byte for
// byte as EncodeEvent does). contextd still owns it: backends produce it
// only through this package's functions or the layout documented in
// event.go.
//
// The format is binary and versioned by its first byte. EncodeEvent writes
// version 2: ids (epoch, commit, parent, origin) travel in binary when they
// are lowercase hex of even length, as contextd's and its backends' are, and
// as they are otherwise; the revision is a uvarint. One put costs its value
// plus about 50 bytes. DecodeEvent reads version 1 too, so during a rolling
// upgrade instances of this release apply the events of instances of the
// previous release; those, which know only version 1, take a version 2
// event for an invalid one and catch up from the store instead — correct,
// but slower, until they are upgraded.
package backend
