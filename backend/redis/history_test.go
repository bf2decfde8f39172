package redis_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/checker"
	"github.com/contextd-go/contextd/internal/historytest"
	"github.com/contextd-go/contextd/internal/redistest"
)

// History tests: randomised scenarios of several Context instances, each on
// a go-redis client of its own as separate processes would have, with
// several goroutines each writing and reading a small key set while a fault
// is injected. Every call is recorded (internal/checker) and the history is
// checked at the end against the store's own log: linearizability
// (porcupine), no lost or phantom writes, read-your-writes and monotonic
// reads per instance, atomic transactions, lock fencing, and convergence of
// every instance to what a fresh instance reads.
//
// A scenario is drawn from a seed, printed at the start and on failure.
// CONTEXTD_SEED=<n> or -contextd.seed=<n> replays one: the same instance
// count, key set, operation mix and fault timing (the interleaving of
// goroutines is up to the scheduler); -contextd.length=<duration> sets how
// long the workload runs (2.5 s by default). -contextd.soak=<duration>
// runs the soak loop of soak_test.go.

var (
	seedFlag   = flag.Uint64("contextd.seed", 0, "seed of the randomised history scenarios (default: CONTEXTD_SEED, else the clock)")
	soakFlag   = flag.Duration("contextd.soak", 0, "run TestHistorySoak for this long, scenarios looped with new seeds")
	lengthFlag = flag.Duration("contextd.length", 0, "how long each history scenario's workload runs (default 2.5s), e.g. to replay a soak run's")
)

// historyLength returns how long a scenario's workload runs in the normal
// test run: 2.5 s unless -contextd.length says otherwise.
func historyLength() time.Duration {
	if *lengthFlag > 0 {
		return *lengthFlag
	}
	return 2500 * time.Millisecond
}

// seedFor returns the scenario seed: the flag's, CONTEXTD_SEED's, or a new
// one. It logs it, and again with a replay command if the test fails.
func seedFor(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if s := os.Getenv("CONTEXTD_SEED"); seed == 0 && s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CONTEXTD_SEED=%q: %v", s, err)
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with: CONTEXTD_SEED=%d go test -race -run '%s' ./backend/redis", seed, runPattern(t.Name()))
		}
	})
	return seed
}

// runPattern returns a -run pattern that matches the test named name and
// no other.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// historyClient returns the options every history test's go-redis client
// gets: no retries (a commit whose reply is lost must not run again) and
// ctx deadlines that bound network reads, as redis.New's doc asks.
func historyClient(addr, name string) *goredis.Options {
	return &goredis.Options{Addr: addr, ClientName: name, MaxRetries: -1, ContextTimeoutEnabled: true}
}

// process is one simulated process: a go-redis client of its own, named so
// that faults can target it, and a Backend on it.
type process struct {
	name   string
	client goredis.UniversalClient
	b      *redis.Backend
}

// newProcess wraps client in a Backend; both are closed when the test
// ends, after the Contexts on them (whose cleanups are registered later).
func newProcess(t *testing.T, name string, client goredis.UniversalClient, ropts redis.Options) *process {
	t.Helper()
	b, err := redis.New(client, &ropts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		_ = client.Close()
	})
	return &process{name: name, client: client, b: b}
}

// historyRedisOptions are the Backend options of the scenarios: a change
// log long enough to hold the whole history, which the check reads back.
func historyRedisOptions(o redis.Options) redis.Options {
	o.ChangeLogLength = 1 << 20
	return o
}

// workload says what the goroutines of a scenario do.
type workload struct {
	// workers per instance.
	workers int
	// keys written by UpdateContext, TransactionalUpdate and Delete.
	keys []string
	// locks runs a lock holder per instance on lockKey.
	locks bool
	// opts are the Contexts' options.
	opts contextd.Options
	// failClosed gives every other instance Options.FailClosed.
	failClosed bool
}

const (
	histCounter = "n" // incremented with Modify only
	lockKey     = "L"
)

// drawWorkload draws a workload from rng.
func drawWorkload(rng *rand.Rand, locks bool) workload {
	w := workload{
		workers: 2 + rng.IntN(2),
		locks:   locks,
		opts: contextd.Options{
			ResyncInterval: time.Second,
			RetryDelay:     2 * time.Millisecond,
			MaxRetries:     40,
		},
	}
	for i := range 3 + rng.IntN(3) {
		w.keys = append(w.keys, string(rune('a'+i)))
	}
	if locks {
		w.keys = append(w.keys, lockKey)
	}
	return w
}

