package sqlite

import "time"

// Defaults of Options.
const (
	DefaultPollInterval     = 5 * time.Millisecond
	DefaultBusyTimeout      = 5 * time.Second
	DefaultChangeLogLength  = 1000
	DefaultMessageLogLength = 10000
	DefaultSubscriberBuffer = 1024
	DefaultMaxReadConns     = 4
)

// Options configure a Backend. The zero value (or a nil *Options) gives the
// defaults; each field says its default. Open copies the options, so
// changing them later has no effect.
type Options struct {
	// PollInterval is how often the Backend's poller looks for changes made
	// by other connections to the file: new messages for its
	// Subscriptions, and released locks for its release watchers. A look
	// costs one PRAGMA data_version when nothing changed. Changes made
	// through the same Backend wake the poller at once. Zero or less means
	// the default, 5 ms: events from other processes arrive after half of
	// it on average.
	PollInterval time.Duration

	// BusyTimeout bounds how long one call waits for the write lock of the
	// file while other connections (other processes, or other Backends)
	// hold it; the ctx of the call bounds the wait too. A call that gives
	// up returns an error matching ErrBusy. Zero or less means the
	// default, 5 s.
	BusyTimeout time.Duration

	// ChangeLogLength is how many of the latest events of each context the
	// change log keeps for ChangesSince. Zero or less means the default,
	// 1000.
	ChangeLogLength int

	// MessageLogLength is about how many published messages, of all
	// channels together, the file keeps for pollers that have not read
	// them yet (trimmed in steps of 64). A Subscription whose poller falls
	// further behind reports a loss. Zero or less means the default,
	// 10000.
	MessageLogLength int

	// SubscriberBuffer is how many messages a Subscription holds unread;
	// one more overflows it, drops them and makes it report a loss. Zero or
	// less means the default, 1024.
	SubscriberBuffer int

	// MaxReadConns bounds the connections used for reads (Load, Get,
	// Revision, ChangesSince), besides the one connection for writes and
	// the poller's own. Zero or less means the default, 4.
	MaxReadConns int

	// SyncFull makes every commit wait until it is on the disk
	// (PRAGMA synchronous=FULL). By default (synchronous=NORMAL in WAL
	// mode) a commit survives the crash or kill of any process, but an
	// operating-system crash or power loss may undo the last commits.
	SyncFull bool

	// Switch capabilities off, to run contextd's generic paths (tests).
	// Each one is then really off, not only unreported: with
	// DisableAtomicPublish CommitAndPublish fails, with
	// DisableLockAwareCommit Commit ignores locks and Batch.Leases, with
	// DisableChangeLog no log is kept and ChangesSince fails, with
	// DisableReleaseNotify WatchRelease fails, with DisableExpiry Expire
	// and commits that put a key with a TTL fail (commits still delete
	// keys that other Backends put with a TTL once they are due); the
	// failing methods return errors matching errors.ErrUnsupported.
	// Default: all on.
	DisableAtomicPublish   bool
	DisableLockAwareCommit bool
	DisableChangeLog       bool
	DisableReleaseNotify   bool
	DisableExpiry          bool
}

// resolved returns a copy of o with defaults filled in.
func (o *Options) resolved() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.PollInterval <= 0 {
		r.PollInterval = DefaultPollInterval
	}
	if r.BusyTimeout <= 0 {
		r.BusyTimeout = DefaultBusyTimeout
	}
	if r.ChangeLogLength <= 0 {
		r.ChangeLogLength = DefaultChangeLogLength
	}
	if r.MessageLogLength <= 0 {
		r.MessageLogLength = DefaultMessageLogLength
	}
	if r.SubscriberBuffer <= 0 {
		r.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if r.MaxReadConns <= 0 {
		r.MaxReadConns = DefaultMaxReadConns
	}
	return r
}
