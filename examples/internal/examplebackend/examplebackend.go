// Package examplebackend hands the examples their backends: the embedded
// memory backend by default, or Redis, PostgreSQL or an SQLite file when a
// flag names one. Every example takes the same three flags:
//
//	-redis host:port      (or REDIS_ADDR)
//	-postgres URL         (or POSTGRES_URL), e.g. postgres://localhost/test
//	-sqlite FILE          (or SQLITE_FILE), a database file many processes share
package examplebackend

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/contextd"
)

// Flags names the storage an example runs on: at most one of its fields is
// set; none means the embedded memory backend.
type Flags struct {
	Redis    string // host:port
	Postgres string // a PostgreSQL URL or keyword/value string
	SQLite   string // a database file path
}

// Register defines -redis, -postgres and -sqlite on fs, with defaults from
// REDIS_ADDR, POSTGRES_URL and SQLITE_FILE, and returns the Flags they fill.
func Register(fs *flag.FlagSet) *Flags {
	f := new(Flags)
	fs.StringVar(&f.Redis, "redis", os.Getenv("REDIS_ADDR"), "run on Redis at host:port instead of the embedded memory backend")
	fs.StringVar(&f.Postgres, "postgres", os.Getenv("POSTGRES_URL"), "run on PostgreSQL at this URL instead of the embedded memory backend")
	fs.StringVar(&f.SQLite, "sqlite", os.Getenv("SQLITE_FILE"), "run on this SQLite database file instead of the embedded memory backend")
	return f
}

// Check reports an error if more than one backend is named.
func (f Flags) Check() error {
	n := 0
	for _, s := range []string{f.Redis, f.Postgres, f.SQLite} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("name at most one of -redis, -postgres and -sqlite")
	}
	return nil
}

// Shared reports whether the backend is shared beyond this process, so
// that separate OS processes can take part.
func (f Flags) Shared() bool { return f.Redis != "" || f.Postgres != "" || f.SQLite != "" }

// Args returns the command-line flags that name the same backend, for a
// child process.
func (f Flags) Args() []string {
	switch {
	case f.Redis != "":
		return []string{"-redis", f.Redis}
	case f.Postgres != "":
		return []string{"-postgres", f.Postgres}
	case f.SQLite != "":
		return []string{"-sqlite", f.SQLite}
	}
	return nil
}

// Set opens backends over one shared storage, one per instance, as separate
// processes would each have their own client. It is for one goroutine.
type Set struct {
	flags   Flags
	mem     *memory.Backend
	closers []func()
}

// New returns a Set on the storage f names.
func New(f Flags) *Set { return &Set{flags: f} }

// Open returns a backend for one more instance: a new client of Redis or
// PostgreSQL, a new connection pool on the SQLite file, or the Set's one
// memory backend, which in-process instances share.
func (s *Set) Open(ctx context.Context) (backend.Backend, error) {
	if err := s.flags.Check(); err != nil {
		return nil, err
	}
	var (
		b interface {
			backend.Backend
			Close() error
		}
		err error
	)
	switch f := s.flags; {
	case f.Redis != "":
		b, err = openRedis(f.Redis)
	case f.Postgres != "":
		b, err = postgres.Open(ctx, f.Postgres, nil)
	case f.SQLite != "":
		b, err = sqlite.Open(ctx, f.SQLite, nil)
	default:
		if s.mem == nil {
			s.mem = memory.New(nil)
			s.closers = append(s.closers, func() { _ = s.mem.Close() })
		}
		return s.mem, nil
	}
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = b.Close() })
	return b, nil
}

// Close closes every backend Open returned, last opened first. Close the
// Contexts on them before.
func (s *Set) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// openRedis returns a Redis backend for addr ("host:port").
func openRedis(addr string) (*redis.Backend, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-redis %q: want host:port: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("-redis %q: bad port: %w", addr, err)
	}
	return redis.Open(&redis.Options{Host: host, Port: port})
}

// OpenContext returns an initialized Context named name on a backend of its
// own from s, as a separate process would have; opts may be nil.
func OpenContext[T any](ctx context.Context, s *Set, name string, opts *contextd.Options) (*contextd.Context[T], error) {
	b, err := s.Open(ctx)
	if err != nil {
		return nil, err
	}
	cx, err := contextd.New[T](b, name, opts)
	if err != nil {
		return nil, err
	}
	if err := cx.Initialize(ctx); err != nil {
		_ = cx.Close()
		return nil, err
	}
	return cx, nil
}
