package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// schemaVersion is the version of the table layout this package reads and
// writes. A file with another version is refused, never migrated silently.
// Key expiry (expiryDDL) is an addition to version 1 that earlier releases
// read and write without knowing it, so it keeps the version.
const schemaVersion = 1

// schemaDDL creates the tables of version 1. All names start with
// "contextd_", so the file can hold an application's own tables too.
//
//	contextd_schema    one row: the layout version
//	contextd_contexts  one row per context: head (epoch, revision, commit
//	                   id and parent), codec, last fencing token
//	contextd_entries   one row per live key: value, and the revision and
//	                   commit id that last wrote it
//	contextd_changes   the change log: recent events per context, by
//	                   revision
//	contextd_locks     one row per locked key: token, fence, expiry in
//	                   wall-clock ms (rows of expired locks stay until the
//	                   key is locked again)
//	contextd_messages  the message log that Publish appends to and pollers
//	                   read, trimmed to about Options.MessageLogLength
//	contextd_bus       one row: the id up to which messages were trimmed
//
// Tables keyed by (context, key) or (context, revision) are WITHOUT ROWID,
// and the message log has no AUTOINCREMENT, so that a commit changes as few
// pages as it can: the head, the entry, the logged event and the message,
// one b-tree each. Each changed page is one write to the WAL at commit.
//
// These are the tables as releases before key expiry made them: keep them
// so (TestOldLayoutGainsExpiry makes an old file with them), and add to
// version 1 only in the way expiryDDL does.
var schemaDDL = []string{
	`CREATE TABLE contextd_schema (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL
)`,
	`CREATE TABLE contextd_contexts (
  name TEXT PRIMARY KEY,
  epoch TEXT NOT NULL DEFAULT '',
  revision INTEGER NOT NULL DEFAULT 0,
  commit_id TEXT NOT NULL DEFAULT '',
  parent_id TEXT NOT NULL DEFAULT '',
  codec TEXT NOT NULL DEFAULT '',
  fence INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID`,
	`CREATE TABLE contextd_entries (
  name TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  revision INTEGER NOT NULL,
  commit_id TEXT NOT NULL,
  PRIMARY KEY (name, key)
) WITHOUT ROWID`,
	`CREATE TABLE contextd_changes (
  name TEXT NOT NULL,
  revision INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (name, revision)
) WITHOUT ROWID`,
	`CREATE TABLE contextd_locks (
  name TEXT NOT NULL,
  key TEXT NOT NULL,
  token TEXT NOT NULL,
  fence INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (name, key)
) WITHOUT ROWID`,
	`CREATE TABLE contextd_messages (
  id INTEGER PRIMARY KEY,
  channel TEXT NOT NULL,
  payload BLOB NOT NULL
)`,
	`CREATE TABLE contextd_bus (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  trimmed INTEGER NOT NULL
)`,
	`INSERT INTO contextd_bus (id, trimmed) VALUES (1, 0)`,
	fmt.Sprintf(`INSERT INTO contextd_schema (id, version) VALUES (1, %d)`, schemaVersion),
}

// expiryDDL adds key expiry to the tables of version 1, once, in Open's
// write transaction (ensureSchema): to a file an earlier release made, or
// just now schemaDDL. It adds to contextd_entries
//
//	expires_ms   when the key expires, wall-clock ms of the writing
//	             process; NULL: never
//	expires_rev  the revision whose put set expires_ms: the expiry holds
//	             only while it equals the entry's revision, so that a put
//	             by an earlier release, which leaves both columns alone,
//	             clears it
//
// and an index of the keys that expire, by context and time, so that due
// keys and the next deadline are one index range. Adding a column with no
// default rewrites nothing. The version stays 1: an earlier release still
// reads and writes the file correctly (it never expires keys, and never
// makes a key expire).
var expiryDDL = []string{
	`ALTER TABLE contextd_entries ADD COLUMN expires_ms INTEGER`,
	`ALTER TABLE contextd_entries ADD COLUMN expires_rev INTEGER`,
	`CREATE INDEX contextd_entries_expiry ON contextd_entries (name, expires_ms)
WHERE expires_ms IS NOT NULL`,
}

// Schema statements (schema.go).
const (
	// sqlOurTables lists the tables of this package that exist.
	//
	//	takes:   nothing
	//	returns: rows (name) of the tables whose names start with
	//	         "contextd_"
	//	runs:    first in Open's write transaction
	sqlOurTables = `SELECT name FROM sqlite_master
WHERE type = 'table' AND name LIKE 'contextd\_%' ESCAPE '\'`

	// sqlSchemaVersion reads the layout version.
	//
	//	takes:   nothing
	//	returns: zero or one row (version)
	//	runs:    after sqlOurTables, in Open's write transaction
	sqlSchemaVersion = `SELECT version FROM contextd_schema WHERE id = 1`

	// sqlHasExpiry tells whether expiryDDL has run.
	//
	//	takes:   nothing
	//	returns: one row (n): 1 if contextd_entries has expires_ms, else 0
	//	runs:    after sqlSchemaVersion, in Open's write transaction
	sqlHasExpiry = `SELECT count(*) FROM pragma_table_info('contextd_entries') WHERE name = 'expires_ms'`

	// sqlJournalWAL switches the file to write-ahead logging, which
	// persists in the file.
	//
	//	takes:   nothing
	//	returns: one row (mode): "wal" on success
	//	runs:    alone, on the write connection, before any transaction
	sqlJournalWAL = `PRAGMA journal_mode = WAL`

	// sqlTouch writes without changing anything, so that Open fails on a
	// file this process may only read rather than the first commit.
	//
	//	takes:   nothing
	//	returns: nothing
	//	runs:    last in Open's write transaction
	sqlTouch = `UPDATE contextd_bus SET trimmed = trimmed WHERE id = 1`
)

// ensureSchema creates the tables in a file that has none, and checks the
// version of a file that has them. It runs in a write transaction, so
// processes opening one new file at once create the tables once.
func ensureSchema(ctx context.Context, c *dbConn) error {
	rows, err := c.query(ctx, sqlOurTables)
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, name)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(tables) == 0 {
		for _, ddl := range schemaDDL {
			if _, err := c.c.ExecContext(ctx, ddl); err != nil {
				return err
			}
		}
		return ensureExpiry(ctx, c)
	}
	var version int64
	err = c.c.QueryRowContext(ctx, sqlSchemaVersion).Scan(&version)
	switch {
	case errors.Is(err, sql.ErrNoRows) || err != nil && strings.Contains(err.Error(), "no such table"):
		return fmt.Errorf("the file has contextd tables (%s) but no schema version: %w", strings.Join(tables, ", "), ErrSchemaVersion)
	case err != nil:
		return err
	case version != schemaVersion:
		return fmt.Errorf("the file has schema version %d, this package knows only %d and never migrates silently: %w", version, schemaVersion, ErrSchemaVersion)
	}
	return ensureExpiry(ctx, c)
}

// ensureExpiry runs expiryDDL if it has not run, in Open's write
// transaction.
func ensureExpiry(ctx context.Context, c *dbConn) error {
	var n int64
	if err := c.c.QueryRowContext(ctx, sqlHasExpiry).Scan(&n); err != nil || n > 0 {
		return err
	}
	for _, ddl := range expiryDDL {
		if _, err := c.c.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("add key expiry: %w", err)
		}
	}
	return nil
}
