package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// Backend is the Redis implementation of backend.Backend. It is safe for
// concurrent use and can serve any number of contexts and Contexts.
type Backend struct {
	client goredis.UniversalClient
	owned  bool // Close closes client
	opts   Options
	// sharded: the client is a cluster client, so pub/sub is sharded
	// (SSUBSCRIBE / SPUBLISH), routed to the shard of the channel's slot.
	sharded bool
	// mayResend: the client may resend a commit whose reply was lost, so
	// commits remember their heads under their ids for a minute.
	mayResend bool
	closed    atomic.Bool
	// ids makes commit ids and epoch candidates: a random prefix per
	// Backend and a counter, unique without a system call per commit.
	idPrefix string
	idSeq    atomic.Uint64
	// hub holds the shared pub/sub connections (pubsub.go).
	hub *hub
	// subscribeHook, when set, replaces Subscribe: only tests set it, to
	// measure the former one-connection-per-subscription design against
	// the shared connections in the same run.
	subscribeHook func(ctx context.Context, channel string) (broadcaster.Subscription, error)
}

var (
	_ backend.Backend         = (*Backend)(nil)
	_ backend.Capable         = (*Backend)(nil)
	_ backend.AtomicPublisher = (*Backend)(nil)
	_ backend.ChangeLog       = (*Backend)(nil)
	_ backend.MultiGetter     = (*Backend)(nil)
	_ backend.Expirer         = (*Backend)(nil)
	_ locker.ReleaseWatcher   = (*Backend)(nil)
	_ locker.TurnWatcher      = (*Backend)(nil)
	_ backend.TurnFollower    = (*Backend)(nil)
	_ locker.FairLocker       = (*Backend)(nil)
)

// newBackend makes a Backend; resend says whether client may send a
// command again after its connection broke (see mayResend).
func newBackend(client goredis.UniversalClient, owned bool, o Options, resend bool) *Backend {
	_, sharded := client.(*goredis.ClusterClient)
	b := &Backend{client: client, owned: owned, opts: o, sharded: sharded, mayResend: resend, idPrefix: randomHex(8)}
	b.hub = newHub(b)
	return b
}

// mayResend reports whether a client the caller made may send a command
// again after its connection broke, so that a commit could reach Redis
// twice. It reads the client's options after go-redis normalised them:
// NewClient turns MaxRetries -1 into 0 (no retries) and 0 into its
// default, 3, and NewClusterClient does the same with MaxRedirects (a
// ClusterClient retries a command up to MaxRedirects times, whatever
// MaxRetries says; its MaxRetries 0 becomes -1 and reaches the node
// clients as no retries). So a normalised 0 means no resend, and more
// than 0 means resends. Clients of other types are assumed to resend.
// Open and OpenURL know what they configured and do not ask.
func mayResend(client goredis.UniversalClient) bool {
	switch c := client.(type) {
	case *goredis.Client:
		return c.Options().MaxRetries > 0
	case *goredis.ClusterClient:
		o := c.Options()
		return o.MaxRedirects > 0 || o.MaxRetries > 0
	}
	return true
}

