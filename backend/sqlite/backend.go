package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// Backend is the SQLite implementation of backend.Backend: a Store, a
// Locker and a Broadcaster over one database file, with every optional
// capability. Create it with Open; the zero value is not usable. Every
// method is safe for concurrent use.
//
// Any number of Backends, in one process or many, may open the same file:
// they see the same contexts, locks and messages, as clients of one Redis
// do.
type Backend struct {
	path string
	opts Options // defaults filled in; never changed after Open

	// w holds the one connection that writes (BEGIN IMMEDIATE
	// transactions): SQLite lets one connection of the file write at a
	// time, so writers of this process queue here, in Go, and only
	// writers of other processes are waited for by polling the lock. r
	// holds the connections that read; the poller has one of its own.
	w, r *connPool
	// gate lets writers of other connections that wait for the write lock
	// get their turn (gate.go); nil where it is not available.
	gate *gate

	poll *poller

	closed atomic.Bool

	// ids makes commit ids: a random prefix per Backend and a counter,
	// unique without a system call per commit.
	idPrefix string
	idSeq    atomic.Uint64
}

var (
	_ backend.Backend         = (*Backend)(nil)
	_ backend.Store           = (*Backend)(nil)
	_ locker.Locker           = (*Backend)(nil)
	_ broadcaster.Broadcaster = (*Backend)(nil)
	_ backend.Capable         = (*Backend)(nil)
	_ backend.AtomicPublisher = (*Backend)(nil)
	_ backend.ChangeLog       = (*Backend)(nil)
	_ backend.Expirer         = (*Backend)(nil)
	_ locker.ReleaseWatcher   = (*Backend)(nil)
)