// history runs one context's workload on several instances and checks it.
type history struct {
	t    *testing.T
	name string
	seed uint64
	w    workload
	rec  *checker.Recorder
	cs   []*contextd.Context[checker.Value]
	ps   []*process

	// strongOff stops recording strong reads (during a failover, when a
	// client may still read the old master).
	strongOff atomic.Bool
	// maxFence is the highest fencing token any holder got so far.
	maxFence atomic.Uint64
	// staleWrites counts writes tried with an expired lock.
	staleWrites atomic.Int64
	// staleReads counts reads refused with ErrStale (FailClosed).
	staleReads atomic.Int64
	// debug collects the instances' debug logs when histories are dumped
	// (CONTEXTD_HISTORY_DIR), nil otherwise.
	debug *debugLog

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// newHistory opens an instance of context name on each process.
func newHistory(t *testing.T, name string, seed uint64, w workload, ps []*process) *history {
	t.Helper()
	h := &history{t: t, name: name, seed: seed, w: w, rec: checker.NewRecorder(), ps: ps, stop: make(chan struct{})}
	if os.Getenv("CONTEXTD_HISTORY_DIR") != "" {
		h.debug = &debugLog{rec: h.rec}
	}
	for i, p := range ps {
		opts := w.opts
		opts.FailClosed = w.failClosed && i%2 == 1
		if h.debug != nil {
			opts.Logger = slog.New(&debugHandler{log: h.debug, instance: i})
		}
		h.cs = append(h.cs, openInstance[checker.Value](t, p.b, name, &opts))
	}
	return h
}

// debugLog collects the instances' debug log lines on the recorder's
// clock, so a dumped history shows what each copy did between the
// operations (snapshots loaded, replacements, gaps).
type debugLog struct {
	rec   *checker.Recorder
	mu    sync.Mutex
	lines []debugLine
}

type debugLine struct {
	at   int64
	text string
}

// debugHandler is a slog.Handler writing one instance's records to a
// debugLog.
type debugHandler struct {
	log      *debugLog
	instance int
	attrs    []slog.Attr
}

func (d *debugHandler) Enabled(context.Context, slog.Level) bool { return true }

func (d *debugHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "instance %d %s: %s", d.instance, r.Level, r.Message)
	for _, a := range d.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	at := d.log.rec.Now()
	d.log.mu.Lock()
	d.log.lines = append(d.log.lines, debugLine{at: at, text: b.String()})
	d.log.mu.Unlock()
	return nil
}

func (d *debugHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &debugHandler{log: d.log, instance: d.instance, attrs: append(slices.Clone(d.attrs), attrs...)}
}

func (d *debugHandler) WithGroup(string) slog.Handler { return d }

// start starts the workers (and lock holders).
func (h *history) start() {
	for i := range h.cs {
		for j := range h.w.workers {
			id := i*16 + j + 1
			rng := rand.New(rand.NewPCG(h.seed, uint64(id)))
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.work(i, id, rng)
			}()
		}
		{
			rng := rand.New(rand.NewPCG(h.seed, uint64(i*16+14)))
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				historytest.Watch(h.rec, h.cs[i], i, rng, h.stop)
			}()
		}
		if h.w.locks {
			id := i*16 + 15
			rng := rand.New(rand.NewPCG(h.seed, uint64(id)))
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.holdLocks(i, id, rng)
			}()
		}
	}
}

// halt stops the workers and waits for them.
func (h *history) halt() {
	h.stopOnce.Do(func() { close(h.stop) })
	h.wg.Wait()
}

func (h *history) stopped() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// pace sleeps up to max between operations; it reports false once the
// workload is stopped.
func (h *history) pace(rng *rand.Rand, max time.Duration) bool {
	if max <= 0 {
		return !h.stopped()
	}
	t := time.NewTimer(time.Duration(rng.Int64N(int64(max))))
	defer t.Stop()
	select {
	case <-h.stop:
		return false
	case <-t.C:
		return true
	}
}

// classify classifies an operation's error (historytest.Classify).
func classify(err error) checker.Outcome { return historytest.Classify(err) }

func present(v checker.Value, ok bool) checker.Read { return checker.Read{Value: v, Present: ok} }

