package contextd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/locker"
)

// Defaults of the original library, kept so its users' tuning still holds.
const (
	// DefaultLockTimeout is the time to live of a lock (lockTimeout).
	DefaultLockTimeout = 10 * time.Second
	// DefaultRetryDelay is the mean pause between lock attempts (retryDelay).
	DefaultRetryDelay = 100 * time.Millisecond
	// DefaultMaxRetries is how many attempts follow the first (maxRetries).
	DefaultMaxRetries = 50
)

// Other defaults of Options.
const (
	// DefaultResyncInterval is how often an instance compares its revision
	// with the store's.
	DefaultResyncInterval = 5 * time.Second
	// DefaultEventValueLimit is how many value bytes one event carries.
	DefaultEventValueLimit = 64 << 10
	// DefaultWatchBuffer is how many changes a Watch channel holds for a
	// slow reader before it is reset.
	DefaultWatchBuffer = 256
)

// Options configure a Context. The zero value (or nil) means defaults; New
// copies the options, so changing them afterwards has no effect.
type Options struct {
	// Channel is the broadcast channel of the context's change events (the
	// original's pubsubChannel). Every instance of a context must use the
	// same one. Default: backend.DefaultChannel(contextKey), which is
	// "{contextd:<contextKey>}:events" (with %, { and } in contextKey
	// escaped, see backend.HashTag).
	Channel string

	// Codec encodes values. Every instance of a context must use the same
	// one; the first write records its name. Default: codec.JSON.
	Codec codec.Codec

	// ResyncInterval is how often the instance checks the store's revision
	// and catches up if events went missing without a loss signal, or (on
	// a store that leaves out an instance's own echoes, the memory
	// backend) if a commit that failed in doubt was made after the
	// catch-up its failure started. Zero
	// means DefaultResyncInterval (5 s); a negative value turns the check
	// off. (A catch-up that failed is retried with backoff either way.)
	ResyncInterval time.Duration

	// EventValueLimit is how many bytes of values one change event
	// carries; values beyond it are fetched by the receivers (in bulk
	// where the backend offers it). A receiver applies the context's
	// later events only after that fetch, since events apply in revision
	// order; other contexts' events do not wait for it. Zero means
	// DefaultEventValueLimit (64 KiB); a negative value sends keys only.
	EventValueLimit int

	// LockTimeout is the time to live of the locks that writes take
	// themselves on a backend without lock-aware commits. Zero means
	// DefaultLockTimeout (10 s).
	LockTimeout time.Duration

	// RetryDelay and MaxRetries bound how long a write waits for a key
	// that another holder has locked: pauses of RetryDelay on average
	// (jittered), at most MaxRetries of them, ended early by a release
	// where the backend notifies releases. Zero means DefaultRetryDelay
	// (100 ms) and DefaultMaxRetries (50); a negative MaxRetries means
	// no waiting.
	RetryDelay time.Duration
	MaxRetries int

	// WatchBuffer is how many changes each Watch channel holds for a reader
	// that falls behind; past it the reader gets a Reset change instead.
	// Zero means DefaultWatchBuffer (256).
	WatchBuffer int

	// FailClosed makes reads (Get, GetContext) return ErrStale while the
	// instance knows its copy may be out of date, instead of serving the
	// last known state (the default).
	FailClosed bool

	// Logger receives background problems (resync failures, undecodable
	// events) and, at debug level, what catch-ups did. Default: none.
	Logger *slog.Logger

	// Trace receives hooks for metrics and traces (see Trace and package
	// otelcontextd). Default: none.
	Trace *Trace
}