// Open opens the SQLite database file at path, creating it and the
// directory's -wal and -shm files if needed, switches it to write-ahead
// logging, and creates contextd's tables in it unless they exist. ctx
// bounds only Open itself. A nil opts means the defaults; opts is copied.
//
// path is a file-system path (not a "file:" URI, and without '?'). Open
// fails with an error matching fs.ErrNotExist if the directory does not
// exist, ErrNotDatabase if the file is not a SQLite database, ErrReadOnly if
// the file or directory cannot be written, and ErrSchemaVersion if the file
// holds contextd tables of an unknown layout. Close the Backend when done.
func Open(ctx context.Context, path string, opts *Options) (*Backend, error) {
	if ctx == nil {
		return nil, errors.New("sqlite: Open: nil context.Context")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	o := opts.resolved()
	abs, err := checkPath(path)
	if err != nil {
		return nil, err
	}
	syncMode := "NORMAL"
	if o.SyncFull {
		syncMode = "FULL"
	}
	// Plain file names: the driver strips the query before SQLite sees the
	// name. busy_timeout 0: a busy lock is returned at once and waited
	// for in Go (retry), bounded by ctx and BusyTimeout.
	w, err := sql.Open("sqlite", abs+"?_pragma=busy_timeout(0)&_pragma=synchronous("+syncMode+")")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	r, err := sql.Open("sqlite", abs+"?_pragma=busy_timeout(0)&_query_only=1")
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	// The pools hold the connections; database/sql only opens them.
	for _, db := range []*sql.DB{w, r} {
		db.SetMaxIdleConns(0)
		db.SetConnMaxLifetime(0)
	}

	var prefix [6]byte
	_, _ = rand.Read(prefix[:]) // crypto/rand.Read never fails
	b := &Backend{
		path:     abs,
		opts:     o,
		w:        newConnPool(w, 1),
		r:        newConnPool(r, o.MaxReadConns),
		idPrefix: hex.EncodeToString(prefix[:]) + "-",
	}
	b.poll = newPoller(b)
	if err := b.setup(ctx); err != nil {
		_ = b.closeDB()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	b.gate = openGate(abs)
	return b, nil
}

// checkPath turns path into an absolute file name and checks what can be
// checked before SQLite sees it, for clearer errors than SQLite's.
func checkPath(path string) (string, error) {
	switch {
	case path == "":
		return "", errors.New("sqlite: open: empty path")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return "", fmt.Errorf("sqlite: open %q: want a file-system path (an in-memory database cannot be shared between connections, and URIs are not accepted)", path)
	case strings.ContainsRune(path, '?'):
		return "", fmt.Errorf("sqlite: open %q: the path must not contain '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	dir := filepath.Dir(abs)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("sqlite: open %q: directory %q does not exist: %w", path, dir, err)
	case err != nil:
		return "", fmt.Errorf("sqlite: open %q: directory %q: %w", path, dir, err)
	case !fi.IsDir():
		return "", fmt.Errorf("sqlite: open %q: %q is not a directory", path, dir)
	}
	// Stat, never open: closing a descriptor of the file would drop the
	// POSIX locks other connections of this process hold on it. Whether
	// the file can be written, SQLite tells (setup writes).
	fi, err = os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return abs, nil // SQLite creates it
	case err != nil:
		return "", fmt.Errorf("sqlite: open %q: %w", path, err)
	case fi.IsDir():
		return "", fmt.Errorf("sqlite: open %q: is a directory, not a file", path)
	}
	return abs, nil
}

// setup switches the file to WAL and checks or creates the tables.
func (b *Backend) setup(ctx context.Context) error {
	var mode string
	err := b.retry(ctx, func() error {
		c, err := b.w.get(ctx)
		if err != nil {
			return err
		}
		defer b.w.put(c)
		return c.scan(context.WithoutCancel(ctx), sqlJournalWAL, nil, &mode)
	})
	if err != nil {
		return b.openError(ctx, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("cannot switch to write-ahead logging: journal mode is %q", mode)
	}
	err = b.writeTx(ctx, func(ctx context.Context, c *dbConn, _ int64) error {
		if err := ensureSchema(ctx, c); err != nil {
			return err
		}
		// A write, so that a file this process may only read fails here
		// and not at the first commit.
		_, err := c.exec(ctx, sqlTouch)
		return err
	})
	if err != nil {
		return b.openError(ctx, err)
	}
	return nil
}

// openError translates what SQLite says about a file it cannot use.
func (b *Backend) openError(ctx context.Context, err error) error {
	if errors.Is(err, ErrSchemaVersion) || errors.Is(err, ErrBusy) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	switch sqliteCode(err) {
	case sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%w: %w", ErrNotDatabase, err)
	case sqlite3.SQLITE_READONLY:
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	case sqlite3.SQLITE_CANTOPEN:
		return fmt.Errorf("cannot open the file or create its -wal and -shm files beside it (is the directory writable?): %w", err)
	}
	return err
}

// Capabilities reports the optional capabilities that the options have not
// switched off.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		AtomicPublish:   !b.opts.DisableAtomicPublish,
		LockAwareCommit: !b.opts.DisableLockAwareCommit,
		ChangeLog:       !b.opts.DisableChangeLog,
		ReleaseNotify:   !b.opts.DisableReleaseNotify,
		Expiry:          !b.opts.DisableExpiry,
	}
}

// Path returns the absolute path of the database file.
func (b *Backend) Path() string { return b.path }

// Close stops the poller, closes every Subscription (their Next returns
// ErrClosed) and the Backend's connections, and makes every later call
// fail with ErrClosed. The file and its data stay. Close is idempotent; it
// returns an error only if closing a connection failed.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.poll.shut()
	if err := b.closeDB(); err != nil {
		return fmt.Errorf("sqlite: close %q: %w", b.path, err)
	}
	return nil
}

func (b *Backend) closeDB() error {
	b.gate.close()
	return errors.Join(b.w.close(), b.r.close())
}

// begin checks what every method checks first: a usable ctx that is not
// done, and an open Backend. op names the call for the error message.
func (b *Backend) begin(ctx context.Context, op string) error {
	if ctx == nil {
		return fmt.Errorf("sqlite: %s: nil context.Context", op)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if b.closed.Load() {
		return fmt.Errorf("sqlite: %s: %w", op, ErrClosed)
	}
	return nil
}

// unsupported is the error of a capability the options switched off.
func unsupported(op, option string) error {
	return fmt.Errorf("sqlite: %s: switched off by Options.%s: %w", op, option, errors.ErrUnsupported)
}

// retry runs attempt until it returns anything but a busy error, ctx is
// done, or Options.BusyTimeout has passed. Only attempts that did nothing
// when they failed busy may be retried: a read, or a write transaction
// (SQLite rolls back a transaction whose statement or COMMIT failed busy,
// and writeTx rolls back on any error).
func (b *Backend) retry(ctx context.Context, attempt func() error) error {
	return b.retryBusy(ctx, nil, attempt)
}

// waiting is a writer's announcement that it waits for the write lock
// (gate.go): made at its first busy attempt, withdrawn as soon as it holds
// the lock or gives up.
type waiting struct {
	g         *gate
	announced bool
}

func (w *waiting) start() {
	if w != nil && !w.announced {
		w.g.announce()
		w.announced = true
	}
}

func (w *waiting) done() {
	if w != nil && w.announced {
		w.g.withdraw()
		w.announced = false
	}
}

// retryBusy is retry; a writer (w not nil) that waits also announces it
// to holders of other connections until it holds the lock or gives up.
func (b *Backend) retryBusy(ctx context.Context, w *waiting, attempt func() error) error {
	var deadline time.Time
	pause := 20 * time.Microsecond
	defer w.done()
	for {
		err := attempt()
		if err == nil || !isBusy(err) {
			return err
		}
		w.start()
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(b.opts.BusyTimeout)
		}
		if !now.Before(deadline) {
			return fmt.Errorf("%w: gave up after %v: %w", ErrBusy, b.opts.BusyTimeout, err)
		}
		t := time.NewTimer(pause/2 + mrand.N(pause))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, 250*time.Microsecond)
	}
}