// work is one worker goroutine of instance i, writing values w<id>.<seq>
// with the shared history workload (internal/historytest): plain,
// transactional, conditional and expiring writes (expiring ones once the
// backend declares Capabilities().Expiry), increments, reads, entry reads
// and snapshots.
func (h *history) work(i, id int, rng *rand.Rand) {
	w := &historytest.Worker{
		Rec: h.rec, Cx: h.cs[i], Instance: i, ID: id,
		Keys: h.w.keys, Counter: histCounter,
		Plain:     slices.DeleteFunc(slices.Clone(h.w.keys), func(k string) bool { return k == lockKey }),
		Expiry:    h.cs[i].Capabilities().Expiry,
		StrongOff: &h.strongOff, StaleReads: &h.staleReads,
	}
	for h.pace(rng, 2*time.Millisecond) {
		if err := w.Step(rng); err != nil && !h.pace(rng, 5*time.Millisecond) {
			return // the backend may be down: do not spin
		}
	}
}

// holdLocks is instance i's lock holder: it takes the lock on lockKey,
// writes under it (fenced writes, carrying the fencing token), and then
// releases it, or stops renewing it past its TTL (as a process that
// paused would), or has Redis expire it before its own timer runs out (as
// a process whose clock is slow would). Either way, once another holder
// has taken the lock, a write with the old lock must be refused with
// ErrLockLost.
func (h *history) holdLocks(i, id int, rng *rand.Rand) {
	cx, client := h.cs[i], h.ps[i].client
	var seq uint64
	lockRedisKey := "{contextd:" + h.name + "}:lock:" + lockKey
	fenced := func(l *contextd.Lock) (checker.Op, error) {
		seq++
		v := checker.Value{W: id, S: seq, F: l.Token()}
		op := checker.Op{Instance: i, Kind: checker.Write, Puts: map[string]checker.Value{lockKey: v}}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		op.Call = h.rec.Now()
		err := cx.UpdateContext(ctx, lockKey, v, contextd.WithLock(l))
		op.Return, op.Outcome, op.Err = h.rec.Now(), classify(err), err
		h.rec.Add(op)
		return op, err
	}
	for h.pace(rng, 20*time.Millisecond) {
		ttl := time.Duration(100+rng.IntN(200)) * time.Millisecond
		issued := h.maxFence.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: lockKey, LockTimeout: ttl, RetryDelay: 5 * time.Millisecond, MaxRetries: 200})
		cancel()
		if err != nil {
			continue
		}
		if l.Token() <= issued {
			h.rec.Fail("lock safety", "instance %d got fencing token %d, not above %d issued before it asked", i, l.Token(), issued)
		}
		for {
			m := h.maxFence.Load()
			if l.Token() <= m || h.maxFence.CompareAndSwap(m, l.Token()) {
				break
			}
		}
		for range 1 + rng.IntN(3) {
			if _, err := fenced(l); err != nil {
				break
			}
		}
		switch p := rng.IntN(10); {
		case p < 6:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = l.Release(ctx)
			cancel()
			continue
		case p < 8:
			// Stop renewing: the lease runs out, on the holder's clock too.
			select {
			case <-l.Lost():
			case <-time.After(10 * time.Second):
				h.rec.Fail("lock safety", "instance %d: Lost() not closed %v after the lock's TTL %v", i, 10*time.Second, ttl)
			}
		default:
			// The lease runs out in Redis while the holder's timer still
			// runs.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := client.PExpire(ctx, lockRedisKey, time.Millisecond).Err()
			cancel()
			if err != nil {
				_ = l.Release(context.Background())
				continue
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				n, err := client.Exists(ctx, lockRedisKey).Result()
				cancel()
				if err == nil && n == 0 {
					break
				}
				if time.Now().After(deadline) {
					h.rec.Fail("lock safety", "instance %d: the lock key outlived PEXPIRE 1ms by %v (EXISTS = %d, %v)", i, 2*time.Second, n, err)
					break
				}
				time.Sleep(time.Millisecond) // polling a condition, with a deadline
			}
		}
		// Give another holder the chance to take the lock (if none does,
		// the old lock is refused all the same).
		deadline := time.Now().Add(time.Second)
		for h.maxFence.Load() <= l.Token() && time.Now().Before(deadline) && !h.stopped() {
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
		op, err := fenced(l)
		h.staleWrites.Add(1)
		if !errors.Is(err, contextd.ErrLockLost) {
			h.rec.Fail("lock safety", "a write with a lock whose lease ran out returned %v, want ErrLockLost: %s", err, op)
		}
		_ = l.Release(context.Background())
	}
}

