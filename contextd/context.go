package contextd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/locker"
)

// Context is one process's handle on a shared, named key→value map whose
// values are of type T. It keeps a local copy in sync with the backend; see
// the package documentation for the guarantees.
//
// Build it with New, then call Initialize before anything else, and Close
// when done. All methods are safe for concurrent use.
type Context[T any] struct {
	name  string
	id    string
	opts  Options
	store backend.Store
	lock  locker.Locker
	bcast broadcaster.Broadcaster
	caps  backend.Capabilities
	// Optional capabilities, nil unless offered.
	atomicPub backend.AtomicPublisher
	changeLog backend.ChangeLog
	notifier  locker.ReleaseWatcher
	// follower tells a Modify handed the turn by a commit which one
	// (turnNotes); nil without fair queues on a lock-aware store that
	// names it.
	follower backend.TurnFollower
	queue    locker.FairLocker
	expirer  backend.Expirer
	// leaveQueue gives a waiter's place up in the background (with a
	// queue; once closed, in the caller's goroutine), made once so that a
	// write does not allocate it.
	leaveQueue func(locker.Waiter, []string)

	// exact, if set, reports that the codec vouches that a value written
	// as these bytes decodes to exactly the value written (codec.Exact):
	// the copy then keeps the written value instead of decoding it.
	exact func([]byte) bool
	// marshalRef is set when encoding a pointer to a value gives the
	// value's own encoding: the built-in JSON codec with a type it vouches
	// for (no marshalling methods, on T or *T). A write then encodes
	// through a pointer into memory it allocated anyway, sparing the
	// allocation that putting a T into the codec's interface argument
	// costs.
	marshalRef bool

	// expiry tracks the next key to expire (only with an expirer).
	expiry *expiry

	cache *cache[T]

	// lifeMu orders Initialize, Close, Watch registration and the lock
	// registry; nothing slow happens under it except in Initialize.
	lifeMu      sync.Mutex
	initialized atomic.Bool
	closed      atomic.Bool
	done        chan struct{} // closed by Close
	cancel      context.CancelFunc
	sub         broadcaster.Subscription
	locks       map[*Lock]struct{}
	wg          sync.WaitGroup

	// syncMu lets one catch-up run at a time.
	syncMu sync.Mutex
	// repair asks the maintenance goroutine to retry a failed catch-up.
	repair chan struct{}

	// inflight holds this instance's commits awaiting their reply: the
	// echo of one that arrives before the reply (on Redis, from one write
	// in five to most, depending on the machine) takes its decoded values
	// instead of decoding the event's (ownUpdates).
	inflightMu sync.Mutex
	inflight   []ownWrite[T]
	inflightN  uint64
	// hushing is the subscription while it queues own echoes quietly
	// (hushEchoes), else nil: an echo held above the copy whose commit's
	// reply will not apply it is read when a commit ends (wakeHeld).
	hushing atomic.Pointer[hushedSubscription]
	// heldTop is the revision of the latest own echo found above the copy
	// by the quiet function (hushEchoes), 0 once a commit has woken the
	// subscription for it (wakeHeld).
	heldTop atomic.Uint64
	// noEcho is set while the subscription leaves out the events of this
	// instance's atomically published commits (skipEchoes): a commit
	// whose outcome is in doubt is then brought in by a catch-up.
	noEcho atomic.Bool
	// ownPending counts this instance's commits under way, from before
	// the store is called until the reply is applied or the commit
	// failed. While any are, the quiet function holds an own echo above
	// the copy (hushEchoes), and, without echoes (noEcho), the read loop
	// waits for their replies when an event arrives above a hole
	// (awaitOwnBelow).
	ownPending atomic.Int64
	// awaitingOwn, for tests, is called when the read loop starts waiting
	// for own replies below an event.
	awaitingOwn func()

	// contention remembers the keys whose writes were refused lately.
	contention contention
	// reserved holds the places in key queues that contended Modify
	// commits took for the next Modify of their key (turn.go).
	reservedMu sync.Mutex
	reserved   map[string]*reservation
	// modGroups holds, per key, the Modify calls combined into one
	// commit (combine.go); modMu guards them and their calls.
	modMu     sync.Mutex
	modGroups map[string]*modGroup[T]

	stats stats
}

