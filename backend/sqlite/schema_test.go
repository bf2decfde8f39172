package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/contextd-go/contextd/backend/sqlite"
)

func TestUnknownSchemaVersionIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	b, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, b, "c", put("k", "v"))
	b.Close()
	// contract: takes nothing; sets the layout version to one this package
	// does not know.
	if _, err := rawDB(t, path).Exec(`UPDATE contextd_schema SET version = 2 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if b, err := sqlite.Open(context.Background(), path, nil); !errors.Is(err, sqlite.ErrSchemaVersion) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("Open of a file with schema version 2 = %v, want ErrSchemaVersion", err)
	}
	var v int
	// contract: takes nothing; returns the layout version.
	if err := rawDB(t, path).QueryRow(`SELECT version FROM contextd_schema`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("after the refused Open the version is %d (%v), want 2 untouched", v, err)
	}
}

func TestTablesWithoutVersionAreRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	// contract: takes nothing; creates a table with the package's prefix
	// but no version row.
	if _, err := rawDB(t, path).Exec(`CREATE TABLE contextd_entries (x)`); err != nil {
		t.Fatal(err)
	}
	if b, err := sqlite.Open(context.Background(), path, nil); !errors.Is(err, sqlite.ErrSchemaVersion) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("Open of a file with contextd tables but no version = %v, want ErrSchemaVersion", err)
	}
}

func TestApplicationTablesStay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db := rawDB(t, path)
	// contract: takes nothing; the application's own table and row.
	if _, err := db.Exec(`CREATE TABLE app_users (name TEXT); INSERT INTO app_users VALUES ('jane')`); err != nil {
		t.Fatal(err)
	}
	b := openBackend(t, path, nil)
	mustCommit(t, b, "c", put("k", "v"))
	var name string
	// contract: takes nothing; returns the application's row.
	if err := db.QueryRow(`SELECT name FROM app_users`).Scan(&name); err != nil || name != "jane" {
		t.Fatalf("the application's table after Open: %q, %v", name, err)
	}
}

// TestConcurrentOpensOfANewFile opens one new file from many goroutines at
// once, as processes starting together would: the tables are created once
// and every Open succeeds.
func TestConcurrentOpensOfANewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	const n = 8
	var wg sync.WaitGroup
	backends := make([]*sqlite.Backend, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			backends[i], errs[i] = sqlite.Open(context.Background(), path, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer backends[i].Close()
	}
	if t.Failed() {
		return
	}
	h := mustCommit(t, backends[0], "c", put("k", "v"))
	for i, b := range backends {
		if got, err := b.Revision(context.Background(), "c"); err != nil || got != h {
			t.Errorf("Backend %d sees %+v, %v; want %+v", i, got, err, h)
		}
	}
	if n := countRows(t, path, "contextd_schema"); n != 1 {
		t.Errorf("%d version rows, want 1", n)
	}
}
