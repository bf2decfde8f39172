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
		return nil
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
	return nil
}
