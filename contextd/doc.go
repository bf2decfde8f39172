// Package contextd keeps a typed key→value map shared by many processes; its
// Context type is unrelated to the standard library's context.Context.
//
// A context is a named map stored in a backend (Redis in production, memory
// when embedded or in tests). Every process that opens it with New and
// Initialize holds a local copy of the whole map, kept in sync by change
// events, so reads (Get, GetContext) cost no round trip. Writes
// (UpdateContext, TransactionalUpdate, Delete, Modify) are atomic, respect
// per-key locks (AcquireLock), and are published to every other instance.
//
//	b := memory.New(nil) // or redis.Open(&redis.Options{...})
//	shared, err := contextd.New[User](b, "my_cxtd", nil)
//	...
//	err = shared.Initialize(ctx)
//	err = shared.UpdateContext(ctx, "user", User{Name: "John Doe"})
//	all, err := shared.GetContext(ctx)
//
// The names follow the original TypeScript/Python library: initialize,
// updateContext, transactionalUpdate, getContext and acquireLock({key,
// lockTimeout, retryDelay, maxRetries}) with the same defaults (10 s,
// 100 ms, 50).
//
// # Guarantees
//
//   - Writes are atomic (a TransactionalUpdate is seen whole or not at all)
//     and linearizable: each takes effect at one point between call and
//     return, in one total order, the context revision.
//   - Each instance reads its own writes and never sees a key go back to an
//     older value (monotonic reads): a change is applied to the copy only if
//     its revision is newer than the key's.
//   - After writes stop, every instance converges to the store's state: a
//     missed event is noticed (a revision gap, a loss signal from the
//     broadcaster, a changed epoch, or the periodic check every
//     Options.ResyncInterval) and repaired from the backend's change log or
//     a snapshot.
//   - Get with Fresh and Sync give linearizable reads.
//   - Modify, and so a counter incremented from many instances, loses no
//     update.
//   - A held lock blocks other writers of its key until it is released or
//     expires; a write WithLock a lost lock is refused.
//
// What the local copy is not: a guarantee that another instance has seen a
// write when UpdateContext returns. Use Sync or Fresh where that matters.
//
// # Values
//
// T is any type the codec (Options.Codec, JSON by default) can encode.
// Values are decoded once, when they arrive; the copy holds what every
// instance decodes, also for this instance's own writes, which it keeps as
// written only where the codec vouches that they decode to exactly that
// (codec.Exact: for JSON, types of booleans, numbers and strings in arrays
// and structs of plain exported fields). GetContext returns a new map,
// but values holding maps, slices or pointers share memory with the copy:
// treat them as read-only. A value that does not decode (written by another
// program) makes reads of that key fail with an error matching ErrDecode
// that names it; other keys stay readable.
//
// # Errors
//
// Errors name the context and the key and are matched with errors.Is:
// ErrNotInitialized, ErrClosed, ErrLockNotAcquired, ErrLockLost (ErrNotHeld),
// ErrConflict, ErrCodecMismatch, ErrStale, ErrDecode; a cancelled or expired
// ctx gives an error matching ctx.Err(). Bad input (an empty key, a value
// that does not encode) gives an error and writes nothing. Nothing panics.
//
// # Concurrency and lifetime
//
// All methods are safe for concurrent use. After Initialize, a Context runs
// one goroutine that reads its subscription and one that retries failed
// catch-ups and runs the periodic check; each Watch adds one until its ctx
// ends. Close stops and waits for
// all of them, closes Watch channels, and releases the locks still held
// through the Context; it never closes the backend, which belongs to whoever
// created it.
//
// # Backends
//
// A backend implements backend.Store, locker.Locker and
// broadcaster.Broadcaster (backend.Backend); backend.Compose mixes parts of
// different backends. Optional capabilities (backend.Capabilities) make
// writes cheaper: with atomic publishing and lock-aware commits an
// UpdateContext of a free key is one round trip. Without them the Context
// falls back to acquire locks → commit → publish → release, which gives the
// same guarantees at more round trips; then a write WithLock renews its lock
// just before the commit instead of the store checking it atomically. The
// conformance package checks a backend against all of this.
package contextd
