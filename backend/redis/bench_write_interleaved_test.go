package redis_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
)

// BenchmarkWriteInterleaved is goal 1's check on a noisy machine: the
// write of a free key against a raw HSET of the same value, with the two
// and the floors between them run in alternating blocks of 500 writes
// (raw, floor, commit, UpdateContext, then the reverse order), so that a
// change of the machine's load falls on all alike — BenchmarkWrite runs
// them one after another, minutes apart. Each workload reports its p50
// and its p50's ratio to raw HSET's:
//
//   - raw-HSET: the one-round-trip floor the goal names.
//   - floor: a script that only stores the value and publishes it, one
//     raw subscriber receiving every message (what any design that keeps
//     copies in step by push with one command per write must do).
//   - commit: the backend's CommitAndPublish alone (lock check,
//     revision, change log, event, publish; no Context).
//   - UpdateContext: the whole write, the instance receiving its own
//     event.
//
// ns/op is UpdateContext's mean.
//
//	go test -run '^$' -bench WriteInterleaved -benchtime 20000x -count 3 ./backend/redis
func BenchmarkWriteInterleaved(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const block = 500

	rawC := rawClient(b, srv)
	floorC := rawClient(b, srv)
	received := rawReceivers(b, srv, "bench:il:floor:events", 1)
	floorScript := goredis.NewScript("redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('PUBLISH', KEYS[2], ARGV[2]) return 1")
	floorKeys := []string{"bench:il:floor", "bench:il:floor:events"}
	be := benchBackend(b, srv)
	channel := backend.DefaultChannel("bench-il-commit")
	cx := benchInstance[benchValue](b, srv, "bench-il-write")
	value := func(i int) string { return fmt.Sprintf(`{"n":%d,"name":"x"}`, i) }

	type workload struct {
		name    string
		op      func(i int) error
		settle  func()
		timed   bool
		samples []time.Duration
	}
	raw := &workload{name: "raw-HSET", op: func(i int) error {
		return rawC.HSet(ctx, "bench:il:raw", "k", value(i)).Err()
	}}
	floor := &workload{name: "floor", op: func(i int) error {
		if err := floorScript.Run(ctx, floorC, floorKeys, "k", value(i)).Err(); err != nil {
			return err
		}
		received.sent.Add(1)
		return nil
	}, settle: func() { received.wait(b) }}
	commit := &workload{name: "commit", op: func(i int) error {
		bt := backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte(value(i))}}, Codec: "json", EventValueLimit: 1 << 16}
		_, err := be.CommitAndPublish(ctx, "bench-il-commit", bt, channel)
		return err
	}}
	update := &workload{name: "UpdateContext", timed: true, op: func(i int) error {
		return cx.UpdateContext(ctx, "k", benchValue{N: i, Name: "x"})
	}}
	run := func(w *workload, n int) {
		if w.timed {
			b.StartTimer()
			defer b.StopTimer()
		}
		for i := range n {
			start := time.Now()
			if err := w.op(i); err != nil {
				b.Fatal(err)
			}
			w.samples = append(w.samples, time.Since(start))
		}
		if w.settle != nil {
			w.settle()
		}
	}
	order := []*workload{raw, floor, commit, update}
	for _, w := range order { // connections dialled, scripts loaded
		run(w, 10)
		w.samples = w.samples[:0]
	}
	b.ResetTimer()
	b.StopTimer()
	for done := 0; done < b.N; done += block {
		for _, w := range order {
			run(w, min(block, b.N-done))
		}
		slices.Reverse(order)
	}
	p50 := func(w *workload) time.Duration {
		s := slices.Clone(w.samples)
		slices.Sort(s)
		return s[len(s)/2]
	}
	base := p50(raw)
	for _, w := range []*workload{raw, floor, commit, update} {
		b.ReportMetric(float64(p50(w).Nanoseconds())/1e3, w.name+"-p50-µs")
		if w != raw {
			b.ReportMetric(float64(p50(w))/float64(base), w.name+"-ratio")
		}
	}
}
