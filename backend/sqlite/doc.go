// Package sqlite is the embedded, persistent contextd backend: one type,
// Backend, that implements backend.Store, locker.Locker and
// broadcaster.Broadcaster over one SQLite database file, on the pure-Go
// driver modernc.org/sqlite (no cgo). Any number of processes on one
// machine open the same file and share its contexts, locks and change
// events, as clients of one Redis server do; no server runs.
//
//	b, err := sqlite.Open(ctx, "/var/lib/myapp/contextd.db", nil)
//	...
//	defer b.Close()
//	cx, err := contextd.New[Config](b, "config", nil)
//
// # Capabilities
//
// Every optional capability is on by default, and each can be switched off
// (Options.Disable*), after which it is really off:
//
//   - AtomicPublish: a commit appends its event to the message log in its
//     own transaction, so the event exists if and only if the commit does.
//   - LockAwareCommit: the commit's transaction reads the context's live
//     locks and refuses a write to a key another holder has locked
//     (backend.ErrLocked) or a batch carrying a lease that is gone
//     (locker.ErrNotHeld).
//   - ChangeLog: the commit's transaction logs its event per context; an
//     instance that missed events reads just those (ChangesSince).
//   - ReleaseNotify: the poller wakes release watchers when a watched lock
//     row disappears or expires.
//   - Expiry: a put with a TTL records when its key expires; due keys are
//     deleted by an ordinary commit (see Key expiry).
//
// # Tables
//
// Open creates the tables in a file that has none; their names start with
// "contextd_", so the file may hold an application's tables too. A row in
// contextd_schema records the layout version; a file with another version
// is refused with ErrSchemaVersion, never migrated silently.
//
//	contextd_schema    (id, version)                        the layout version, 1
//	contextd_contexts  (name, epoch, revision, commit_id,   one row per context: its head, the
//	                    parent_id, codec, fence)            recorded codec, the last fencing token
//	contextd_entries   (name, key, value, revision,         one row per live key, stamped with
//	                    commit_id, expires_ms,              the commit that last wrote it, and
//	                    expires_rev)                        when it expires (see Key expiry)
//	contextd_changes   (name, revision, event)              the change log, per context
//	contextd_locks     (name, key, token, fence,            one row per lock; a row whose
//	                    expires_ms)                         expiry has passed is free
//	contextd_messages  (id, channel, payload)               the message log, all channels
//	contextd_bus       (id, trimmed)                        messages up to trimmed are gone
//
// Key expiry added expires_ms, expires_rev and an index on (name,
// expires_ms) to contextd_entries without changing the version: Open adds
// them, in its write transaction, to a file an earlier release made, which
// keeps its data. Processes of that release go on reading and writing the
// file correctly: an expiry holds only while expires_rev equals the
// entry's revision, so their puts, which leave both columns alone, clear
// it; and they neither expire keys nor give keys an expiry. Nothing is
// dropped or rewritten, so such a release can also open the file again.
//
// Every SQL statement opens with its contract in statements.go, schema.go
// and conn.go. Besides the file and SQLite's -wal and -shm files, the
// directory holds <file>-contextd-wait, an empty file for the waiting
// writers' flock.
//
// # Writes, WAL and busy waits
//
// Open switches the file to write-ahead logging (WAL): readers never wait
// for the writer, and one writer at a time appends to the WAL. A commit is
// one BEGIN IMMEDIATE transaction: it takes the file's write lock first,
// then reads the head, checks the codec, the conditions and the locks,
// writes the head, the entries, the logged event and the published event,
// and commits. A commit with conditions checks them on a read connection
// first, so writers that lost a race fail without queueing for the write
// lock; TryAcquire does the same with the lock it wants.
//
// SQLite does not queue waiters for its write lock: a connection that finds
// it taken gets SQLITE_BUSY. Each Backend writes through one connection, so
// the goroutines of a process queue in Go; only other connections (other
// processes, other Backends) are waited for, by trying again after a pause
// that grows from 20 µs to 250 µs, until the lock is free, Options.BusyTimeout
// (default 5 s) has passed (ErrBusy) or ctx ends. Only steps that did
// nothing when they failed busy are tried again: taking the lock, a read,
// or a single statement. Because a holder's next goroutine would take the
// lock again at once, waiting writers say so with a shared flock(2) on a
// side file, <file>-contextd-wait, and a holder that sees them waiting
// steps back for up to 1 ms after its commit (Linux and macOS; elsewhere
// nothing is announced). This is not a queue: under heavy contention a
// writer can still wait longer than others.
//
// By default commits do not wait for the disk (synchronous=NORMAL in WAL
// mode): a commit survives the crash or kill of any process, but a crash
// of the operating system or a power loss may undo the last commits.
// Options.SyncFull makes every commit durable at once.
//
// # Polling
//
// SQLite cannot notify other connections, so each Backend runs one poller
// goroutine (started with its first Subscription or release watch, shared
// by all of them) with a connection of its own. Every Options.PollInterval
// (default 5 ms) it runs PRAGMA data_version, which changes when another
// connection committed; only then does it read the messages after its
// cursor (one statement) and dispatch them to the Subscriptions of their
// channels, and check the locks its release watchers wait for. Writes made
// through the same Backend wake it at once. So events from other processes
// arrive PollInterval/2 after the commit on average, and an idle Backend
// with Subscriptions costs PollInterval-spaced PRAGMA statements (about 1 %
// of a core at 5 ms on the machines we measured).
//
// The message log keeps about Options.MessageLogLength (default 10000)
// messages of all channels together; publishers trim it in steps of 64. A
// poller that falls further behind finds its next message trimmed, and its
// Subscriptions report a loss (broadcaster.Message.Loss); contextd then
// catches up from the change log or a snapshot. A Subscription also reports
// a loss when more than Options.SubscriberBuffer (default 1024) messages
// wait unread, and Interrupted, then a loss, while the poller cannot read
// the file.
//
// # Locks
//
// Lock expiry is judged by one clock: the wall clock of the machine, in
// milliseconds (time.Now().UnixMilli() in the process that takes, checks or
// extends a lock), which every process sharing the file reads. A lock lives
// at least its TTL, rounded up to a whole millisecond; a wall-clock step
// (NTP, manual change) shortens or lengthens the locks live at that moment.
// Fencing tokens come from a counter per context that only grows.
//
// # Key expiry
//
// There is no server, so keys expire by the clock of the process that
// writes: the wall clock in milliseconds, read once a transaction holds
// the write lock, as for locks. The processes sharing a file run on one
// machine and so read one clock; a wall-clock step moves every deadline
// with it. A put with Op.TTL stores expires_ms (its TTL rounded up to a
// whole millisecond) and the put's revision; a put without TTL clears
// both, a delete drops the row. A key is due once expires_ms is at or
// before the time.
//
// Every commit first deletes the context's due keys, in its own write
// transaction, as a commit of its own: the revision before the batch's,
// with no origin, the deletes in byte order of the keys, logged and (for
// CommitAndPublish) appended to the message log like any commit. A batch
// refused by one of its conditions keeps that commit (the conditions
// judged the reaped keys absent, so a read after the refusal must not
// find them again) and writes nothing of its own; a batch refused for
// another reason (codec, lease, lock) takes it back with the rest. Expire
// does the same alone: a read finds whether anything is due, and only then
// does it take the write lock, reap, and read the next deadline; its event
// carries Event.Time. Until a commit or an Expire deletes it, a due key is
// still in Load and Get, at the revision that wrote it, so every snapshot
// is a state some revision made. The check of conditions on a read
// connection before the write lock reaps nothing: it refuses a condition
// on a due key only when the condition fails both with the key present
// and with it absent, and leaves the others to the write transaction,
// which reaps first. Events travel in wire format version 1, which
// carries neither Event.Time nor Change.Expires (nor does version 2):
// receivers of a put learn its expiry from Load or Get, as contextd does.
//
// # Limits
//
//   - One machine: WAL needs shared memory between the processes, so the
//     file must be on a local file system, not a network share.
//   - One writer at a time for the whole file, whatever the context: write
//     throughput is that of one SQLite connection.
//   - Every poller reads the messages of the channels it serves; all
//     contexts of a file share one message log.
//   - Code in the process must not open the database's files with os.Open
//     and close them while the Backend is in use: closing any descriptor of
//     a file drops every POSIX lock the process holds on it, SQLite's
//     included.
//
// # Errors
//
// Errors start with "sqlite:", name the operation and the context, and wrap
// the sentinels of packages backend, locker and broadcaster, and the
// driver's error, with %w. Open reports a missing directory (matching
// fs.ErrNotExist), a file that is not a database (ErrNotDatabase), a file or
// directory that cannot be written (ErrReadOnly) and an unknown layout
// (ErrSchemaVersion). After Close every method returns an error matching
// ErrClosed.
//
// # Concurrency
//
// Every method is safe for concurrent use. A Backend owns its connections
// and its poller; Close stops the poller, closes the Subscriptions and the
// connections, and waits for the poller to end.
package sqlite
