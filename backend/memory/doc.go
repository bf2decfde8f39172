// Package memory is the in-process contextd backend: one type, Backend, that
// is a backend.Store, a locker.Locker and a broadcaster.Broadcaster at once,
// with every optional capability (atomic publish, lock-aware commit, change
// log, release notification).
//
// It is the embedded default and the reference backend. Several contextd
// Contexts that share one *Backend behave like processes that share one
// Redis: they see the same entries, revisions, locks and messages, and the
// conformance suite holds both backends to the same rules.
//
// # Capabilities
//
// Every capability is on by default. Options can switch each one off, and
// then it is really off, not only unreported: with DisableLockAwareCommit,
// Commit ignores locks and Batch.Leases; with DisableAtomicPublish,
// CommitAndPublish fails; with DisableChangeLog no log is kept and
// ChangesSince fails; with DisableReleaseNotify, WatchRelease fails. The
// failing methods return errors matching errors.ErrUnsupported. This lets
// tests run contextd's generic write path against the same backend.
//
// # Errors
//
// Errors start with "memory:", name the context and key they are about, and
// wrap the sentinels of packages backend, locker and broadcaster with %w, so
// callers match them with errors.Is. A ctx that is already done makes a
// method return an error wrapping ctx.Err() before it does anything. After
// Close every method returns an error matching ErrClosed.
//
// # Concurrency
//
// Every method is safe for concurrent use. The backend starts no goroutines
// and no timers: a lock expires when a later call finds its deadline past,
// and a Subscription's Next waits on a channel the publisher signals.
//
// Publish never blocks. Each Subscription holds at most
// Options.SubscriberBuffer unread messages; when a message arrives at a full
// Subscription, its unread messages and that message are dropped and its next
// Next reports a loss (broadcaster.Message.Loss), as a Redis client that
// exceeds its output buffer is disconnected and must resubscribe.
//
// # Faults
//
// Wipe, Checkpoint and BreakSubscriptions inject the failures a real
// deployment sees (data lost, a failover that moves a revision backwards, a
// reconnect that drops messages), so tests of contextd and of the
// conformance suite can check recovery without a Redis server.
package memory
