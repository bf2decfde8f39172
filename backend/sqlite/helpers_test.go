package sqlite_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/contextd-go/contextd/backend/sqlite"
)

// openBackend opens a Backend on path, closed when the test ends.
func openBackend(t testing.TB, path string, opts *sqlite.Options) *sqlite.Backend {
	t.Helper()
	b, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// rawDB opens the file with the driver alone, as another program would,
// with write transactions that take the write lock at once.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_txlock=immediate&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// sqlBreakLog trims the whole message log past a message it adds, as the
// publishers' trimming does when a poller falls more than
// Options.MessageLogLength messages behind.
//
//	takes:   nothing (the statements run in one write transaction)
//	returns: nothing; afterwards every message up to the added one is gone
//	         and contextd_bus says so
var sqlBreakLog = []string{
	`INSERT INTO contextd_messages (channel, payload) VALUES ('test.break', x'')`,
	`UPDATE contextd_bus SET trimmed = (SELECT max(id) FROM contextd_messages) WHERE id = 1`,
	`DELETE FROM contextd_messages WHERE id <= (SELECT trimmed FROM contextd_bus WHERE id = 1)`,
}

// trimMessageLog makes every Subscription on the file that had not read
// past the current head lose messages.
func trimMessageLog(t testing.TB, path string) {
	t.Helper()
	db := rawDB(t, path)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, q := range sqlBreakLog {
		if _, err := tx.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// countRows returns the number of rows of one of the package's tables.
func countRows(t testing.TB, path, table string) int {
	t.Helper()
	var n int
	// contract: takes nothing; returns one row, the table's row count.
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
