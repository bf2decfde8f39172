package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// Backend is the PostgreSQL implementation of backend.Backend. It is safe
// for concurrent use and can serve any number of contexts and Contexts.
type Backend struct {
	pool  *pgxpool.Pool
	owned bool // Close closes pool
	opts  Options
	sql   statements

	schemaMu    sync.Mutex
	schemaReady atomic.Bool

	lis *listener

	flightMu sync.Mutex
	flights  map[flightKey]*flight // TryAcquire attempts under way

	closed atomic.Bool
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
	_ backend.Expirer         = (*Backend)(nil)
	_ locker.ReleaseWatcher   = (*Backend)(nil)
)

// ErrClosed is returned by the methods of a Backend after Close. It is
// broadcaster.ErrClosed, so subscriptions and the Backend report closing
// alike.
var ErrClosed = broadcaster.ErrClosed

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string, as pgx parses it; pool settings such as
// pool_max_conns go in it too) with a pool of its own, and makes sure the
// schema exists, so that a bad URL, an unreachable server or a schema of
// another version fails here, within ctx. opts may be nil. Close the Backend
// when done.
func Open(ctx context.Context, url string, opts *Options) (*Backend, error) {
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	b := newBackend(pool, true, o)
	if err := b.ready(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return b, nil
}

// New makes a Backend on a pool the caller owns; Close leaves the pool open.
// It does not talk to the server: the schema is checked (and created if
// missing) by the first call that needs it. The listening connection for
// subscriptions is made separately, with the pool's connection settings.
// opts may be nil.
func New(pool *pgxpool.Pool, opts *Options) (*Backend, error) {
	if pool == nil {
		return nil, errors.New("postgres: New needs a pool, got nil")
	}
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return newBackend(pool, false, o), nil
}

func newBackend(pool *pgxpool.Pool, owned bool, o Options) *Backend {
	b := &Backend{pool: pool, owned: owned, opts: o, sql: statementsFor(o.Schema), idPrefix: randomHex(8), flights: make(map[flightKey]*flight)}
	b.lis = newListener(b)
	return b
}

// Pool returns the connection pool the Backend uses.
func (b *Backend) Pool() *pgxpool.Pool { return b.pool }

// Capabilities reports the capabilities not switched off in Options.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		AtomicPublish:   !b.opts.DisableAtomicPublish,
		LockAwareCommit: !b.opts.DisableLockAwareCommit,
		ChangeLog:       !b.opts.DisableChangeLog,
		ReleaseNotify:   !b.opts.DisableReleaseNotify,
		Expiry:          !b.opts.DisableExpiry,
	}
}

// Close stops the listening connection (its Subscriptions then return
// ErrClosed) and closes the pool if the Backend opened it (Open); a pool
// passed to New stays open. Close is idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.lis.close()
	if b.owned {
		b.pool.Close()
	}
	return nil
}

// begin is called by every method first: it refuses a closed Backend and a
// done ctx, and makes sure the schema is there.
func (b *Backend) begin(ctx context.Context, op string) error {
	if b.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	if err := b.ready(ctx); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return nil
}

// newID returns an id unique among all Backends: for commit ids and epoch
// candidates.
func (b *Backend) newID() string {
	return b.idPrefix + strconv.FormatUint(b.idSeq.Add(1), 36)
}

func randomHex(n int) string {
	p := make([]byte, n)
	_, _ = rand.Read(p) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(p)
}

// wrap adds the operation to a driver error. A failure caused by ctx's end
// also matches ctx.Err().
func wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("postgres: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// checkName refuses context names the tables cannot hold.
func checkName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("context name of %d bytes is longer than %d", len(name), MaxNameLen)
	}
	return nil
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("key of %d bytes is longer than %d", len(key), MaxKeyLen)
	}
	return nil
}
