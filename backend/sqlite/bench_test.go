package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/contextd"
)

// Benchmarks on one database file per benchmark; every target has a
// baseline measured on the same file in the same run with the driver alone
// (database/sql on modernc.org/sqlite, WAL, synchronous=NORMAL, as the
// Backend uses it), so results read as ratios (see docs/backend-sqlite.md):
//
//	go test -run '^$' -bench . -benchtime 1s -count 6 ./backend/sqlite

type benchValue struct {
	N    int    `json:"n"`
	Name string `json:"name"`
}

// benchFile returns a new database file in a temporary directory.
func benchFile(b *testing.B) string {
	return filepath.Join(b.TempDir(), "bench.db")
}

// rawBench opens the file as the baseline uses it: the driver alone, one
// connection, WAL, synchronous=NORMAL, and a plain table kv.
func rawBench(b *testing.B, path string) *sql.DB {
	b.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.Cleanup(func() { _ = db.Close() })
	// contract: creates the baseline's table; takes and returns nothing.
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL, rev INTEGER NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	return db
}

// sqlRawUpsert is the baseline write: a bare upsert into a plain table.
//
//	takes:   ?1 key, ?2 value
//	returns: nothing
const sqlRawUpsert = `INSERT INTO kv (k, v, rev) VALUES (?1, ?2, 1)
ON CONFLICT (k) DO UPDATE SET v = excluded.v, rev = kv.rev + 1`

// sqlRawGet is the baseline read: a select by key.
//
//	takes:   ?1 key
//	returns: zero or one row (v)
const sqlRawGet = `SELECT v FROM kv WHERE k = ?1`

func benchInstance[T any](b *testing.B, path, name string) *contextd.Context[T] {
	b.Helper()
	c, err := contextd.New[T](openBackend(b, path, nil), name, &contextd.Options{ResyncInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Initialize(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkWrite compares UpdateContext of a free key with the floor, a
// bare upsert through the driver.
func BenchmarkWrite(b *testing.B) {
	path := benchFile(b)
	ctx := context.Background()
	b.Run("raw-upsert", func(b *testing.B) {
		db := rawBench(b, path)
		st, err := db.Prepare(sqlRawUpsert)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		for i := 0; b.Loop(); i++ {
			if _, err := st.Exec("k", fmt.Appendf(nil, `{"n":%d,"name":"x"}`, i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The backend's commit alone (checks, head, entry, change log, event
	// in the message log; no Context): the difference to UpdateContext is
	// the typed cache and receiving the own event.
	b.Run("backend-CommitAndPublish", func(b *testing.B) {
		be := openBackend(b, path, nil)
		channel := backend.DefaultChannel("bench-commit")
		for i := 0; b.Loop(); i++ {
			bt := backend.Batch{Ops: []backend.Op{{Key: "k", Value: fmt.Appendf(nil, `{"n":%d,"name":"x"}`, i)}}}
			if _, err := be.CommitAndPublish(ctx, "bench-commit", bt, channel); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UpdateContext", func(b *testing.B) {
		cx := benchInstance[benchValue](b, path, "bench-write")
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := cx.UpdateContext(ctx, "k", benchValue{N: i, Name: "x"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRead compares reads from the local copy, and from the store,
// with a select by key through the driver.
func BenchmarkRead(b *testing.B) {
	path := benchFile(b)
	ctx := context.Background()
	cx := benchInstance[benchValue](b, path, "bench-read")
	if err := cx.UpdateContext(ctx, "k", benchValue{N: 1, Name: "x"}); err != nil {
		b.Fatal(err)
	}
	db := rawBench(b, path)
	if _, err := db.Exec(sqlRawUpsert, "k", []byte(`{"n":1,"name":"x"}`)); err != nil {
		b.Fatal(err)
	}
	b.Run("raw-select", func(b *testing.B) {
		st, err := db.Prepare(sqlRawGet)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		var v []byte
		for b.Loop() {
			if err := st.QueryRow("k").Scan(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("backend-Get", func(b *testing.B) {
		be := openBackend(b, path, nil)
		for b.Loop() {
			if _, err := be.Get(ctx, "bench-read", "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := cx.Get(ctx, "k"); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

// reportLatencies adds p50 and p99 of the samples as metrics.
func reportLatencies(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
}

// randomPhase waits a random part of interval, so that writes start at a
// random point of the receiver's polling cycle rather than right after the
// turn that saw the previous write. The wait is inside the timed loop
// (ns/op includes it) but not in the latency samples.
func randomPhase(interval time.Duration) {
	if interval > 0 {
		time.Sleep(rand.N(interval))
	}
}

// BenchmarkPropagation measures from the start of a write until another
// instance on the same file (its own Backend, as another process would
// have) has it, against a raw write seen by a reader that polls the table
// at the same interval (sqlite.DefaultPollInterval), and by one that polls
// as fast as it can. Compare the p50-µs and p99-µs metrics, not ns/op.
func BenchmarkPropagation(b *testing.B) {
	ctx := context.Background()
	rawProp := func(b *testing.B, interval time.Duration) {
		path := benchFile(b)
		w, r := rawBench(b, path), rawBench(b, path)
		if _, err := w.Exec(sqlRawUpsert, "k", []byte("0")); err != nil {
			b.Fatal(err)
		}
		st, err := r.Prepare(sqlRawGet)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		// The reader polls on its own schedule, as a poller does, and
		// reports each new value it sees.
		seen := make(chan string, 1)
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			last := "0"
			for rctx.Err() == nil {
				var v []byte
				if err := st.QueryRowContext(rctx, "k").Scan(&v); err != nil {
					return
				}
				if string(v) != last {
					last = string(v)
					seen <- last
				}
				if interval > 0 {
					time.Sleep(interval)
				}
			}
		}()
		defer func() { stop(); <-done }()
		var samples []time.Duration
		for i := 1; b.Loop(); i++ {
			want := fmt.Sprint(i)
			randomPhase(interval)
			start := time.Now()
			if _, err := w.Exec(sqlRawUpsert, "k", []byte(want)); err != nil {
				b.Fatal(err)
			}
			if got := <-seen; got != want {
				b.Fatalf("reader saw %q, want %q", got, want)
			}
			samples = append(samples, time.Since(start))
		}
		reportLatencies(b, samples)
	}
	b.Run("raw-poll-interval", func(b *testing.B) { rawProp(b, sqlite.DefaultPollInterval) })
	b.Run("raw-poll-busy", func(b *testing.B) { rawProp(b, 0) })
	b.Run("UpdateContext", func(b *testing.B) {
		path := benchFile(b)
		w := benchInstance[int](b, path, "bench-prop")
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watch := benchInstance[int](b, path, "bench-prop").Watch(wctx)
		var samples []time.Duration
		for i := 1; b.Loop(); i++ {
			randomPhase(sqlite.DefaultPollInterval)
			start := time.Now()
			if err := w.UpdateContext(ctx, "k", i); err != nil {
				b.Fatal(err)
			}
			for c := range watch {
				if c.Value == i {
					break
				}
			}
			samples = append(samples, time.Since(start))
		}
		reportLatencies(b, samples)
	})
}