// New returns a Context for the context named contextKey on backend b (the
// original's contextKey). opts may be nil for defaults. The Context does
// nothing until Initialize; it never closes b.
func New[T any](b backend.Backend, contextKey string, opts *Options) (*Context[T], error) {
	if isNil(b) {
		return nil, fmt.Errorf("%w: New needs a backend, got nil", ErrInvalid)
	}
	if contextKey == "" {
		return nil, fmt.Errorf("%w: New needs a non-empty contextKey", ErrInvalid)
	}
	o, err := opts.resolved(contextKey)
	if err != nil {
		return nil, err
	}
	id := randomID()
	c := &Context[T]{
		name:   contextKey,
		id:     id,
		opts:   o,
		store:  b,
		lock:   b,
		bcast:  b,
		caps:   backend.CapabilitiesOf(b),
		cache:  newCache[T](id),
		done:   make(chan struct{}),
		repair: make(chan struct{}, 1),
		locks:  make(map[*Lock]struct{}),
	}
	if c.caps.AtomicPublish {
		c.atomicPub = b.(backend.AtomicPublisher)
	}
	if c.caps.ChangeLog {
		c.changeLog = b.(backend.ChangeLog)
	}
	if c.caps.ReleaseNotify {
		c.notifier = b.(locker.ReleaseWatcher)
	}
	if c.caps.Expiry {
		c.expirer = b.(backend.Expirer)
	}
	c.expiry = newExpiry()
	if ex, ok := o.Codec.(codec.Exact); ok {
		c.exact = ex.Exact(reflect.TypeFor[T]())
	}
	c.marshalRef = c.exact != nil && o.Codec == codec.JSON
	if c.caps.FairLocks && c.caps.ReleaseNotify {
		// Only the waiter first in a queue may proceed, so the queue needs
		// release notifications to hand the turn on promptly: with polling
		// alone every turn would cost a retry pause.
		c.queue = b.(locker.FairLocker)
		c.leaveQueue = func(w locker.Waiter, keys []string) {
			if !c.background(func(ctx context.Context) { _ = c.queue.Dequeue(ctx, c.name, w, keys...) }) {
				c.leaveNow(w, keys...) // closed: in the goroutine of the wait that ends
			}
		}
		if f, ok := b.(backend.TurnFollower); ok && c.caps.LockAwareCommit {
			c.follower = f
		}
	}
	return c, nil
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// Name returns the context's name (its contextKey).
func (c *Context[T]) Name() string {
	if c == nil {
		return ""
	}
	return c.name
}

// ID returns this instance's random identity, the Origin of its changes.
func (c *Context[T]) ID() string {
	if c == nil {
		return ""
	}
	return c.id
}

// Capabilities reports the optional backend capabilities this Context uses.
func (c *Context[T]) Capabilities() backend.Capabilities {
	if c == nil {
		return backend.Capabilities{}
	}
	return c.caps
}

// Initialize subscribes to the context's change events, then loads a
// snapshot of the context, then starts applying events in the background.
// Subscribing first means no change can fall between the two.
//
// It fails with ErrCodecMismatch if the context was written with another
// codec. Calling it again after it succeeded does nothing.
func (c *Context[T]) Initialize(ctx context.Context) error {
	if c == nil {
		return c.errorf("initialize", errNilContext)
	}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed.Load() {
		return c.errorf("initialize", ErrClosed)
	}
	if c.initialized.Load() {
		return nil
	}
	sub, err := c.bcast.Subscribe(ctx, c.opts.Channel)
	if err != nil {
		return c.errorf("initialize: subscribe to %q", err, c.opts.Channel)
	}
	if err := c.load(ctx, "", 0, false); err != nil {
		_ = sub.Close()
		return c.errorf("initialize", err)
	}
	run, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.sub = sub
	c.ownEchoes(sub)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.readLoop(run)
	}()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.maintain(run)
	}()
	if c.expirer != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.expireLoop(run)
		}()
	}
	c.initialized.Store(true)
	return nil
}

// Ready reports whether Initialize has loaded the first snapshot and the
// Context is not closed.
func (c *Context[T]) Ready() bool {
	return c != nil && c.initialized.Load() && !c.closed.Load()
}

// Revision returns the revision up to which this instance has applied every
// change of the context.
func (c *Context[T]) Revision() uint64 {
	if c == nil {
		return 0
	}
	_, rev := c.cache.head()
	return rev
}

// Lag returns how many revisions this instance knows the store to be ahead
// of its copy: zero when it is up to date as far as it has heard.
func (c *Context[T]) Lag() uint64 {
	if c == nil {
		return 0
	}
	return c.cache.lag()
}