// resolved returns o with defaults filled in, or an error for bad values.
func (o *Options) resolved(name string) (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Channel == "" {
		r.Channel = backend.DefaultChannel(name)
	}
	if r.Codec == nil {
		r.Codec = codec.JSON
	}
	if r.Codec.Name() == "" {
		return r, fmt.Errorf("%w: Options.Codec has an empty Name", ErrInvalid)
	}
	if r.ResyncInterval == 0 {
		r.ResyncInterval = DefaultResyncInterval
	}
	switch {
	case r.EventValueLimit == 0:
		r.EventValueLimit = DefaultEventValueLimit
	case r.EventValueLimit < 0:
		r.EventValueLimit = 0
	}
	if err := lockDefaults(&r.LockTimeout, &r.RetryDelay, &r.MaxRetries); err != nil {
		return r, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if r.WatchBuffer <= 0 {
		r.WatchBuffer = DefaultWatchBuffer
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// lockDefaults fills in the original library's lock defaults where the
// caller left zero values, and refuses negative durations. A negative
// retry count means none.
func lockDefaults(timeout, delay *time.Duration, retries *int) error {
	if *timeout < 0 || *delay < 0 {
		return fmt.Errorf("negative LockTimeout (%v) or RetryDelay (%v)", *timeout, *delay)
	}
	if *timeout == 0 {
		*timeout = DefaultLockTimeout
	}
	if *delay == 0 {
		*delay = DefaultRetryDelay
	}
	switch {
	case *retries == 0:
		*retries = DefaultMaxRetries
	case *retries < 0:
		*retries = 0
	}
	return nil
}

// WriteOption changes one write: UpdateContext, TransactionalUpdate,
// Delete, Create, Modify, Txn.Commit (and Txn.Put for WithTTL).
type WriteOption func(*writeOptions)

type writeOptions struct {
	locks []*Lock
	// ifRevision is the revision IfRevision requires of every written
	// key; ifSet says it was given (0 with ifSet: IfAbsent).
	ifRevision uint64
	ifSet      bool
	ttl        time.Duration
	ttlSet     bool
	// turns, set by Modify (not an option), watches the waits of the
	// write in place of the backend's watcher, noting which commit
	// handed the turn on.
	turns *turnNotes
	// contended, set by Modify (not an option), queues the first attempt:
	// the key was refused a moment ago (contention).
	contended bool
	// queued, set by Modify (not an option), is the place a reservation
	// holds in the key's queue already (turn.go): the wait starts with it.
	queued *locker.Waiter
}

// IfRevision makes the write conditional: it goes through only if every key
// it writes is still at revision rev (Entry.Revision; 0 means the key must
// be absent), and otherwise fails with an error matching ErrConflict and
// writes nothing. The check is made by the store in the same atomic step
// as the write, so it is linearizable; on a store that names its commits
// (Redis, memory) it also checks that the key was last written by the same
// commit the local copy saw at rev, which matters after a failover.
func IfRevision(rev uint64) WriteOption {
	return func(o *writeOptions) { o.ifRevision, o.ifSet = rev, true }
}

// IfAbsent makes the write conditional on every key it writes being absent:
// IfRevision(0). Create is UpdateContext with IfAbsent.
func IfAbsent() WriteOption { return IfRevision(0) }

// WithTTL makes the keys a write puts expire d after the write, by the
// store's clock: they are then deleted by an ordinary revisioned delete,
// seen by every instance and by Watch. A later write of a key without
// WithTTL keeps it for good; one with WithTTL sets a new expiry. A backend
// without expiry (Capabilities().Expiry) refuses it with an error matching
// errors.ErrUnsupported; d must be positive.
func WithTTL(d time.Duration) WriteOption {
	return func(o *writeOptions) { o.ttl, o.ttlSet = d, true }
}

// WithLock makes the write under a lock the caller holds: the write does not
// wait for that lock, and it is refused with ErrLockLost if the lock is no
// longer held. On a backend with lock-aware commits the store checks the
// lock in the same atomic step as the write (a fenced write); on others the
// lock is renewed just before the write to prove it is still held.
//
// WithLock may be given several times. A lock of another Context, or a nil
// lock, makes the write fail.
func WithLock(l *Lock) WriteOption {
	return func(o *writeOptions) { o.locks = append(o.locks, l) }
}

// ReadOption changes one read.
type ReadOption func(*readOptions)

type readOptions struct {
	fresh bool
}

// Fresh makes Get read the store instead of the local copy: a linearizable
// read that costs a round trip.
func Fresh() ReadOption {
	return func(o *readOptions) { o.fresh = true }
}

// LockOptions are the arguments of AcquireLock, named as in the original
// library's acquireLock({key, lockTimeout, retryDelay, maxRetries}).
type LockOptions struct {
	// Key is the context key to lock. Required.
	Key string
	// LockTimeout is the lock's time to live. Zero means
	// DefaultLockTimeout (10 s).
	LockTimeout time.Duration
	// RetryDelay is the mean pause between attempts while another holder
	// has the lock. Zero means DefaultRetryDelay (100 ms).
	RetryDelay time.Duration
	// MaxRetries is how many attempts follow the first. Zero means
	// DefaultMaxRetries (50); a negative value means one attempt only.
	MaxRetries int
	// AutoExtend renews the lock every LockTimeout/3 until it is released;
	// if renewal fails, Lost is closed. Default: off.
	AutoExtend bool
}
