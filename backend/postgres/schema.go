package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSchemaVersion is returned when the schema in the database has a version
// this package does not know (a newer contextd made it, or someone changed
// it). The backend never migrates a schema to another version by itself;
// it adds key expiry to a schema of version 1 that lacks it, which leaves
// the schema readable and writable by earlier releases (see the package
// doc, "Expiry and the schema").
var ErrSchemaVersion = errors.New("postgres: unknown schema version")

// ready makes sure the schema exists and has the version this package
// knows: once per Backend, retried by later calls if it failed.
func (b *Backend) ready(ctx context.Context) error {
	if b.schemaReady.Load() {
		return nil
	}
	b.schemaMu.Lock()
	defer b.schemaMu.Unlock()
	if b.schemaReady.Load() {
		return nil
	}
	if err := b.ensureSchema(ctx); err != nil {
		return err
	}
	b.schemaReady.Store(true)
	return nil
}

// ensureSchema checks the schema's version and creates the schema when it
// has none. Creation runs in one transaction under an advisory lock on the
// schema's name, so processes starting together create it once.
func (b *Backend) ensureSchema(ctx context.Context) error {
	v, err := b.schemaVersion(ctx, b.pool)
	if err == nil {
		if err := b.checkVersion(v); err != nil {
			return err
		}
		return b.ensureExpiry(ctx)
	}
	if !missingSchema(err) {
		return wrap(ctx, fmt.Sprintf("check schema %q", b.opts.Schema), err)
	}
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, b.sql.schemaLock, b.opts.Schema); err != nil {
			return err
		}
		// Someone may have created it while we waited for the lock. A
		// failed statement would abort the transaction, so look in the
		// catalogue rather than at the table.
		var exists bool
		if err := tx.QueryRow(ctx, b.sql.schemaExists, pgx.Identifier{b.opts.Schema, "schema_version"}.Sanitize()).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		_, err := tx.Exec(ctx, b.sql.createSchema)
		return err
	})
	if err != nil {
		return wrap(ctx, fmt.Sprintf("create schema %q", b.opts.Schema), err)
	}
	v, err = b.schemaVersion(ctx, b.pool)
	if err != nil {
		return wrap(ctx, fmt.Sprintf("check schema %q", b.opts.Schema), err)
	}
	if err := b.checkVersion(v); err != nil {
		return err
	}
	return b.ensureExpiry(ctx)
}

// ensureExpiry adds key expiry (createExpirySQL) to a schema of version 1
// that lacks it: a schema made by an earlier release, or just now by
// createSchemaSQL. Like creation it runs in one transaction under the
// advisory lock on the schema's name, and looks again once it holds it.
func (b *Backend) ensureExpiry(ctx context.Context) error {
	var ready bool
	if err := b.pool.QueryRow(ctx, b.sql.expiryReady, b.opts.Schema).Scan(&ready); err != nil {
		return wrap(ctx, fmt.Sprintf("check schema %q", b.opts.Schema), err)
	}
	if ready {
		return nil
	}
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, b.sql.schemaLock, b.opts.Schema); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, b.sql.expiryReady, b.opts.Schema).Scan(&ready); err != nil || ready {
			return err
		}
		_, err := tx.Exec(ctx, b.sql.createExpiry)
		return err
	})
	if err != nil {
		return wrap(ctx, fmt.Sprintf("add key expiry to schema %q", b.opts.Schema), err)
	}
	return nil
}

func (b *Backend) schemaVersion(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]int, error) {
	rows, err := q.Query(ctx, b.sql.schemaVersion)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

func (b *Backend) checkVersion(v []int) error {
	switch {
	case len(v) == 1 && v[0] == currentSchemaVersion:
		return nil
	case len(v) == 1:
		return fmt.Errorf("%w: schema %q has version %d, this contextd knows version %d; refusing to use or migrate it (use a contextd that knows it, or another Options.Schema)",
			ErrSchemaVersion, b.opts.Schema, v[0], currentSchemaVersion)
	default:
		return fmt.Errorf("%w: schema %q has %d version rows, want 1; refusing to use it", ErrSchemaVersion, b.opts.Schema, len(v))
	}
}

// missingSchema reports whether err says the schema or its version table
// does not exist.
func missingSchema(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}