// checkHistory waits until every instance converges to what a fresh
// instance on fresh reads, records final strong reads of every key, reads
// the store's log through fresh and checks the history.
func (h *history) checkHistory(fresh *redis.Backend, loss checker.Loss) checker.Report {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if fresh.Capabilities().Expiry {
		// Keys still to expire would move the state on while the
		// instances' convergence is checked.
		if err := historytest.AwaitNoTTL(ctx, fresh, h.name); err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
	}
	want, rev := h.freshState(fresh)
	// Converge: every instance holds exactly what the store holds.
	deadline := time.Now().Add(faultWait)
	for i, c := range h.cs {
		for {
			got, err := c.GetContext(ctx)
			if err == nil && c.Revision() == rev && checker.Diff(want, got) == "" {
				break
			}
			if time.Now().After(deadline) {
				h.rec.Fail("convergence", "instance %d at revision %d (error %v), store at %d; differences: %s (stats %+v)",
					i, c.Revision(), err, rev, checker.Diff(want, got), c.Stats())
				break
			}
			time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	// Final strong reads: a lost write shows here as a stale read.
	for j, k := range append(slices.Clone(h.w.keys), histCounter) {
		c := h.cs[j%len(h.cs)]
		op := checker.Op{Instance: j % len(h.cs), Kind: checker.StrongRead, Key: k, Call: h.rec.Now()}
		v, ok, err := c.Get(ctx, k, contextd.Fresh())
		op.Return, op.Read, op.Outcome, op.Err = h.rec.Now(), present(v, ok), classify(err), err
		if err != nil {
			t.Errorf("final Fresh read of %q: %v", k, err)
		}
		h.rec.Add(op)
	}
	log := readLog(t, fresh, h.name)
	// Short histories are decided in seconds; long soak histories with
	// many lock waits may need minutes (under -race).
	rep := h.rec.Check(checker.Options{CounterKey: histCounter, Log: log, Final: want, Loss: loss, Timeout: 3 * time.Minute, ExpiryRealTime: true})
	h.requireActivity(rep)
	t.Logf("%s: %d instances × %d workers, keys %v, %v: %s", h.name, len(h.cs), h.w.workers, h.w.keys, loss, rep.Summary())
	if !rep.OK() {
		t.Errorf("%s: %v", h.name, rep)
		h.dump(log)
	}
	return rep
}

// dump writes a failed scenario's history and the store's log to
// $CONTEXTD_HISTORY_DIR, one line per operation in call order, for reading
// what led to a violation.
func (h *history) dump(log []checker.Commit) {
	dir := os.Getenv("CONTEXTD_HISTORY_DIR")
	if dir == "" {
		return
	}
	var b strings.Builder
	ops := h.rec.History()
	slices.SortStableFunc(ops, func(a, b checker.Op) int { return cmp.Compare(a.Call, b.Call) })
	var debug []debugLine
	if h.debug != nil {
		h.debug.mu.Lock()
		debug = slices.Clone(h.debug.lines)
		h.debug.mu.Unlock()
	}
	for _, op := range ops {
		for len(debug) > 0 && debug[0].at <= op.Call {
			fmt.Fprintf(&b, "  [%v] %s\n", time.Duration(debug[0].at), debug[0].text)
			debug = debug[1:]
		}
		fmt.Fprintf(&b, "%s err=%v\n", op, op.Err)
	}
	for _, d := range debug {
		fmt.Fprintf(&b, "  [%v] %s\n", time.Duration(d.at), d.text)
	}
	b.WriteString("\nlog:\n")
	for _, c := range log {
		fmt.Fprintf(&b, "%d puts=%v deletes=%v\n", c.Rev, c.Puts, c.Deletes)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.txt", h.name, h.seed))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		h.t.Logf("writing the history: %v", err)
		return
	}
	h.t.Logf("history written to %s", path)
}

// freshState returns what a freshly initialized instance on b reads.
func (h *history) freshState(b *redis.Backend) (map[string]checker.Value, uint64) {
	h.t.Helper()
	c, err := contextd.New[checker.Value](b, h.name, &contextd.Options{ResyncInterval: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		h.t.Fatalf("initializing a fresh instance: %v", err)
	}
	m, err := c.GetContext(ctx)
	if err != nil {
		h.t.Fatalf("GetContext of a fresh instance: %v", err)
	}
	return m, c.Revision()
}

// readLog reads the context's whole change log: the store's history.
func readLog(t *testing.T, b *redis.Backend, name string) []checker.Commit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	log, err := historytest.ReadLog(ctx, b, name)
	if err != nil {
		t.Fatal(err)
	}
	return log
}

// ---------------------------------------------------------------------------
// Single-server scenarios.

// serverFault injects one kind of fault into srv, which h's instances use,
// until the deadline, on the test's goroutine; it returns with the fault
// healed.
type serverFault func(t *testing.T, srv *redistest.Server, h *history, rng *rand.Rand, until time.Time)

// sleepUntil lets time pass (a fault lasting, or the workload running); it
// returns early, reporting false, at the deadline.
func sleepUntil(d time.Duration, until time.Time) bool {
	if rest := time.Until(until); rest < d {
		time.Sleep(max(rest, 0))
		return false
	}
	time.Sleep(d)
	return true
}

func noFault(_ *testing.T, _ *redistest.Server, _ *history, _ *rand.Rand, until time.Time) {
	sleepUntil(time.Until(until), until)
}

// killClients kills the connections of type typ of random instances, every
// 100–400 ms.
func killClients(typ string) serverFault {
	return func(t *testing.T, srv *redistest.Server, h *history, rng *rand.Rand, until time.Time) {
		ps := h.ps
		kills := 0
		for sleepUntil(time.Duration(100+rng.IntN(300))*time.Millisecond, until) {
			for _, j := range rng.Perm(len(ps))[:1+rng.IntN(len(ps))] {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				n, err := srv.KillNamedClients(ctx, typ, ps[j].name)
				cancel()
				if err != nil {
					// Best effort (see killClusterClients).
					t.Logf("CLIENT KILL %s connections of %s: %v", typ, ps[j].name, err)
				}
				kills += n
			}
		}
		if kills == 0 {
			t.Errorf("no %s connection was killed: the fault did not happen", typ)
		}
		t.Logf("%d %s connections killed", kills, typ)
	}
}

// restartServer kills the server (its append-only file fsyncs every
// write) and starts it again, every 0.5–1 s, down for 100–300 ms. With
// FailClosed instances the outage lasts until one of them has refused a
// read with ErrStale (5 s at most; the scenario then fails for want of
// one), so that every outage shows FailClosed at work.
func restartServer(t *testing.T, srv *redistest.Server, h *history, rng *rand.Rand, until time.Time) {
	restarts := 0
	for sleepUntil(time.Duration(500+rng.IntN(500))*time.Millisecond, until) {
		refused := h.staleReads.Load()
		srv.Kill()
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond) // the outage lasting
		for deadline := time.Now().Add(5 * time.Second); h.w.failClosed && h.staleReads.Load() == refused; {
			if time.Now().After(deadline) {
				t.Errorf("restart %d: no read of a FailClosed instance was refused with ErrStale while the server was down for 5 s", restarts+1)
				break
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
		srv.Restart(t)
		restarts++
	}
	t.Logf("%d restarts", restarts)
}

// pauseServer stalls the server with CLIENT PAUSE ALL for 50–300 ms, every
// 200–600 ms; at the end it waits for the last pause to end.
func pauseServer(t *testing.T, srv *redistest.Server, _ *history, rng *rand.Rand, until time.Time) {
	pauses := 0
	for sleepUntil(time.Duration(200+rng.IntN(400))*time.Millisecond, until) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := srv.Pause(ctx, time.Duration(50+rng.IntN(250))*time.Millisecond)
		cancel()
		if err != nil {
			t.Errorf("CLIENT PAUSE: %v", err)
		}
		pauses++
	}
	// A PING is held until the pause ends.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := srv.Do(ctx, "PING"); err != nil {
		t.Errorf("PING after the pauses: %v", err)
	}
	t.Logf("%d pauses", pauses)
}

// serverScenario is a single-server history scenario.
type serverScenario struct {
	name   string
	fault  serverFault
	server *redistest.Options
	locks  bool
	// failClosed gives every other instance Options.FailClosed; with
	// wantStale, some of their reads must be refused with ErrStale.
	failClosed, wantStale bool
}

var serverScenarios = []serverScenario{
	{name: "no-fault", fault: noFault},
	{name: "kill-pubsub", fault: killClients("pubsub"), failClosed: true},
	{name: "kill-normal", fault: killClients("normal")},
	{name: "restart-aof", fault: restartServer, server: &redistest.Options{AppendOnly: true}, failClosed: true, wantStale: true},
	{name: "pause", fault: pauseServer},
	{name: "lock-expiry", fault: noFault, locks: true},
}

// runServerScenario runs sc for length with a seed of its own.
func runServerScenario(t *testing.T, sc serverScenario, seed uint64, length time.Duration) checker.Report {
	rng := rand.New(rand.NewPCG(seed, 0))
	srv := redistest.Start(t, sc.server)
	n := 4 + rng.IntN(5)
	w := drawWorkload(rng, sc.locks)
	w.failClosed = sc.failClosed
	ropts := historyRedisOptions(redis.Options{})
	ps := make([]*process, n)
	for i := range ps {
		name := fmt.Sprintf("%s-i%d", clientName(t), i)
		ps[i] = newProcess(t, name, goredis.NewClient(historyClient(srv.Addr(), name)), ropts)
	}
	h := newHistory(t, "history-"+sc.name, seed, w, ps)
	h.start()
	defer h.halt()
	sc.fault(t, srv, h, rng, time.Now().Add(length))
	h.settle()
	h.halt()
	fresh := newProcess(t, clientName(t)+"-fresh", goredis.NewClient(historyClient(srv.Addr(), clientName(t)+"-fresh")), ropts)
	rep := h.checkHistory(fresh.b, checker.NoLoss)
	if sc.wantStale && h.staleReads.Load() == 0 {
		t.Errorf("no read of a FailClosed instance was refused with ErrStale while the server was down")
	}
	if sc.server != nil && sc.server.AppendOnly {
		awaitRedialers(t)
	}
	return rep
}

// awaitRedialers waits until go-redis's background redialers have ended: a
// pool that saw failed dials starts one that sleeps a second between
// attempts and looks at Close only when it wakes, and goleak, which checks
// after the last test, must not catch one asleep.
func awaitRedialers(t *testing.T) {
	eventually(t, "go-redis's background redialers end", func() error {
		buf := make([]byte, 1<<20)
		if bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("pool.(*ConnPool).tryDial")) {
			return errors.New("a redialer is still running")
		}
		return nil
	})
}

