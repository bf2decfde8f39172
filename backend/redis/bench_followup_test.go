package redis_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

// appliedAt is when the receiver applied the event of one revision.
type appliedAt struct {
	rev uint64
	at  time.Time
}

// appliedClock stamps every event a Context applies from another instance,
// through Trace.EventApplied: the hook runs on the receiver's read loop
// right after the event is in its copy, so the stamp is the moment of
// applying, with no polling. The buffer outlasts any iteration below, so
// the hook never blocks the read loop.
type appliedClock chan appliedAt

func (c appliedClock) trace() *contextd.Trace {
	return &contextd.Trace{EventApplied: func(rev, _ uint64) { c <- appliedAt{rev, time.Now()} }}
}

// await returns when revision rev was applied, dropping the stamps of
// earlier revisions.
func (c appliedClock) await(b *testing.B, rev uint64) time.Time {
	b.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case a := <-c:
			if a.rev == rev {
				return a.at
			}
			if a.rev > rev {
				b.Fatalf("receiver applied revision %d without %d", a.rev, rev)
			}
		case <-deadline:
			b.Fatalf("receiver did not apply revision %d within a minute", rev)
		}
	}
}

// BenchmarkLargeTransactionFollowUp measures issue 9's goal 3 second half:
// a small write made right after a 20,000-key transaction (of which the
// receiver fetches everything but the event's 64 KiB, as in
// BenchmarkLargeTransaction) is applied by the receiver no later than
// 10 ms after the transaction. The writer commits the transaction and, as
// soon as that returns, one small key; the receiver's Trace.EventApplied
// stamps when each revision entered its copy. Reported:
//
//   - small-after-large: the receiver applied the small write this long
//     after it applied the transaction (the goal: ≤ 10 ms);
//   - small-followup: from the start of the small write to the receiver
//     applying it;
//   - small-alone: the same for a small write with no transaction before it
//     (the same-run baseline; made once the transaction has been applied);
//   - large-applied: from the transaction's write returning to the
//     receiver applying it.
func BenchmarkLargeTransactionFollowUp(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const keys = 20000
	pad := strings.Repeat("x", 84)
	values := make(map[string]string, keys)
	for i := range keys {
		values[fmt.Sprintf("key-%05d", i)] = pad
	}
	w := benchInstance[string](b, srv, "bench-followup")
	clock := make(appliedClock, 1024)
	r := benchInstanceOn[string](b, benchBackend(b, srv), "bench-followup", &contextd.Options{Trace: clock.trace()})
	var gap, followUp, alone, large []time.Duration
	round := func(i int) {
		for k := range values {
			values[k] = fmt.Sprintf("%s-%09d", pad, i) // 100 bytes in JSON
		}
		if err := w.TransactionalUpdate(ctx, values); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		largeRev := w.Revision() // the only writer: its copy is at its own commit
		smallStart := time.Now()
		if err := w.UpdateContext(ctx, "small", fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		smallRev := w.Revision()
		if smallRev != largeRev+1 {
			b.Fatalf("writer at revisions %d then %d; want consecutive", largeRev, smallRev)
		}
		largeAt := clock.await(b, largeRev)
		smallAt := clock.await(b, smallRev)
		gap = append(gap, smallAt.Sub(largeAt))
		followUp = append(followUp, smallAt.Sub(smallStart))
		large = append(large, largeAt.Sub(written))

		aloneStart := time.Now()
		if err := w.UpdateContext(ctx, "small", fmt.Sprint(i, "-alone")); err != nil {
			b.Fatal(err)
		}
		alone = append(alone, clock.await(b, w.Revision()).Sub(aloneStart))
	}
	round(-1) // loads the scripts
	gap, followUp, alone, large = nil, nil, nil, nil
	for i := 0; b.Loop(); i++ {
		round(i)
	}
	reportMillis(b, "small-after-large", gap)
	reportMillis(b, "small-followup", followUp)
	reportMillis(b, "small-alone", alone)
	reportMillis(b, "large-applied", large)
	if v, ok, err := r.Get(ctx, "key-19999"); err != nil || !ok || v != values["key-19999"] {
		b.Fatalf("receiver has key-19999 = %q, %v, %v; want %q", v, ok, err, values["key-19999"])
	}
}

// reportMillis adds the p50 and the maximum of the samples, in
// milliseconds, as metrics named after what they time.
func reportMillis(b *testing.B, what string, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(samples[len(samples)/2]), what+"-p50-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), what+"-max-ms")
}