// execLoad sends a load's MULTI/EXEC on client c: queue adds its commands
// to the transaction, whose Exec error execLoad returns.
//
// On a *goredis.Client (standalone or failover) whose options leave
// go-redis's dedicated pipeline pool at its defaults, as in a client the
// user made with go-redis's defaults, that is a Tx without WATCH: one
// connection of the client's main pool, held while fn runs and given back
// when it returns (dropped if it broke), whatever way fn ends. go-redis
// would otherwise dial a connection of its pipeline pool for the first
// load and keep it, with 128 KiB read and 128 KiB write buffers, when a
// main-pool connection (32 KiB buffers) is idle: for a context of 10k
// keys that is 25 B per key more (docs/benchmarks.md). Open and OpenURL
// switch that pool off in the clients they make (pipelinesOnMainPool); a
// user's client options are not ours to change, so the load goes around
// the pool. A Tx has no pipeline pool (go-redis makes none for it): its
// pipelines run on its connection, taken from the main pool with the one
// pool Get a pipeline makes anyway; with no keys to watch, Watch sends
// nothing, and neither does the Tx's Close. (Client.Conn would do the
// same, but a Conn shares the client's options without the lock that
// guards them when a new connection's handshake writes them: the race
// detector reports it in go-redis v9.23. A Tx takes a copy under that
// lock.)
//
// Only the load goes this way. go-redis retries (MaxRetries) a pipeline
// whose connection broke on another connection; a Tx's retry finds its
// connection gone and fails. For a load that costs little — go-redis
// never resends a MULTI/EXEC whose reply was lost, only one whose write
// failed, and the Context's catch-up loads again — but bulk fetches, lock
// listings and commits with WAIT are sent again on a client that retries
// (a Sentinel failover closes connections in use), so they keep going
// through the client, pipeline pool and all: the pool is dialled when the
// first of them runs (TestUserClientGetManyRetriesBrokenConn).
//
// A user who sized the pipeline pool or its buffers chose it, and a
// ClusterClient routes each command of a pipeline to its slot's node and
// follows redirects, which a Tx of one node would not: their loads go
// through the client.
func execLoad(ctx context.Context, c goredis.UniversalClient, queue func(pipe goredis.Pipeliner)) error {
	exec := func(on interface{ TxPipeline() goredis.Pipeliner }) error {
		pipe := on.TxPipeline()
		queue(pipe)
		_, err := pipe.Exec(ctx)
		return err
	}
	cl, ok := c.(*goredis.Client)
	if !ok {
		return exec(c)
	}
	o := cl.Options()
	// go-redis v9.23 makes a Tx without the client's streaming-credentials
	// manager: a connection the Tx has to dial panics in its handshake
	// (TestUserClientStreamingCredentialsLoad). Such clients keep the pool.
	if !defaultPipelinePool(o.PipelinePoolSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize) || o.StreamingCredentialsProvider != nil {
		return exec(c)
	}
	return cl.Watch(ctx, func(tx *goredis.Tx) error { return exec(tx) })
}

// newID returns an id unique among all Backends, for commit ids and epoch
// candidates: the Backend's random prefix and a counter, in lowercase hex
// of even length, so that events carry it in binary (half its length).
func (b *Backend) newID() string {
	seq := strconv.FormatUint(b.idSeq.Add(1), 16)
	if len(seq)%2 != 0 {
		return b.idPrefix + "0" + seq
	}
	return b.idPrefix + seq
}

// Client returns the go-redis client the Backend uses.
func (b *Backend) Client() goredis.UniversalClient { return b.client }

// Capabilities reports the capabilities not switched off in Options.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		AtomicPublish:   !b.opts.DisableAtomicPublish,
		LockAwareCommit: !b.opts.DisableLockAwareCommit,
		ChangeLog:       !b.opts.DisableChangeLog,
		ReleaseNotify:   !b.opts.DisableReleaseNotify,
		FairLocks:       !b.opts.DisableFairLocks,
		Expiry:          true,
	}
}

// Close closes the Backend's pub/sub connections, and the client if the
// Backend opened it (Open, OpenURL); a client passed to New stays open.
// Subscriptions made by the Backend end (Next returns an error matching
// broadcaster.ErrClosed), and so do their goroutines; Subscribe and
// WatchRelease fail with broadcaster.ErrClosed afterwards. Close is
// idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.hub.close()
	if !b.owned {
		return nil
	}
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

// keys names the Redis keys of one context.
type keys struct {
	tag, meta, data, revs, ring, unlock, waiters, expiry string
}

func keysOf(name string) keys {
	tag := backend.HashTag(name)
	return keys{
		tag:     tag,
		meta:    tag + ":meta",
		data:    tag + ":data",
		revs:    tag + ":revs",
		ring:    tag + ":ring",
		unlock:  tag + ":unlock",
		waiters: tag + ":waiters",
		expiry:  tag + ":expiry",
	}
}

func (k keys) lock(key string) string { return k.tag + ":lock:" + key }

// queue names a key's queue of lock waiters.
func (k keys) queue(key string) string { return k.tag + ":queue:" + key }

// commit names the key that remembers a commit's head, for clients that
// may resend it.
func (k keys) commit(id string) string { return k.tag + ":commit:" + id }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