// Close stops the background work and waits for it, closes Watch channels,
// and releases the locks taken through this Context that are still held. It
// does not close the backend. Close is idempotent; afterwards every
// operation returns ErrClosed. Calls under way are not cut short by Close
// (a write waiting for a lock waits on, within its ctx and retries); one
// that gives its place in a lock queue up after Close does so before it
// returns.
func (c *Context[T]) Close() error {
	if c == nil {
		return c.errorf("close", errNilContext)
	}
	c.lifeMu.Lock()
	if c.closed.Load() {
		c.lifeMu.Unlock()
		return nil
	}
	c.closed.Store(true)
	close(c.done)
	var errs []error
	if c.cancel != nil {
		c.cancel()
	}
	if c.sub != nil {
		if err := c.sub.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close subscription: %w", err))
		}
	}
	held := make([]*Lock, 0, len(c.locks))
	for l := range c.locks {
		held = append(held, l)
	}
	c.lifeMu.Unlock()
	c.wg.Wait()
	c.dropReservations()
	for _, l := range held {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.Release(ctx); err != nil && !errors.Is(err, ErrLockLost) {
			errs = append(errs, err)
		}
		cancel()
	}
	if err := errors.Join(errs...); err != nil {
		return c.errorf("close", err)
	}
	return nil
}

// lockPolicy is how this Context waits for locks: with notifications and
// fair queues where the backend has them. A waiter that gives up leaves
// its queues in the background, so a failing backend does not hold the
// caller up once more.
func (c *Context[T]) lockPolicy(delay time.Duration, retries int, key string) locker.Policy {
	return locker.Policy{RetryDelay: delay, MaxRetries: retries, Watcher: c.notifier, Queue: c.queue, Leave: c.leaveQueue, OnWait: c.opts.Trace.lockWait(key)}
}

// background runs f in a goroutine of the Context, with a ctx that ends
// after 5 s or at Close, which waits for it. After Close it does nothing,
// and reports false.
func (c *Context[T]) background(f func(context.Context)) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed.Load() || c.cancel == nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		finished := make(chan struct{})
		var watch sync.WaitGroup
		watch.Add(1)
		go func() {
			defer watch.Done()
			select {
			case <-c.done:
				cancel()
			case <-finished:
			}
		}()
		f(ctx)
		close(finished)
		watch.Wait()
	}()
	return true
}

// usable reports why the Context cannot be used now, if it cannot.
func (c *Context[T]) usable() error {
	if c == nil {
		return errNilContext
	}
	if c.closed.Load() {
		return ErrClosed
	}
	if !c.initialized.Load() {
		return ErrNotInitialized
	}
	return nil
}

// errNilContext is the error of a method called on a nil *Context.
var errNilContext = invalid("nil *Context")

// errorf wraps err as "contextd: <name>: <what>: err".
func (c *Context[T]) errorf(what string, err error, args ...any) error {
	if len(args) > 0 {
		what = fmt.Sprintf(what, args...)
	}
	name := "<nil>"
	if c != nil {
		name = c.name
	}
	return fmt.Errorf("contextd: %s: %s: %w", name, what, err)
}

// Stats are counters of a Context's background work, for monitoring and
// tests.
type Stats struct {
	// Snapshots counts snapshots loaded, the first one included.
	Snapshots uint64
	// LogCatchUps counts catch-ups served by the backend's change log.
	LogCatchUps uint64
	// Losses counts loss signals from the subscription.
	Losses uint64
	// Gaps counts events that arrived with earlier revisions missing.
	Gaps uint64
	// InvalidEvents counts messages on the channel that were not valid
	// events; they are ignored and trigger a catch-up.
	InvalidEvents uint64
	// PublishErrors counts events that could not be published after their
	// commit succeeded (only without atomic publishing); other instances
	// catch up on their next check.
	PublishErrors uint64
	// ModifyJoined counts Modify calls that joined a Modify of the same
	// key already under way in this instance, to be committed with it
	// instead of on their own (see Modify).
	ModifyJoined uint64
}

type stats struct {
	snapshots, logCatchUps, losses, gaps, invalidEvents, publishErrors, modifyJoined atomic.Uint64
}

// Stats returns the current counters.
func (c *Context[T]) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{
		Snapshots:     c.stats.snapshots.Load(),
		LogCatchUps:   c.stats.logCatchUps.Load(),
		Losses:        c.stats.losses.Load(),
		Gaps:          c.stats.gaps.Load(),
		InvalidEvents: c.stats.invalidEvents.Load(),
		PublishErrors: c.stats.publishErrors.Load(),
		ModifyJoined:  c.stats.modifyJoined.Load(),
	}
}
