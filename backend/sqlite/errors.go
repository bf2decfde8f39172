package sqlite

import (
	"context"
	"errors"
	"fmt"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/contextd-go/contextd/broadcaster"
)

var (
	// ErrClosed is returned by every method of a Backend after Close, and
	// by Subscription.Next after the Subscription or its Backend was
	// closed. It is broadcaster.ErrClosed, so one errors.Is check covers
	// both.
	ErrClosed = broadcaster.ErrClosed

	// ErrNotDatabase is returned by Open for a file that exists but is not
	// a SQLite database.
	ErrNotDatabase = errors.New("sqlite: not a SQLite database")

	// ErrReadOnly is returned by Open for a file (or directory) this
	// process may not write: every contextd instance writes, if only to
	// take locks.
	ErrReadOnly = errors.New("sqlite: database is read-only")

	// ErrSchemaVersion is returned by Open for a file whose contextd
	// tables have a layout version this package does not know. The
	// package never migrates a file silently.
	ErrSchemaVersion = errors.New("sqlite: unknown schema version")

	// ErrBusy is returned by a call that waited Options.BusyTimeout for the
	// write lock of the file without getting it.
	ErrBusy = errors.New("sqlite: database is busy")
)

// sqliteCode returns the primary SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// isBusy reports whether err says another connection holds a lock the
// call needed: nothing was done, so the call may be tried again.
func isBusy(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_BUSY
}

// wrap adds the operation to an error of the driver, translating what
// callers match on: ctx's end (also when SQLite reports it as an
// interrupt), a closed Backend, a read-only or foreign file.
func (b *Backend) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if b.closed.Load() && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("sqlite: %s: %w: %w", op, ErrClosed, err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlite: %s: %w: %w", op, cerr, err)
	}
	switch sqliteCode(err) {
	case sqlite3.SQLITE_READONLY:
		return fmt.Errorf("sqlite: %s: %w: %w", op, ErrReadOnly, err)
	case sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("sqlite: %s: %w: %w", op, ErrNotDatabase, err)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}