// TestHistory runs the single-server scenarios: no fault; pub/sub
// connections killed; command connections killed; the server killed and
// restarted with an fsync-always append-only file; the server paused
// (CLIENT PAUSE ALL, up to 300 ms); and lock holders whose leases run out
// mid-work. Each must show no violation at all and lose no acknowledged
// write.
func TestHistory(t *testing.T) {
	t.Parallel()
	for _, sc := range serverScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			runServerScenario(t, sc, seedFor(t), historyLength())
		})
	}
}

// settle lets the workload go on after a scenario's faults until it has
// done enough to prove something — historytest.Needs: successes of each
// kind of operation, conditional writes, transactions, entry reads and
// conflicts, and a write with an expired lock where locks are held — or up
// to two minutes. On a loaded machine the scheduled length may pass with
// little done; the checks must not depend on how fast the machine is.
func (h *history) settle() {
	h.t.Helper()
	needs := historytest.Needs()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if (!h.w.locks || h.staleWrites.Load() > 0) && historytest.Enough(h.rec, needs) {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
	}
}

// requireActivity fails a scenario that did too little to prove anything:
// every need of historytest.Needs, and lock holders must have tried writes
// with expired locks.
func (h *history) requireActivity(rep checker.Report) {
	h.t.Helper()
	for _, m := range historytest.Missing(h.rec, historytest.Needs()) {
		h.t.Errorf("%s: %s", h.name, m)
	}
	if h.w.locks && h.staleWrites.Load() == 0 {
		h.t.Errorf("%s: no lock holder wrote with an expired lock", h.name)
	}
	if h.w.failClosed {
		h.t.Logf("%s: %d reads refused with ErrStale by FailClosed instances", h.name, h.staleReads.Load())
	}
}
