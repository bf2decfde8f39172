package memory_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/checker"
	"github.com/contextd-go/contextd/internal/historytest"
)

// History scenarios on the memory backend: several Context instances on one
// Backend, each with a few goroutines running the shared history workload
// (internal/historytest) — plain, transactional, conditional and expiring
// writes, increments, reads, entry reads, snapshots and resumed watches —
// while a fault is injected; the history is then checked against the
// store's change log (internal/checker), as backend/redis's history tests
// do against Redis. CONTEXTD_SEED=<n> replays a scenario's draws.

const memCounter = "n"

// memScenario is one memory history scenario.
type memScenario struct {
	name string
	// fault runs until the deadline.
	fault func(b *memory.Backend, clock *atomic.Int64, rng *rand.Rand, until time.Time)
	// fakeClock gives the store a clock that jumps ahead of real time, so
	// keys expire early by the real clock.
	fakeClock bool
}

var memScenarios = []memScenario{
	{name: "no-fault", fault: func(*memory.Backend, *atomic.Int64, *rand.Rand, time.Time) {}},
	{name: "break-subscriptions", fault: func(b *memory.Backend, _ *atomic.Int64, rng *rand.Rand, until time.Time) {
		for time.Now().Before(until) {
			time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond) // the fault's period
			b.BreakSubscriptions()
		}
	}},
	{name: "clock-jumps", fakeClock: true, fault: func(_ *memory.Backend, clock *atomic.Int64, rng *rand.Rand, until time.Time) {
		for time.Now().Before(until) {
			time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond) // the fault's period
			clock.Add(int64(time.Duration(10+rng.IntN(90)) * time.Millisecond))
		}
	}},
}

// TestHistory runs the memory scenarios: no fault; subscriptions that lose
// their unread events every 50–200 ms (each instance must notice and catch
// up from the change log); and a store clock that jumps ahead of real time,
// expiring keys early. Each must show no violation of any check, with
// conditional writes, transactions, entry reads, watches and expiries all
// exercised.
func TestHistory(t *testing.T) {
	t.Parallel()
	for _, sc := range memScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runMemoryScenario(t, sc, memSeed(t), time.Second)
		})
	}
}

// memSeed returns CONTEXTD_SEED, or a new seed; it logs it.
func memSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CONTEXTD_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CONTEXTD_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with: CONTEXTD_SEED=%d go test -race -run '^TestHistory$/^%s$' ./backend/memory", seed, t.Name()[len("TestHistory/"):])
		}
	})
	return seed
}

func runMemoryScenario(t *testing.T, sc memScenario, seed uint64, length time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 0))
	var ahead atomic.Int64 // how far the store's clock runs ahead, in ns
	b := newBackend(t, &memory.Options{
		ChangeLogSize: 1 << 20,
		Clock:         func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) },
	})
	if !b.Capabilities().Expiry {
		t.Fatal("the memory backend must declare Expiry")
	}
	name := "history-" + sc.name
	var keys []string
	for i := range 3 + rng.IntN(3) {
		keys = append(keys, string(rune('a'+i)))
	}
	workers := 2 + rng.IntN(2)
	opts := &contextd.Options{ResyncInterval: time.Second, RetryDelay: 2 * time.Millisecond, MaxRetries: 40}
	cs := make([]*contextd.Context[checker.Value], 3+rng.IntN(4))
	for i := range cs {
		cs[i] = openMemInstance(t, b, name, opts)
	}
	rec := checker.NewRecorder()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, cx := range cs {
		for j := range workers {
			id := i*16 + j + 1
			w := &historytest.Worker{Rec: rec, Cx: cx, Instance: i, ID: id, Keys: keys, Counter: memCounter, Expiry: cx.Capabilities().Expiry}
			rng := rand.New(rand.NewPCG(seed, uint64(id)))
			wg.Go(func() {
				for pace(rng, stop) {
					_ = w.Step(rng)
				}
			})
		}
		rng := rand.New(rand.NewPCG(seed, uint64(i*16+14)))
		wg.Go(func() { historytest.Watch(rec, cx, i, rng, stop) })
	}
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()

	sc.fault(b, &ahead, rng, time.Now().Add(length))
	// Go on until every kind of operation has proved something, and keys
	// have expired (up to two minutes, on a loaded machine).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	needs := historytest.Needs()
	expiries := func() int {
		log, err := historytest.ReadLog(ctx, b, name)
		if err != nil {
			t.Fatal(err)
		}
		return historytest.Expiries(log)
	}
	for ctx.Err() == nil && !(historytest.Enough(rec, needs) && expiries() >= 3) {
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
	halt()

	if err := historytest.AwaitNoTTL(ctx, b, name); err != nil {
		t.Fatal(err)
	}
	want, rev := freshMemState(t, b, name)
	for i, c := range cs {
		for {
			got, err := c.GetContext(ctx)
			if err == nil && c.Revision() == rev && checker.Diff(want, got) == "" {
				break
			}
			if ctx.Err() != nil {
				rec.Fail("convergence", "instance %d at revision %d (error %v), store at %d; differences: %s", i, c.Revision(), err, rev, checker.Diff(want, got))
				break
			}
			time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	for j, k := range append(slices.Clone(keys), memCounter) {
		c := cs[j%len(cs)]
		op := checker.Op{Instance: j % len(cs), Kind: checker.StrongRead, Key: k, Call: rec.Now()}
		v, ok, err := c.Get(ctx, k, contextd.Fresh())
		op.Return, op.Read, op.Outcome, op.Err = rec.Now(), checker.Read{Value: v, Present: ok}, historytest.Classify(err), err
		if err != nil {
			t.Errorf("final Fresh read of %q: %v", k, err)
		}
		rec.Add(op)
	}
	log, err := historytest.ReadLog(ctx, b, name)
	if err != nil {
		t.Fatal(err)
	}
	rep := rec.Check(checker.Options{CounterKey: memCounter, Log: log, Final: want, Timeout: time.Minute, ExpiryRealTime: !sc.fakeClock})
	for _, m := range historytest.Missing(rec, needs) {
		t.Errorf("%s: %s", name, m)
	}
	n := historytest.Expiries(log)
	if n < 3 {
		t.Errorf("%s: only %d expiries in the log", name, n)
	}
	t.Logf("%s: %d instances × %d workers, keys %v, %d expiries: %s", name, len(cs), workers, keys, n, rep.Summary())
	if !rep.OK() {
		t.Errorf("%s: %v", name, rep)
	}
}

// pace sleeps up to 2 ms between operations; it reports false once stop is
// closed.
func pace(rng *rand.Rand, stop <-chan struct{}) bool {
	t := time.NewTimer(time.Duration(rng.Int64N(int64(2 * time.Millisecond))))
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// openMemInstance opens and initializes an instance of context name on b,
// closed when the test ends.
func openMemInstance(t *testing.T, b *memory.Backend, name string, opts *contextd.Options) *contextd.Context[checker.Value] {
	t.Helper()
	c, err := contextd.New[checker.Value](b, name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// freshMemState returns what a freshly initialized instance reads, and its
// revision.
func freshMemState(t *testing.T, b *memory.Backend, name string) (map[string]checker.Value, uint64) {
	t.Helper()
	c, err := contextd.New[checker.Value](b, name, &contextd.Options{ResyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := c.GetContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m, c.Revision()
}
