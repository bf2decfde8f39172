package contextd_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// Benchmarks on the memory backend. Each target comes with a baseline
// measured in the same run, so results read as ratios on a noisy machine:
//
//	go test -run '^$' -bench . -benchmem ./contextd
//
// Baselines: a map read under a sync.RWMutex for Get, and the backend's raw
// Commit for writes.

type point struct{ X, Y int }

func BenchmarkBaselineMapGet(b *testing.B) {
	var mu sync.RWMutex
	m := map[string]point{"p": {1, 2}}
	var sink point
	for b.Loop() {
		mu.RLock()
		sink = m["p"]
		mu.RUnlock()
	}
	_ = sink
}

func BenchmarkGet(b *testing.B) {
	c := open[point](b, newMemory(b, nil), "bench", nil)
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "p", point{1, 2}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var sink point
	for b.Loop() {
		sink, _, _ = c.Get(ctx, "p")
	}
	_ = sink
}

func BenchmarkGetParallel(b *testing.B) {
	c := open[point](b, newMemory(b, nil), "bench", nil)
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "p", point{1, 2}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _, _ = c.Get(ctx, "p")
		}
	})
}

func BenchmarkGetContext1k(b *testing.B) {
	c := open[point](b, newMemory(b, nil), "bench", nil)
	ctx := context.Background()
	values := make(map[string]point, 1000)
	for i := range 1000 {
		values[fmt.Sprintf("key-%04d", i)] = point{i, i}
	}
	if err := c.TransactionalUpdate(ctx, values); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if m, err := c.GetContext(ctx); err != nil || len(m) != 1000 {
			b.Fatal(len(m), err)
		}
	}
}

func BenchmarkBaselineStoreCommit(b *testing.B) {
	m := newMemory(b, nil)
	ctx := context.Background()
	batch := backend.Batch{Ops: []backend.Op{{Key: "p", Value: []byte(`{"X":1,"Y":2}`)}}, Codec: "json"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Commit(ctx, "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdateContext(b *testing.B) {
	c := open[point](b, newMemory(b, nil), "bench", nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.UpdateContext(ctx, "p", point{1, 2}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkModify(b *testing.B) {
	c := open[int](b, newMemory(b, nil), "bench", nil)
	ctx := context.Background()
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Modify(ctx, "n", inc); err != nil {
			b.Fatal(err)
		}
	}
}
