package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// ErrClosed is returned by every method of a Backend after Close, and by
// Subscription.Next after the Subscription or its Backend was closed. It is
// broadcaster.ErrClosed, so one errors.Is check covers both.
var ErrClosed = broadcaster.ErrClosed

const (
	defaultSubscriberBuffer = 1024
	defaultChangeLogSize    = 1024
)

// Options configure a Backend. The zero value (or a nil *Options) gives
// the defaults: every capability on, buffers of 1024.
type Options struct {
	// DisableAtomicPublish switches the AtomicPublish capability off:
	// Capabilities does not report it and CommitAndPublish fails with an
	// error matching errors.ErrUnsupported. Default false.
	DisableAtomicPublish bool

	// DisableLockAwareCommit switches the LockAwareCommit capability off:
	// Capabilities does not report it and Commit ignores locks and
	// Batch.Leases entirely. Default false.
	DisableLockAwareCommit bool

	// DisableChangeLog switches the ChangeLog capability off: Capabilities
	// does not report it, no log is kept, and ChangesSince fails with an
	// error matching errors.ErrUnsupported. Default false.
	DisableChangeLog bool

	// DisableReleaseNotify switches the ReleaseNotify capability off:
	// Capabilities does not report it and WatchRelease fails with an error
	// matching errors.ErrUnsupported. Default false.
	DisableReleaseNotify bool

	// DisableExpiry switches the Expiry capability off: Capabilities does
	// not report it, and Expire and commits that put a key with a TTL fail
	// with an error matching errors.ErrUnsupported. Default false.
	DisableExpiry bool

	// DisableFairLocks switches the FairLocks capability off: Capabilities
	// does not report it, TryAcquireQueued and Dequeue fail with an error
	// matching errors.ErrUnsupported, and neither locks nor commits look
	// at queues (waiters compete by retrying). Default false.
	DisableFairLocks bool

	// SubscriberBuffer is how many messages a Subscription holds unread;
	// one more overflows it and makes it report a loss. Zero or less means
	// the default, 1024.
	SubscriberBuffer int

	// ChangeLogSize is how many of the latest events ChangesSince can
	// return per context. Zero or less means the default, 1024.
	ChangeLogSize int

	// Clock is the store's clock, by which lock leases and keys (Op.TTL)
	// expire. Tests set it to move time by hand, so that expiry does not
	// depend on how fast a loaded machine runs their goroutines. Default:
	// time.Now.
	Clock func() time.Time
}

// Backend is an in-process backend.Backend with all optional capabilities.
// Create it with New; the zero value is not usable. Every method is safe for
// concurrent use.
type Backend struct {
	opts Options // defaults filled in; never changed after New

	// mu guards the store and the locks together, because a lock-aware
	// commit must check locks and write entries in one step, as the Redis
	// commit script does. CommitAndPublish also publishes while holding
	// it, so a context's events go out in revision order. Lock order:
	// mu, then subMu, then a subscription's mu.
	mu       sync.Mutex
	spaces   map[string]*space
	watchers map[lockID]map[*releaseWatch]struct{}

	// subMu guards the subscription registry. Publishing holds it for the
	// whole delivery, so every subscriber of a channel sees the messages
	// in the same order, as with Redis pub/sub.
	subMu sync.Mutex
	subs  map[string][]*subscription // by channel; a slice, since every commit iterates it

	// closed is written with both mu and subMu held, so reading it under
	// either one is enough.
	closed bool
}

// space is everything the backend keeps for one context name.
type space struct {
	// data is what a Redis flush loses; nil when the context has no data.
	data *contextData
	// locks of the context, by key. Expired locks stay until a call finds
	// them past their deadline.
	locks map[string]*lockState
	// fence is the last fencing token handed out. It lives outside data and
	// locks so that Wipe never resets it: a fence must never repeat.
	fence uint64
	// waiters and queues are the fair lock queues (queue.go): waiters by
	// ID, and each key's waiters in ticket order; tickets is the last
	// ticket handed out.
	waiters map[string]*waiterState
	queues  map[string]queue
	tickets uint64
}

