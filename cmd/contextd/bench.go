package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

func init() {
	register(&command{
		name:    "bench",
		args:    "[--writers N] [--readers N] [--duration D] [--contention] ...",
		summary: "measure write, read and propagation latency; prints percentiles",
		run:     runBench,
	})
}

// benchValue is what bench writes: the send time, for propagation.
type benchValue struct {
	T   int64  `json:"t"`           // UnixNano when the write began
	N   int64  `json:"n,omitempty"` // the counter, with --contention
	Pad string `json:"pad,omitempty"`
}

// samples collects latencies of one kind from many goroutines.
type samples struct {
	mu    sync.Mutex
	d     []time.Duration
	count atomic.Int64
}

func (s *samples) add(d time.Duration) {
	s.count.Add(1)
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func runBench(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	writers := fs.Int("writers", 4, "writing instances (each a Context with its own connection)")
	readers := fs.Int("readers", 2, "reading instances: each watches (propagation) and reads the store (Get with Fresh)")
	keys := fs.Int("keys", 100, "keys the writers spread over")
	size := fs.Int("size", 64, "bytes of padding in each value")
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	contention := fs.Bool("contention", false, "every writer increments one counter with Modify (read-modify-write), which must lose no update")
	keep := fs.Bool("keep", false, "keep the keys written (default: delete them at the end)")
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 0); err != nil {
		return err
	}
	if *writers < 1 || *readers < 0 || *keys < 1 || *size < 0 || *duration <= 0 {
		return usageErr(errors.New("need --writers >= 1, --readers >= 0, --keys >= 1, --size >= 0, --duration > 0"))
	}
	name := g.context
	if name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		name = "bench-" + hex.EncodeToString(b[:])
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()

	// Every instance opens its own backend, as separate processes would.
	open := func() (*session, error) { return g.openContext(ctx, name) }
	var sessions []*session
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	for range *writers + *readers {
		s, err := open()
		if err != nil {
			return err
		}
		sessions = append(sessions, s)
	}
	ws, rs := sessions[:*writers], sessions[*writers:]
	mode := fmt.Sprintf("%d writers over %d keys", *writers, *keys)
	if *contention {
		mode = fmt.Sprintf("%d writers incrementing one counter (Modify)", *writers)
	}
	fmt.Fprintf(g.stderr, "bench: context %q on %s: %s, %d readers, %d-byte padding, for %v\n", name, redact(g.url), mode, *readers, *size, *duration)

	var writes, reads, props samples
	var errCount atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		errCount.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	pad := strings.Repeat("x", *size)
	const counter = "bench/counter"
	run, cancelRun := context.WithTimeout(ctx, *duration)
	defer cancelRun()
	var wg sync.WaitGroup
	// Readers: watch for propagation, and read the store.
	for _, s := range rs {
		ch := s.cx.Watch(run, contextd.KeyPrefix("bench/"))
		wg.Go(func() {
			for c := range ch {
				if c.Reset || c.UpToDate || c.Deleted || c.Err != nil {
					continue
				}
				var v benchValue
				if json.Unmarshal(c.Value, &v) == nil && v.T > 0 {
					props.add(time.Since(time.Unix(0, v.T)))
				}
			}
		})
		wg.Go(func() {
			for i := 0; run.Err() == nil; i++ {
				key := fmt.Sprintf("bench/%d", i%*keys)
				if *contention {
					key = counter
				}
				start := time.Now()
				if _, _, err := s.cx.Get(run, key, contextd.Fresh()); err != nil {
					fail(err)
					continue
				}
				reads.add(time.Since(start))
			}
		})
	}
	var increments, unknown atomic.Int64
	for w, s := range ws {
		wg.Go(func() {
			for i := w; run.Err() == nil; i += *writers {
				start := time.Now()
				var err error
				if *contention {
					_, err = s.cx.Modify(run, counter, func(cur value, ok bool) (value, error) {
						var v benchValue
						if ok {
							if err := json.Unmarshal(cur, &v); err != nil {
								return nil, err
							}
						}
						return json.Marshal(benchValue{T: time.Now().UnixNano(), N: v.N + 1, Pad: pad})
					})
					if err == nil {
						increments.Add(1)
					} else {
						// Cut off (at the end, say): it may or may not
						// have been applied.
						unknown.Add(1)
					}
				} else {
					b, _ := json.Marshal(benchValue{T: start.UnixNano(), Pad: pad})
					err = s.cx.UpdateContext(run, fmt.Sprintf("bench/%d", i%*keys), b)
				}
				if err != nil {
					fail(err)
					continue
				}
				writes.add(time.Since(start))
			}
		})
	}
	// A progress line every second, rewritten in place.
	began := time.Now()
	tick := time.NewTicker(time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
progress:
	for {
		select {
		case <-tick.C:
			el := time.Since(began).Seconds()
			fmt.Fprintf(g.stderr, "\r[%4.0fs] writes %d (%.0f/s)  reads %d (%.0f/s)  changes seen %d  errors %d   ",
				el, writes.count.Load(), float64(writes.count.Load())/el, reads.count.Load(), float64(reads.count.Load())/el,
				props.count.Load(), errCount.Load())
		case <-done:
			break progress
		}
	}
	tick.Stop()
	elapsed := time.Since(began)
	fmt.Fprintln(g.stderr)

	var lost error
	if *contention {
		// Every increment that returned must be in the counter.
		vctx, cancel := g.opCtx(context.WithoutCancel(ctx))
		v, ok, err := ws[0].cx.Get(vctx, counter, contextd.Fresh())
		cancel()
		var bv benchValue
		if err == nil && ok {
			err = json.Unmarshal(v, &bv)
		}
		switch {
		case err != nil:
			lost = err
		case bv.N < increments.Load():
			lost = fmt.Errorf("counter is %d after %d acknowledged increments: updates were lost", bv.N, increments.Load())
		case bv.N > increments.Load()+unknown.Load():
			lost = fmt.Errorf("counter is %d after %d acknowledged increments and %d cut off: an increment was applied twice", bv.N, increments.Load(), unknown.Load())
		default:
			fmt.Fprintf(g.stdout, "counter: %d after %d acknowledged increments (and %d that returned an error, applied or not): none lost\n", bv.N, increments.Load(), unknown.Load())
		}
	}
	if !*keep {
		cctx, cancel := g.opCtx(context.WithoutCancel(ctx))
		txn := ws[0].cx.Txn()
		n := 0
		for k := range ws[0].cx.Prefix("bench/") {
			txn.Delete(k)
			n++
		}
		if n > 0 {
			if _, err := txn.Commit(cctx); err != nil {
				fmt.Fprintf(g.stderr, "bench: deleting the bench keys: %v\n", err)
			}
		}
		cancel()
	}
	if err := g.benchTable(elapsed, []benchRow{{"write", &writes}, {"read (fresh)", &reads}, {"propagation", &props}}); err != nil {
		return err
	}
	if n := errCount.Load(); n > 0 {
		fmt.Fprintf(g.stderr, "bench: %d errors, the first: %v\n", n, firstErr.Load())
	}
	return lost
}

type benchRow struct {
	name string
	s    *samples
}

// benchTable prints count, rate and percentiles per kind of operation.
func (g *globals) benchTable(elapsed time.Duration, rows []benchRow) error {
	type line struct {
		Op    string  `json:"op"`
		Count int     `json:"count"`
		Rate  float64 `json:"per_second"`
		P50   float64 `json:"p50_us"`
		P90   float64 `json:"p90_us"`
		P99   float64 `json:"p99_us"`
		P999  float64 `json:"p999_us"`
		Max   float64 `json:"max_us"`
	}
	var lines []line
	for _, r := range rows {
		d := r.s.d
		slices.Sort(d)
		at := func(q float64) float64 {
			if len(d) == 0 {
				return 0
			}
			return float64(d[min(len(d)-1, int(q*float64(len(d))))].Nanoseconds()) / 1000
		}
		lines = append(lines, line{r.name, len(d), float64(len(d)) / elapsed.Seconds(), at(.5), at(.9), at(.99), at(.999), at(1)})
	}
	if g.json {
		for _, l := range lines {
			if err := g.printJSON(l); err != nil {
				return err
			}
		}
		return nil
	}
	us := func(v float64) string {
		return time.Duration(v * float64(time.Microsecond)).Round(time.Microsecond).String()
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\tper second\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", l.Op, l.Count, l.Rate, us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max))
	}
	return tw.Flush()
}
