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
}

var (
	_ backend.Backend         = (*Backend)(nil)
	_ backend.Capable         = (*Backend)(nil)
	_ backend.AtomicPublisher = (*Backend)(nil)
	_ backend.ChangeLog       = (*Backend)(nil)
	_ locker.ReleaseWatcher   = (*Backend)(nil)
)

func newBackend(client goredis.UniversalClient, owned bool, o Options) *Backend {
	_, sharded := client.(*goredis.ClusterClient)
	return &Backend{client: client, owned: owned, opts: o, sharded: sharded, mayResend: mayResend(client), idPrefix: randomHex(8)}
}

// mayResend reports whether client may send a command again after its
// connection broke, so that a commit could reach Redis twice: go-redis
// retries unless MaxRetries is -1, and a ClusterClient retries up to
// MaxRedirects times whatever MaxRetries says.
func mayResend(client goredis.UniversalClient) bool {
	switch c := client.(type) {
	case *goredis.Client:
		return c.Options().MaxRetries >= 0
	case *goredis.ClusterClient:
		return c.Options().MaxRedirects >= 0
	}
	return true
}

// newID returns an id unique among all Backends: for commit ids and epoch
// candidates.
func (b *Backend) newID() string {
	return b.idPrefix + strconv.FormatUint(b.idSeq.Add(1), 36)
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
	}
}

// Close closes the client if the Backend opened it (Open, OpenURL); a
// client passed to New stays open. Subscriptions made by the Backend stop
// working. Close is idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) || !b.owned {
		return nil
	}
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

// keys names the Redis keys of one context.
type keys struct {
	tag, meta, data, revs, log, unlock string
}

func keysOf(name string) keys {
	tag := backend.HashTag(name)
	return keys{
		tag:    tag,
		meta:   tag + ":meta",
		data:   tag + ":data",
		revs:   tag + ":revs",
		log:    tag + ":log",
		unlock: tag + ":unlock",
	}
}

func (k keys) lock(key string) string { return k.tag + ":lock:" + key }

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