var (
	_ backend.Backend         = (*Backend)(nil)
	_ backend.Store           = (*Backend)(nil)
	_ locker.Locker           = (*Backend)(nil)
	_ broadcaster.Broadcaster = (*Backend)(nil)
	_ backend.Capable         = (*Backend)(nil)
	_ backend.AtomicPublisher = (*Backend)(nil)
	_ backend.ChangeLog       = (*Backend)(nil)
	_ backend.MultiGetter     = (*Backend)(nil)
	_ locker.FairLocker       = (*Backend)(nil)
	_ backend.Expirer         = (*Backend)(nil)
	_ locker.ReleaseWatcher   = (*Backend)(nil)
	_ locker.TurnWatcher      = (*Backend)(nil)
)

// New returns an empty Backend. A nil opts means the defaults; opts is
// copied, so changing it later has no effect.
func New(opts *Options) *Backend {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.SubscriberBuffer <= 0 {
		o.SubscriberBuffer = defaultSubscriberBuffer
	}
	if o.ChangeLogSize <= 0 {
		o.ChangeLogSize = defaultChangeLogSize
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Backend{
		opts:     o,
		spaces:   make(map[string]*space),
		watchers: make(map[lockID]map[*releaseWatch]struct{}),
		subs:     make(map[string][]*subscription),
	}
}

// Capabilities reports the optional capabilities that the options have not
// switched off.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		AtomicPublish:   !b.opts.DisableAtomicPublish,
		LockAwareCommit: !b.opts.DisableLockAwareCommit,
		ChangeLog:       !b.opts.DisableChangeLog,
		ReleaseNotify:   !b.opts.DisableReleaseNotify,
		FairLocks:       !b.opts.DisableFairLocks,
		Expiry:          !b.opts.DisableExpiry,
	}
}

// Close closes every Subscription (their Next returns ErrClosed) and makes
// every later call fail with ErrClosed. The data is dropped with the
// Backend. Close is idempotent and always returns nil.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.subMu.Lock()
	if b.closed {
		b.subMu.Unlock()
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := b.subs
	b.subs = nil
	b.subMu.Unlock()
	b.mu.Unlock()

	for _, set := range subs {
		for _, s := range set {
			s.shut()
		}
	}
	return nil
}

// space returns the space of name, creating it. b.mu must be held.
func (b *Backend) space(name string) *space {
	sp := b.spaces[name]
	if sp == nil {
		sp = &space{}
		b.spaces[name] = sp
	}
	return sp
}

// begin checks what every method checks first: that ctx is usable and not
// done. op names the method for the error message.
func begin(ctx context.Context, op string) error {
	if ctx == nil {
		return fmt.Errorf("memory: %s: nil context.Context", op)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %s: %w", op, err)
	}
	return nil
}

// errClosed is the error of a call made after Close.
func errClosed(op string) error {
	return fmt.Errorf("memory: %s: %w", op, ErrClosed)
}

// unsupported is the error of a capability the options switched off.
func unsupported(op, option string) error {
	return fmt.Errorf("memory: %s: switched off by Options.%s: %w", op, option, errors.ErrUnsupported)
}

// randomID returns 16 random hex characters, for epochs and lock tokens.
func randomID() string {
	var buf [8]byte
	// crypto/rand.Read never fails (it crashes the program instead, since
	// Go 1.24), so there is no error to handle.
	_, _ = rand.Read(buf[:])
	return hex.EncodeToString(buf[:])
}

// cloneBytes returns a copy of p that shares no memory with it. The copy
// is never nil, so an empty value reads back as empty, not as missing, just
// as backend.DecodeEvent returns it.
func cloneBytes(p []byte) []byte {
	return append(make([]byte, 0, len(p)), p...)
}
