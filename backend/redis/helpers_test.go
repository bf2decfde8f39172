package redis_test

import (
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/redistest"
)

// newBackend returns a Backend with a client of its own on srv, as a
// separate process would have; both are closed when the test ends. The
// client is named after the test (clientName), so faults can target it.
func newBackend(t testing.TB, srv *redistest.Server, opts *redis.Options) *redis.Backend {
	t.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password(), ClientName: clientName(t)})
	return backendOn(t, client, opts)
}

// backendOn returns a Backend on client; both are closed when the test
// ends.
func backendOn(t testing.TB, client goredis.UniversalClient, opts *redis.Options) *redis.Backend {
	t.Helper()
	b, err := redis.New(client, opts)
	if err != nil {
		_ = client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		_ = client.Close()
	})
	return b
}

// clientName is a Redis client name for the test: its name without the
// characters Redis refuses in client names.
func clientName(t testing.TB) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return '_'
		}
		return r
	}, t.Name())
}
