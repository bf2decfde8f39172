package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/contextd"
)

// runTimed is runSpread that also records each operation's latency and
// reports ops/s, p99 and the longest single operation (the longest wait a
// contender saw).
func runTimed(b *testing.B, n int, op func(i int) error) {
	b.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	runSpread(b, n, func(i int) error {
		t0 := time.Now()
		err := op(i)
		d := time.Since(t0)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return err
	})
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}

// BenchmarkContention has 8 instances (clients) increment one counter, as
// a user would with raw go-redis (a WATCH/MULTI/EXEC retry loop), with a
// redsync-style lock around HGET/HSET (SET NX PX, retry after a random
// pause, then a checked DEL), and with Modify. It reports throughput and
// the longest single increment, which fair queues bound. The "-x4" and
// "-x16" variants run 4 and 16 goroutines per instance (32 and 128 in
// all; the raw loops share their instance's client among them), where
// Modify combines the concurrent calls of an instance into one commit.
func BenchmarkContention(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const instances = 8
	for _, perInstance := range []int{1, 4, 16} {
		suffix := ""
		if perInstance > 1 {
			suffix = fmt.Sprintf("-x%d", perInstance)
		}
		workers := instances * perInstance
		b.Run("raw-WATCH-MULTI"+suffix, func(b *testing.B) {
			clients := make([]*goredis.Client, instances)
			for i := range clients {
				clients[i] = rawClient(b, srv)
			}
			runTimed(b, workers, func(i int) error {
				c := clients[i%instances]
				for {
					err := c.Watch(ctx, func(tx *goredis.Tx) error {
						n, err := tx.HGet(ctx, "bench:watch", "n").Int()
						if err != nil && err != goredis.Nil {
							return err
						}
						_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
							p.HSet(ctx, "bench:watch", "n", n+1)
							return nil
						})
						return err
					}, "bench:watch")
					if err != goredis.TxFailedErr {
						return err
					}
				}
			})
		})
		b.Run("raw-lock-HGET-HSET-unlock"+suffix, func(b *testing.B) {
			clients := make([]*goredis.Client, instances)
			for i := range clients {
				clients[i] = rawClient(b, srv)
			}
			unlock := goredis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
			runTimed(b, workers, func(i int) error {
				c := clients[i%instances]
				token := randomToken()
				for {
					ok, err := c.SetNX(ctx, "bench:lock", token, 10*time.Second).Result()
					if err != nil {
						return err
					}
					if ok {
						break
					}
					// redsync retries after a random pause (default 50-250 ms;
					// a tighter 1-5 ms here, to give the baseline its best).
					time.Sleep(time.Millisecond + time.Duration(rand.IntN(4000))*time.Microsecond)
				}
				n, err := c.HGet(ctx, "bench:locked", "n").Int()
				if err != nil && err != goredis.Nil {
					return err
				}
				if err := c.HSet(ctx, "bench:locked", "n", n+1).Err(); err != nil {
					return err
				}
				return unlock.Run(ctx, c, []string{"bench:lock"}, token).Err()
			})
		})
		b.Run("Modify"+suffix, func(b *testing.B) {
			// The revision of instance 0's latest write: the commits of
			// the run are the revisions between its writes before and
			// after it.
			var lastRev atomic.Uint64
			trace := &contextd.Trace{WriteStart: func(ctx context.Context, _ int) (context.Context, func(uint64, error)) {
				return ctx, func(rev uint64, _ error) { lastRev.Store(rev) }
			}}
			cs := make([]*contextd.Context[int], instances)
			for i := range cs {
				var opts *contextd.Options
				if i == 0 {
					opts = &contextd.Options{Trace: trace}
				}
				cs[i] = benchInstanceOn[int](b, benchBackend(b, srv), "bench-contention"+suffix, opts)
			}
			inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
			same := func(cur int, _ bool) (int, error) { return cur, nil }
			before, err := cs[0].Modify(ctx, "counter", same)
			if err != nil {
				b.Fatal(err)
			}
			revBefore := lastRev.Load()
			cmds := commandCounts(b, srv)
			runTimed(b, workers, func(i int) error {
				_, err := cs[i%instances].Modify(ctx, "counter", inc)
				return err
			})
			b.StopTimer()
			// What the server ran per increment: the scripts (commits and
			// refusals) and the subscription traffic of the waits.
			after := commandCounts(b, srv)
			perOp := func(names ...string) float64 {
				n := 0
				for _, name := range names {
					n += after[name] - cmds[name]
				}
				return float64(n) / float64(b.N)
			}
			b.ReportMetric(perOp("evalsha"), "evalsha/op")
			b.ReportMetric(perOp("subscribe", "unsubscribe"), "sub+unsub/op")
			// No increment lost: the last one's result is what every instance
			// counted in all.
			last, err := cs[0].Modify(ctx, "counter", same)
			if err != nil || last-before != b.N {
				b.Fatalf("counter went from %d to %d (%v) in %d increments", before, last, err, b.N)
			}
			b.ReportMetric(float64(lastRev.Load()-revBefore-1)/float64(b.N), "commits/op")
		})
	}
}

func randomToken() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 16)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}
