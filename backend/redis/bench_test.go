package redis_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// Benchmarks against one redis-server started for the run; every target has
// a raw go-redis baseline measured on the same server in the same run, so
// results read as ratios (see docs/benchmarks.md):
//
//	go test -run '^$' -bench . -benchtime 1s -count 6 ./backend/redis

type benchValue struct {
	N    int    `json:"n"`
	Name string `json:"name"`
}

// benchEnv is one server shared by the sub-benchmarks of a benchmark.
func benchServer(b *testing.B) *redistest.Server {
	b.Helper()
	return redistest.Start(b, nil)
}

func rawClient(b *testing.B, srv *redistest.Server) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func benchInstance[T any](b *testing.B, srv *redistest.Server, name string) *contextd.Context[T] {
	b.Helper()
	be := newBackend(b, srv, nil)
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
// trip floor, a raw HSET.
func BenchmarkWrite(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	b.Run("raw-HSET", func(b *testing.B) {
		c := rawClient(b, srv)
		for i := 0; b.Loop(); i++ {
			if err := c.HSet(ctx, "bench:raw", "k", fmt.Sprintf(`{"n":%d,"name":"x"}`, i)).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What the original library did per update, and what hand-rolled code
	// needs for the same promises: take the key's lock, write, publish the
	// change, release the lock — four round trips.
	b.Run("raw-lock-HSET-PUBLISH-unlock", func(b *testing.B) {
		c := rawClient(b, srv)
		for i := 0; b.Loop(); i++ {
			if ok, err := c.SetNX(ctx, "bench:lock:k", "token", 10*time.Second).Result(); err != nil || !ok {
				b.Fatal(ok, err)
			}
			v := fmt.Sprintf(`{"n":%d,"name":"x"}`, i)
			if err := c.HSet(ctx, "bench:hand", "k", v).Err(); err != nil {
				b.Fatal(err)
			}
			if err := c.Publish(ctx, "bench:hand:events", v).Err(); err != nil {
				b.Fatal(err)
			}
			if err := c.Del(ctx, "bench:lock:k").Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The backend's commit alone (script, log, publish; no Context, no
	// subscriber): the difference to UpdateContext is the cost of the
	// typed cache and of receiving the own event.
	b.Run("backend-CommitAndPublish", func(b *testing.B) {
		be := newBackend(b, srv, nil)
		channel := backend.DefaultChannel("bench-commit")
		for i := 0; b.Loop(); i++ {
			bt := backend.Batch{Ops: []backend.Op{{Key: "k", Value: fmt.Appendf(nil, `{"n":%d,"name":"x"}`, i)}}}
			if _, err := be.CommitAndPublish(ctx, "bench-commit", bt, channel); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UpdateContext", func(b *testing.B) {
		cx := benchInstance[benchValue](b, srv, "bench-write")
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := cx.UpdateContext(ctx, "k", benchValue{N: i, Name: "x"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRead compares reads from the local copy with a raw HGET and
// HGETALL.
func BenchmarkRead(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	cx := benchInstance[benchValue](b, srv, "bench-read")
	values := make(map[string]benchValue, 1000)
	for i := range 1000 {
		values[fmt.Sprintf("key-%04d", i)] = benchValue{N: i, Name: "x"}
	}
	if err := cx.TransactionalUpdate(ctx, values); err != nil {
		b.Fatal(err)
	}
	raw := rawClient(b, srv)
	b.Run("raw-HGET", func(b *testing.B) {
		for b.Loop() {
			if err := raw.HGet(ctx, "{contextd:bench-read}:data", "key-0001").Err(); err != nil {
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
	b.Run("raw-HGETALL-1k", func(b *testing.B) {
		for b.Loop() {
			if err := raw.HGetAll(ctx, "{contextd:bench-read}:data").Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GetContext-1k", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m, err := cx.GetContext(ctx); len(m) != 1000 || err != nil {
				b.Fatal(len(m), err)
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

// BenchmarkPropagation measures from the start of a write until the last of
// 4 other instances has it, against a raw PUBLISH reaching the last of 4 raw
// subscribers.
func BenchmarkPropagation(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const receivers = 4
	b.Run("raw-PUBLISH", func(b *testing.B) {
		pub := rawClient(b, srv)
		subs := make([]<-chan *goredis.Message, receivers)
		for i := range subs {
			ps := rawClient(b, srv).Subscribe(ctx, "bench:prop")
			if _, err := ps.Receive(ctx); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = ps.Close() })
			subs[i] = ps.Channel()
		}
		var samples []time.Duration
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			if err := pub.Publish(ctx, "bench:prop", fmt.Sprint(i)).Err(); err != nil {
				b.Fatal(err)
			}
			for _, s := range subs {
				<-s
			}
			samples = append(samples, time.Since(start))
		}
		reportLatencies(b, samples)
	})
	b.Run("UpdateContext", func(b *testing.B) {
		w := benchInstance[int](b, srv, "bench-prop")
		watch := make([]<-chan contextd.Change[int], receivers)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for i := range watch {
			watch[i] = benchInstance[int](b, srv, "bench-prop").Watch(wctx)
		}
		var samples []time.Duration
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			if err := w.UpdateContext(ctx, "k", i); err != nil {
				b.Fatal(err)
			}
			for _, ch := range watch {
				for c := range ch {
					if c.Value == i {
						break
					}
				}
			}
			samples = append(samples, time.Since(start))
		}
		reportLatencies(b, samples)
	})
}

// BenchmarkContendedModify increments one counter from 8 instances at once;
// the baseline is WATCH/MULTI/EXEC optimistic increments from 8 raw
// clients, the textbook hand-rolled equivalent.
func BenchmarkContendedModify(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const instances = 8
	b.Run("raw-WATCH-MULTI", func(b *testing.B) {
		clients := make([]*goredis.Client, instances)
		for i := range clients {
			clients[i] = rawClient(b, srv)
		}
		runSpread(b, instances, func(i int) error {
			c := clients[i]
			for {
				err := c.Watch(ctx, func(tx *goredis.Tx) error {
					n, err := tx.Get(ctx, "bench:counter").Int()
					if err != nil && err != goredis.Nil {
						return err
					}
					_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
						p.Set(ctx, "bench:counter", n+1, 0)
						return nil
					})
					return err
				}, "bench:counter")
				if err != goredis.TxFailedErr {
					return err
				}
			}
		})
	})
	b.Run("Modify", func(b *testing.B) {
		cs := make([]*contextd.Context[int], instances)
		for i := range cs {
			cs[i] = benchInstance[int](b, srv, "bench-modify")
		}
		inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
		runSpread(b, instances, func(i int) error {
			_, err := cs[i].Modify(ctx, "counter", inc)
			return err
		})
	})
}

// runSpread runs b.N calls of op spread over n goroutines, one per
// instance.
func runSpread(b *testing.B, n int, op func(i int) error) {
	b.Helper()
	var next sync.Mutex
	left := b.N
	take := func() bool {
		next.Lock()
		defer next.Unlock()
		left--
		return left >= 0
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkWriteBySize shows that a write's cost does not grow with the
// context: UpdateContext of one key in contexts of 1k and 100k keys.
func BenchmarkWriteBySize(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	for _, size := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", size), func(b *testing.B) {
			name := fmt.Sprintf("bench-size-%d", size)
			cx := benchInstance[benchValue](b, srv, name)
			batch := make(map[string]benchValue, 5000)
			for i := range size {
				batch[fmt.Sprintf("key-%06d", i)] = benchValue{N: i, Name: "x"}
				if len(batch) == 5000 || i == size-1 {
					if err := cx.TransactionalUpdate(ctx, batch); err != nil {
						b.Fatal(err)
					}
					clear(batch)
				}
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := cx.UpdateContext(ctx, "key-000001", benchValue{N: i, Name: "x"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// manyContexts is how many contexts BenchmarkManyContexts opens on one
// Backend.
const manyContexts = 1000

// manyBackend returns a Backend on a client of its own on srv, named so
// its pub/sub connections can be counted; perContext gives it the former
// design, a pub/sub connection per Subscription. close closes both.
func manyBackend(b *testing.B, srv *redistest.Server, perContext bool) (be *redis.Backend, close func()) {
	b.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ClientName: clientName(b)})
	be, err := redis.New(client, nil)
	if err != nil {
		b.Fatal(err)
	}
	if perContext {
		redis.UseConnectionPerSubscription(be)
	}
	return be, func() {
		_ = be.Close()
		_ = client.Close()
	}
}

func manyName(i int) string { return fmt.Sprintf("many-%04d", i) }

// openMany initializes manyContexts contexts on be.
func openMany(b *testing.B, be *redis.Backend) []*contextd.Context[int] {
	b.Helper()
	cs := make([]*contextd.Context[int], manyContexts)
	for i := range cs {
		c, err := contextd.New[int](be, manyName(i), &contextd.Options{ResyncInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Initialize(context.Background()); err != nil {
			b.Fatal(err)
		}
		cs[i] = c
	}
	return cs
}

func closeMany(cs []*contextd.Context[int]) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// BenchmarkManyContexts opens 1,000 contexts on one Backend, as a service
// with many contexts does, with a pub/sub connection per context (the
// former design, kept in legacy_test.go as the baseline) and with the
// shared connection, in the same run:
//
//	go test -run '^$' -bench ManyContexts -count 6 ./backend/redis
//
// Initialize measures the time to initialize all 1,000 (ns/op is for all
// of them), the heap they keep (heap-MB), their goroutines and the pub/sub
// connections on the server. Propagation measures a write by another
// process to one of them (in turn) until that context's Watch delivers
// it, p50 and p99. Burst writes once to each of the 1,000 from another
// process (8 writers) until every context has applied its own (ns/op is
// for the burst).
func BenchmarkManyContexts(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	modes := []struct {
		name       string
		perContext bool
	}{{"connection-per-context", true}, {"shared-connection", false}}
	for _, mode := range modes {
		b.Run("Initialize/"+mode.name, func(b *testing.B) {
			var heap, goroutines, conns float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				g := runtime.NumGoroutine()
				be, closeBackend := manyBackend(b, srv, mode.perContext)
				b.StartTimer()
				cs := openMany(b, be)
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / 1e6
				goroutines += float64(runtime.NumGoroutine() - g)
				n, err := pubsubConns(ctx, srv, clientName(b))
				if err != nil {
					b.Fatal(err)
				}
				conns += float64(n)
				closeMany(cs)
				closeBackend()
				b.StartTimer()
			}
			b.ReportMetric(heap/float64(b.N), "heap-MB")
			b.ReportMetric(goroutines/float64(b.N), "goroutines")
			b.ReportMetric(conns/float64(b.N), "pubsub-conns")
		})
	}
	for _, mode := range modes {
		b.Run("Propagation/"+mode.name, func(b *testing.B) {
			be, closeBackend := manyBackend(b, srv, mode.perContext)
			defer closeBackend()
			cs := openMany(b, be)
			defer closeMany(cs)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			watches := make([]<-chan contextd.Change[int], len(cs))
			for i, c := range cs {
				watches[i] = c.Watch(wctx)
			}
			writer := newBackend(b, srv, nil)
			var samples []time.Duration
			for i := 0; b.Loop(); i++ {
				k := i % len(cs)
				start := time.Now()
				if err := commitValue(ctx, writer, manyName(k), "k", i); err != nil {
					b.Fatal(err)
				}
				for c := range watches[k] {
					if c.Value == i {
						break
					}
				}
				samples = append(samples, time.Since(start))
			}
			reportLatencies(b, samples)
		})
	}
	for _, mode := range modes {
		b.Run("Burst/"+mode.name, func(b *testing.B) {
			be, closeBackend := manyBackend(b, srv, mode.perContext)
			defer closeBackend()
			cs := openMany(b, be)
			defer closeMany(cs)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			watches := make([]<-chan contextd.Change[int], len(cs))
			for i, c := range cs {
				watches[i] = c.Watch(wctx)
			}
			writer := newBackend(b, srv, nil)
			for i := 0; b.Loop(); i++ {
				if err := parallel(len(cs), func(k int) error { return commitValue(ctx, writer, manyName(k), "k", i) }); err != nil {
					b.Fatal(err)
				}
				for _, w := range watches {
					for c := range w {
						if c.Value == i {
							break
						}
					}
				}
			}
		})
	}
}
