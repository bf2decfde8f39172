package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// fillContext writes n keys of benchValue (about 40 bytes of JSON each)
// into context name, in transactions of 1000.
func fillContext(b *testing.B, srv *redistest.Server, name string, n int) {
	b.Helper()
	cx := benchInstance[benchValue](b, srv, name)
	ctx := context.Background()
	for i := 0; i < n; i += 1000 {
		batch := make(map[string]benchValue, 1000)
		for j := i; j < min(i+1000, n); j++ {
			batch[fmt.Sprintf("key-%07d", j)] = benchValue{N: j, Name: "name-of-the-value"}
		}
		if err := cx.TransactionalUpdate(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// openBackend returns a Backend made by redis.Open (the client
// configuration the library chooses) on srv.
func openBackend(b *testing.B, srv *redistest.Server) *redis.Backend {
	b.Helper()
	host, port, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	o := redis.Options{Host: host, Password: srv.Password()}
	if o.Port, err = strconv.Atoi(port); err != nil {
		b.Fatal(err)
	}
	be, err := redis.Open(&o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return be
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkInitialize compares loading a context of 1k, 10k and 100k keys with
// what a user would write instead: HGETALL of the data hash and decoding
// every value with the same codec (JSON) into a map. It reports the live
// heap each keeps per key (B/key) and the raw value bytes per key. The
// 1k-key run is there to separate what a Context costs once (connections,
// buffers) from what each key costs: B/key = fixed/n + per key.
func BenchmarkInitialize(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	for _, n := range []int{1_000, 10_000, 100_000} {
		name := fmt.Sprintf("bench-init-%d", n)
		fillContext(b, srv, name, n)
		raw := rawClient(b, srv)
		valueBytes := 0
		b.Run(fmt.Sprintf("keys=%d/raw-HGETALL+decode", n), func(b *testing.B) {
			var keep map[string]benchValue
			before := heapInUse()
			for b.Loop() {
				keep = nil
				all, err := raw.HGetAll(ctx, "{contextd:"+name+"}:data").Result()
				if err != nil {
					b.Fatal(err)
				}
				keep = make(map[string]benchValue, len(all))
				valueBytes = 0
				for k, v := range all {
					var bv benchValue
					if err := json.Unmarshal([]byte(v), &bv); err != nil {
						b.Fatal(err)
					}
					keep[k] = bv
					valueBytes += len(v)
				}
			}
			b.ReportMetric(float64(heapInUse()-before)/float64(n), "B/key")
			b.ReportMetric(float64(valueBytes)/float64(n), "value-B/key")
			runtime.KeepAlive(keep)
		})
		initialize := func(b *testing.B, be *redis.Backend) {
			var keep *contextd.Context[benchValue]
			before := heapInUse()
			for b.Loop() {
				if keep != nil {
					_ = keep.Close()
				}
				cx, err := contextd.New[benchValue](be, name, &contextd.Options{ResyncInterval: -1})
				if err != nil {
					b.Fatal(err)
				}
				if err := cx.Initialize(ctx); err != nil {
					b.Fatal(err)
				}
				keep = cx
			}
			b.ReportMetric(float64(heapInUse()-before)/float64(n), "B/key")
			if got, _ := keep.GetContext(ctx); len(got) != n {
				b.Fatalf("initialized %d keys, want %d", len(got), n)
			}
			_ = keep.Close()
		}
		// On a client the user made with go-redis's defaults (redis.New),
		// and on the client redis.Open makes: B/key counts the
		// connections each opens for the load and the subscription.
		b.Run(fmt.Sprintf("keys=%d/Initialize", n), func(b *testing.B) {
			initialize(b, newBackend(b, srv, nil))
		})
		b.Run(fmt.Sprintf("keys=%d/Initialize-Open", n), func(b *testing.B) {
			initialize(b, openBackend(b, srv))
		})
		b.Run(fmt.Sprintf("keys=%d/Sync", n), func(b *testing.B) {
			cx := benchInstance[benchValue](b, srv, name)
			for b.Loop() {
				if err := cx.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGetWhileCopying measures Get on a 100k-key context while another
// goroutine loops over GetContext and a third writes: reads must not wait
// for the copy. The baseline ("idle") is Get on the same context with
// nothing else running in the process, in the same run. Both report p50
// and p99 of Get; the keys are made before the clock starts.
func BenchmarkGetWhileCopying(b *testing.B) {
	srv := benchServer(b)
	const n, name = 100_000, "bench-get-copy"
	fillContext(b, srv, name, n)
	cx := benchInstance[benchValue](b, srv, name)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%07d", i)
	}
	get := func(b *testing.B) {
		ctx := context.Background()
		lat := make([]time.Duration, 0, 1<<20)
		i := 0
		for b.Loop() {
			k := keys[i%n]
			start := time.Now()
			_, ok, err := cx.Get(ctx, k)
			lat = append(lat, time.Since(start))
			if !ok || err != nil {
				b.Fatalf("Get(%s) = %v, %v", k, ok, err)
			}
			i++
		}
		reportPercentiles(b, lat)
	}
	b.Run("idle", get)
	b.Run("copying+writing", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{}, 2)
		// How many copies and writes overlapped the reads: the reads
		// only prove something if these went on.
		var copies, writes atomic.Int64
		go func() {
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				if _, err := cx.GetContext(ctx); err == nil {
					copies.Add(1)
				}
			}
		}()
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ctx.Err() == nil; i++ {
				if cx.UpdateContext(ctx, keys[i%n], benchValue{N: i}) == nil {
					writes.Add(1)
				}
			}
		}()
		get(b)
		cancel()
		<-done
		<-done
		b.ReportMetric(float64(copies.Load()), "copies")
		b.ReportMetric(float64(writes.Load()), "writes")
	})
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sorted := append([]time.Duration(nil), lat...)
	slicesSort(sorted)
	b.ReportMetric(float64(sorted[len(sorted)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(sorted[len(sorted)*99/100].Nanoseconds()), "p99-ns")
}

func slicesSort(d []time.Duration) { slices.Sort(d) }