func flag(on bool) string {
	if on {
		return "1"
	}
	return "0"
}

// scriptError is a refusal by one of our scripts: a CONTEXTD_ code, the
// index of the op, condition or lease concerned, and a detail.
type scriptError struct {
	code   string
	index  int
	detail string
}

func parseScriptError(err error) (scriptError, bool) {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return scriptError{}, false
	}
	msg := rerr.Error()
	// Redis may prefix the message of a script's error reply; look for
	// our code anywhere.
	i := strings.Index(msg, "CONTEXTD_")
	if i < 0 {
		return scriptError{}, false
	}
	f := strings.SplitN(msg[i:], " ", 3)
	if len(f) < 2 {
		return scriptError{}, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return scriptError{}, false
	}
	se := scriptError{code: f[0], index: n}
	if len(f) == 3 {
		se.detail = f[2]
	}
	return se, true
}

// scriptFailed translates the failure of one of our scripts: damage it
// reported (CONTEXTD_CORRUPT) becomes an error matching backend.ErrCorrupt
// that names the Redis key, and a key of the wrong type that a command
// outside a script met likewise; anything else is wrapped as it is.
// condKey and lockKey name the key of a condition or lock index of the
// script (nil when it has none).
func scriptFailed(ctx context.Context, op string, k keys, err error, condKey, lockKey func(int) string) error {
	se, ok := parseScriptError(err)
	if !ok || se.code != "CONTEXTD_CORRUPT" {
		if isWrongType(err) {
			return fmt.Errorf("redis: %s: a key of context %q holds the wrong type (%w): %w", op, k.tag, err, backend.ErrCorrupt)
		}
		return wrap(ctx, op, err)
	}
	name := func(f func(int) string) string {
		if f == nil {
			return "?"
		}
		return f(se.index)
	}
	var what string
	switch se.detail {
	case "meta", "data", "revs":
		what = fmt.Sprintf("key %q is not a hash", map[string]string{"meta": k.meta, "data": k.data, "revs": k.revs}[se.detail])
	case "log":
		what = fmt.Sprintf("key %q is not a hash", k.ring)
	case "expiry":
		what = fmt.Sprintf("key %q is not a sorted set", k.expiry)
	case "commit":
		what = "a commit's id key holds no commit head"
	case "revs.field":
		what = fmt.Sprintf("key %q: its value in %q and its revision in %q do not match (written by another program?)", name(condKey), k.data, k.revs)
	case "lock":
		what = fmt.Sprintf("lock key %q holds no lock", name(lockKey))
	case "queue":
		what = fmt.Sprintf("a lock queue of context %q is not a sorted set", k.tag)
	case "waiters":
		what = fmt.Sprintf("key %q is not a hash", k.waiters)
	default:
		if field, ok := strings.CutPrefix(se.detail, "meta."); ok {
			what = fmt.Sprintf("field %q of %q does not parse", field, k.meta)
		} else {
			what = se.detail
		}
	}
	return fmt.Errorf("redis: %s: %s: %w", op, what, backend.ErrCorrupt)
}

// isWrongType reports a Redis WRONGTYPE error: a key of another type than
// the command needs.
func isWrongType(err error) bool {
	var rerr goredis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "WRONGTYPE")
}

// wrap adds the operation to a backend error, keeping the go-redis error
// reachable. A network error caused by ctx's deadline or cancellation also
// matches ctx.Err(), which go-redis reports as a plain i/o timeout.
func wrap(ctx context.Context, op string, err error) error {
	if errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %s: %w: %w", op, broadcaster.ErrClosed, err)
	}
	cerr := ctx.Err()
	if d, ok := ctx.Deadline(); cerr == nil && ok && isTimeout(err) && !time.Now().Before(d) {
		// The socket deadline, set from ctx's, fired a moment before
		// ctx's own timer.
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("redis: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("redis: %s: %w", op, err)
}

// parseUint reads a revision or counter from a reply element.
func parseUint(v any) (uint64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("negative number %d", v)
		}
		return uint64(v), nil
	case string:
		if v == "" {
			return 0, nil
		}
		return strconv.ParseUint(v, 10, 64)
	}
	return 0, fmt.Errorf("unexpected %T in reply", v)
}
