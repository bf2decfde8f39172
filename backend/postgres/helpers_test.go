package postgres_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/internal/pgtest"
)

// listenerApp is the application_name of a Backend's listening connection
// when the pool names none (postgres.listenerAppName).
const listenerApp = "contextd listener"

// testDB is one database of the shared cluster (or of a private one).
type testDB struct {
	cluster *pgtest.Cluster
	url     string
	name    string
}

// newDB makes a database for test t on the shared cluster.
func newDB(t testing.TB) testDB {
	t.Helper()
	c := pgtest.Shared(t)
	return dbOn(t, c)
}

func dbOn(t testing.TB, c *pgtest.Cluster) testDB {
	t.Helper()
	u := c.NewDatabase(t)
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return testDB{cluster: c, url: u, name: strings.TrimPrefix(parsed.Path, "/")}
}

// newBackend returns a Backend with a pool of its own on db, as a separate
// process would have; both are closed when the test ends.
func newBackend(t testing.TB, db testDB, opts *postgres.Options) *postgres.Backend {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := postgres.New(pool, opts)
	if err != nil {
		pool.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		pool.Close()
	})
	return b
}
