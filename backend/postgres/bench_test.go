package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// Benchmarks against the shared cluster; every target has a raw pgx
// baseline measured on the same server in the same run, so results read as
// ratios (see docs/backend-postgres.md):
//
//	go test -run '^$' -bench . -benchtime 1s -count 6 ./backend/postgres

type benchValue struct {
	N    int    `json:"n"`
	Name string `json:"name"`
}

func rawPool(b *testing.B, db testDB) *pgxpool.Pool {
	b.Helper()
	p, err := pgxpool.New(context.Background(), db.url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

func benchInstance[T any](b *testing.B, db testDB, name string) *contextd.Context[T] {
	b.Helper()
	be := newBackend(b, db, nil)
	c, err := contextd.New[T](be, name, &contextd.Options{ResyncInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Initialize(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkWrite compares UpdateContext of a free key with the one-round-
// trip floor, a bare upsert of the same value.
func BenchmarkWrite(b *testing.B) {
	db := newDB(b)
	ctx := context.Background()
	b.Run("raw-upsert", func(b *testing.B) {
		p := rawPool(b, db)
		if _, err := p.Exec(ctx, `CREATE TABLE IF NOT EXISTS raw_kv (k text PRIMARY KEY, v bytea NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			v := fmt.Appendf(nil, `{"n":%d,"name":"x"}`, i)
			if _, err := p.Exec(ctx, `INSERT INTO raw_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, "k", v); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The backend's commit alone (checks, log, NOTIFY; no Context, no
	// listener): the difference to UpdateContext is the cost of the typed
	// cache and of receiving the own event.
	b.Run("backend-CommitAndPublish", func(b *testing.B) {
		be := newBackend(b, db, nil)
		channel := backend.DefaultChannel("bench-commit")
		for i := 0; b.Loop(); i++ {
			bt := backend.Batch{Ops: []backend.Op{{Key: "k", Value: fmt.Appendf(nil, `{"n":%d,"name":"x"}`, i)}}}
			if _, err := be.CommitAndPublish(ctx, "bench-commit", bt, channel); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UpdateContext", func(b *testing.B) {
		cx := benchInstance[benchValue](b, db, "bench-write")
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := cx.UpdateContext(ctx, "k", benchValue{N: i, Name: "x"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRead compares a read from the local copy, and a fresh read from
// the store, with a raw SELECT by key.
func BenchmarkRead(b *testing.B) {
	db := newDB(b)
	ctx := context.Background()
	cx := benchInstance[benchValue](b, db, "bench-read")
	values := make(map[string]benchValue, 1000)
	for i := range 1000 {
		values[fmt.Sprintf("key-%04d", i)] = benchValue{N: i, Name: "x"}
	}
	if err := cx.TransactionalUpdate(ctx, values); err != nil {
		b.Fatal(err)
	}
	raw := rawPool(b, db)
	if _, err := raw.Exec(ctx, `CREATE TABLE raw_read (k text PRIMARY KEY, v bytea NOT NULL);
		INSERT INTO raw_read SELECT 'key-' || lpad(i::text, 4, '0'), '{"n":1,"name":"x"}' FROM generate_series(0, 999) i`); err != nil {
		b.Fatal(err)
	}
	b.Run("raw-SELECT", func(b *testing.B) {
		for b.Loop() {
			var v []byte
			if err := raw.QueryRow(ctx, `SELECT v FROM raw_read WHERE k = $1`, "key-0001").Scan(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := cx.Get(ctx, "key-0001"); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("Get-Fresh", func(b *testing.B) {
		for b.Loop() {
			if _, ok, err := cx.Get(ctx, "key-0001", contextd.Fresh()); !ok || err != nil {
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

// BenchmarkPropagation measures from the start of a write until another
// instance has it, against a raw NOTIFY reaching a raw LISTEN connection.
func BenchmarkPropagation(b *testing.B) {
	db := newDB(b)
	ctx := context.Background()
	b.Run("raw-NOTIFY-LISTEN", func(b *testing.B) {
		pub := rawPool(b, db)
		sub, err := pgx.Connect(ctx, db.url)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = sub.Close(context.Background()) })
		if _, err := sub.Exec(ctx, `LISTEN bench_prop`); err != nil {
			b.Fatal(err)
		}
		var samples []time.Duration
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			if _, err := pub.Exec(ctx, `SELECT pg_notify('bench_prop', $1)`, fmt.Sprint(i)); err != nil {
				b.Fatal(err)
			}
			if _, err := sub.WaitForNotification(ctx); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		reportLatencies(b, samples)
	})
	b.Run("UpdateContext", func(b *testing.B) {
		w := benchInstance[int](b, db, "bench-prop")
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watch := benchInstance[int](b, db, "bench-prop").Watch(wctx)
		var samples []time.Duration
		for i := 0; b.Loop(); i++ {
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
