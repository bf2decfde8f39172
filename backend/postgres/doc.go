// Package postgres is the PostgreSQL backend of contextd: one type, Backend,
// that implements backend.Store, locker.Locker and broadcaster.Broadcaster on
// a pgx v5 connection pool, with every optional capability:
//
//   - AtomicPublish and LockAwareCommit: a commit is one call of a PL/pgSQL
//     function that, in one transaction, checks the batch's conditions,
//     locks and leases, writes the entries, bumps the revision, appends to
//     the change log and sends the event with NOTIFY. PostgreSQL delivers a
//     NOTIFY only when its transaction commits, and never for one that
//     rolled back. One round trip.
//   - ChangeLog: a table of recent events per context, appended by the same
//     function.
//   - ReleaseNotify: a released lock sends a NOTIFY that wakes its waiters.
//   - Expiry: a put with a TTL records when its key expires, by the
//     server's clock; due keys are deleted by an ordinary commit (see Key
//     expiry).
//
// Open(ctx, url, opts) makes a Backend with a pool of its own (closed by
// Close); New(pool, opts) uses a pool the caller owns and never closes.
//
// # Tables
//
// Everything lives in one schema, Options.Schema ("contextd" by default),
// created on first use together with a version row. A schema whose version
// this package does not know is refused with ErrSchemaVersion: the backend
// never migrates a schema to another version by itself. Different schemas
// in one database are separate tenants: they share no data, locks or
// notifications.
//
//	schema_version  one row: the schema's version (1)
//	contexts        per context: name, epoch, rev, codec, commit_id,
//	                parent_id (the commit chain, see backend.Head), and
//	                fence, the counter of fencing tokens
//	entries         per live key: context, key, value, rev and commit_id of
//	                the commit that last wrote it, expires_at and
//	                expires_rev (see Key expiry)
//	changes         the change log: context, rev, the encoded event
//	locks           per lock: context, key, token, fence, expires
//	messages        payloads of Publish too large for NOTIFY, kept a minute
//	commit_ttl()    the commit function, expire() the expiry function,
//	                acquire() the lock function; commit() is that of
//	                releases before key expiry
//
// Context names and keys are bytea, so any Go string is stored as it is; a
// name is at most MaxNameLen bytes and a key MaxKeyLen (they share one
// B-tree index entry). The epoch is a random id made by the first commit of
// a context. Each SQL statement carries a header comment in sql.go saying
// what it takes and returns.
//
// Lock expiry is judged by the server's clock (clock_timestamp()), so TTLs
// of a few milliseconds work and clients' clocks do not matter. An expired
// lock row is a free lock; it is replaced by the next acquisition of its key
// or deleted by its holder's Release. Fencing tokens come from the context's
// counter and strictly increase. A successful acquisition updates the
// context's row, which a commit holds locked while it runs: a commit that
// found a key unlocked is ordered before any acquisition of that key's
// lock. A held lock is detected by a plain read, so waiters retrying do not
// queue behind commits.
//
// # Key expiry and the schema
//
// Keys expire by the server's clock, clock_timestamp(), read once a commit
// holds its context's row: commits of one context so read it in commit
// order, and the time a commit waited for the row never shortens a TTL
// (now() would be the start of the transaction). A put with Op.TTL stores
// expires_at (the TTL to the microsecond) and the put's revision in
// expires_rev; a put without TTL clears both, a delete drops the row. A
// key is due once expires_at is at or before the clock.
//
// Every commit first deletes the context's due keys, in its transaction,
// as a commit of its own: the revision before the batch's, with no origin,
// the deletes in byte order of the keys, logged and (for CommitAndPublish)
// notified like any commit. A batch refused by one of its conditions
// keeps that commit (the conditions judged the deleted keys absent, so a
// read after the refusal must not find them again) and writes nothing of
// its own: commit_ttl() returns the failed condition rather than raising
// it. A batch refused for another reason (codec, lease, lock) takes it
// back with the rest. Expire does the same alone and reads the next
// deadline, in one transaction that locks the context's row only when a
// key is due; its event carries Event.Time. Until a commit or an Expire
// deletes it, a due key is still in Load and Get, at the revision that
// wrote it, so every snapshot is a state some revision made. The check of
// conditions before the commit waits for the context's row (at the
// statement's snapshot) deletes nothing: it refuses a condition on a due
// key only when the condition fails both with the key present and with it
// absent, and leaves the others to the check after the reap. A partial
// index on (context, expires_at) makes the due keys and the next deadline
// one index range. Events travel in wire format version 1, which carries
// neither Event.Time nor Change.Expires (nor does version 2): receivers of
// a put learn its expiry from Load or Get, as contextd does.
//
// Key expiry was added to schema version 1 without changing the version:
// on first use, in one transaction under the schema's advisory lock, the
// backend adds expires_at, expires_rev, the index and the new functions to
// a schema that lacks them (one an earlier release made keeps its data;
// nothing is rewritten or dropped). Processes of that release go on
// reading and writing the schema correctly, through their commit(): an
// expiry holds only while expires_rev equals the entry's rev, so their
// puts, which leave both columns alone, clear it; and they neither expire
// keys nor give keys an expiry. Adding the columns needs the right to
// alter the tables, once. The additions are recognised by the result
// column r_conflict of commit_ttl(); a schema made by a build whose
// commit_ttl() raised failed conditions gets the current one (it is
// dropped and made again: no release before key expiry calls it).
//
// The change log keeps Options.ChangeLogLength events per context (1000),
// trimmed every 16 commits, like the Redis backend's capped stream. A new
// epoch starts a new log.
//
// # Notifications
//
// Each Backend has one listening connection, opened when the first
// subscription or release watcher needs it and shared by all of them,
// whatever their contexts and channels: it runs LISTEN for a channel when
// its first subscriber arrives and UNLISTEN when the last one leaves.
// Subscribe returns once the LISTEN is in effect. The connection is made
// with the pool's settings and its application_name ("contextd listener"
// when the pool names none), but is not one of the pool's connections.
// Pooled connections behind PgBouncer in transaction mode cannot LISTEN:
// point the Backend at PostgreSQL, or at a session-mode pool.
//
// NOTIFY carries text of at most 7999 bytes on a channel named by at most
// 63 bytes, and events are binary (backend.EncodeEvent), so:
//
//   - A channel is named "<schema>:<channel>" when that is printable and
//     fits in 63 bytes, and "#" followed by 62 hex digits of the SHA-256 of
//     "<schema>:<channel>" otherwise, so long context names never collide.
//   - A payload is "i" followed by the message in base64 when that fits;
//     an event too large is sent as "p<revision>:<base64 of the context
//     name>", a pointer into the changes table (where such an event is
//     stored even with the change log switched off), and a large Publish as
//     "m<id>", a pointer into the messages table. A subscription fetches
//     pointed-to messages in Next; one that is gone (trimmed) is reported
//     as a loss.
//
// Each Subscription holds up to Options.SubscriptionBuffer (4096) unread
// messages; when one more arrives the unread ones are dropped and Next
// reports a loss. The listener pings its connection when it was idle for
// Options.PingInterval (1 s) and replaces it when the ping (or a LISTEN)
// takes longer than Options.StallTimeout (2 s). When the connection breaks
// (a server restart, pg_terminate_backend, a network fault), every
// subscription gets a broadcaster.Message with Interrupted at once and one
// with Loss once the listener has reconnected (with backoff from 50 ms to
// 2 s) and LISTENs again; release watchers are woken then too.
//
// # Options
//
//	Schema               "contextd"   schema of the tables, a plain identifier
//	ChangeLogLength      1000         events kept per context
//	SubscriptionBuffer   4096         unread messages per Subscription
//	PingInterval         1 s          idle time before the listener pings
//	StallTimeout         2 s          longest ping or LISTEN before reconnecting
//	Disable*             false        switch a capability off (tests of the
//	                                  generic paths); it is then really off
//	                                  (DisableExpiry: TTLs and Expire fail
//	                                  with errors.ErrUnsupported)
//
// # Errors
//
// Every method does one job, without retries: the caller (contextd) retries
// where that is safe. A missing entry is backend.ErrNotFound; refusals of
// the commit function become backend.ErrConflict, backend.ErrLocked,
// locker.ErrNotHeld and backend.ErrCodecMismatch; driver errors are
// returned wrapped, with the pgx error reachable through errors.As and a
// cancelled or expired ctx through errors.Is. After Close every method
// returns an error matching ErrClosed.
package postgres