// writeTx runs fn in a write transaction (BEGIN IMMEDIATE, which takes the
// file's write lock at once, so fn's reads and writes see one state) on
// the write connection, and commits it; fn gets the connection and the
// wall-clock time in ms, taken once the lock is held. An error of fn rolls
// everything back. A busy lock is waited for as retry does.
//
// ctx bounds the waits, for the connection and for the lock, and a ctx
// that ends before COMMIT rolls the transaction back. fn gets a ctx
// without cancellation for its statements: each takes microseconds, and a
// cancellable ctx costs the driver a goroutine per statement to interrupt
// it.
func (b *Backend) writeTx(ctx context.Context, fn func(ctx context.Context, c *dbConn, now int64) error) error {
	sctx := context.WithoutCancel(ctx)
	w := &waiting{g: b.gate}
	return b.retryBusy(ctx, w, func() error {
		c, err := b.w.get(ctx)
		if err != nil {
			return err
		}
		defer b.w.put(c)
		if _, err := c.exec(sctx, sqlBeginWrite); err != nil {
			return err
		}
		w.done() // holds the lock: no longer waiting
		err = fn(sctx, c, time.Now().UnixMilli())
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			if _, err = c.exec(sctx, sqlCommit); err == nil {
				b.handOff()
				return nil
			}
			// A failed COMMIT may leave the transaction open (SQLite
			// keeps it on SQLITE_BUSY): roll it back below.
		}
		if _, rerr := c.exec(sctx, sqlRollback); rerr != nil && !noTransaction(rerr) {
			c.broken = true
		}
		return err
	})
}

// readTx runs fn in a read transaction on a read connection: every
// statement of fn sees the same state of the file. As in writeTx, fn's
// statements get a ctx without cancellation.
func (b *Backend) readTx(ctx context.Context, fn func(ctx context.Context, c *dbConn) error) error {
	sctx := context.WithoutCancel(ctx)
	return b.retry(ctx, func() error {
		c, err := b.r.get(ctx)
		if err != nil {
			return err
		}
		defer b.r.put(c)
		if _, err := c.exec(sctx, sqlBeginRead); err != nil {
			return err
		}
		err = fn(sctx, c)
		if _, rerr := c.exec(sctx, sqlRollback); rerr != nil {
			c.broken = true
		}
		return err
	})
}

// writeOne runs fn, a single statement that writes, on the write
// connection, outside an explicit transaction: SQLite runs it in a
// transaction of its own, so it applies whole or not at all, and a busy
// lock makes it fail before it did anything (retry waits, as in writeTx).
// fn gets a ctx without cancellation for the statement.
func (b *Backend) writeOne(ctx context.Context, fn func(ctx context.Context, c *dbConn) error) error {
	sctx := context.WithoutCancel(ctx)
	return b.retryBusy(ctx, &waiting{g: b.gate}, func() error {
		c, err := b.w.get(ctx)
		if err != nil {
			return err
		}
		defer b.w.put(c)
		err = fn(sctx, c)
		if err == nil {
			b.handOff()
		}
		return err
	})
}

// read runs fn, a single statement, on a read connection.
func (b *Backend) read(ctx context.Context, fn func(c *dbConn) error) error {
	return b.retry(ctx, func() error {
		c, err := b.r.get(ctx)
		if err != nil {
			return err
		}
		defer b.r.put(c)
		return fn(c)
	})
}

// noTransaction reports whether err is SQLite's complaint about a ROLLBACK
// without a transaction: the failed COMMIT before it ended it already.
func noTransaction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no transaction is active")
}

// newCommitID returns an id unique among all Backends.
func (b *Backend) newCommitID() string {
	return b.idPrefix + strconv.FormatUint(b.idSeq.Add(1), 36)
}

// randomID returns 16 random hex characters, for epochs and lock tokens.
func randomID() string {
	var buf [8]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(buf[:])
}
