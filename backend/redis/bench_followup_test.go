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
//     receiver applying it;
//   - other-followup: from the start of a small write to another context
//     of the same two Backends, made right after the transaction (before
//     the same-context small write), to the receiver applying it: its
//     events share the receiver's pub/sub connection with the
//     transaction's, and depend on nothing of it, so they must not wait
//     for its fetch;
//   - other-alone: the same with nothing before it (the baseline, made
//     once everything else of the round has been applied);
//   - other-followup/alone and small-followup/alone: the p50 ratios;
//   - other-ahead-%: the share of rounds in which the receiver applied
//     the other context's write before the transaction.
func BenchmarkLargeTransactionFollowUp(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	const keys = 20000
	pad := strings.Repeat("x", 84)
	values := make(map[string]string, keys)
	for i := range keys {
		values[fmt.Sprintf("key-%05d", i)] = pad
	}
	wb, rb := benchBackend(b, srv), benchBackend(b, srv)
	w := benchInstanceOn[string](b, wb, "bench-followup", nil)
	wo := benchInstanceOn[string](b, wb, "bench-followup-other", nil)
	clock, otherClock := make(appliedClock, 1024), make(appliedClock, 1024)
	r := benchInstanceOn[string](b, rb, "bench-followup", &contextd.Options{Trace: clock.trace()})
	benchInstanceOn[string](b, rb, "bench-followup-other", &contextd.Options{Trace: otherClock.trace()})
	var gap, followUp, alone, large, otherFollowUp, otherAlone []time.Duration
	ahead := 0
	round := func(i int) {
		for k := range values {
			values[k] = fmt.Sprintf("%s-%09d", pad, i) // 100 bytes in JSON
		}
		if err := w.TransactionalUpdate(ctx, values); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		largeRev := w.Revision() // the only writer: its copy is at its own commit
		otherStart := time.Now()
		if err := wo.UpdateContext(ctx, "small", fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		otherRev := wo.Revision()
		smallStart := time.Now()
		if err := w.UpdateContext(ctx, "small", fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		smallRev := w.Revision()
		if smallRev != largeRev+1 {
			b.Fatalf("writer at revisions %d then %d; want consecutive", largeRev, smallRev)
		}
		otherAt := otherClock.await(b, otherRev)
		largeAt := clock.await(b, largeRev)
		smallAt := clock.await(b, smallRev)
		gap = append(gap, smallAt.Sub(largeAt))
		followUp = append(followUp, smallAt.Sub(smallStart))
		large = append(large, largeAt.Sub(written))
		otherFollowUp = append(otherFollowUp, otherAt.Sub(otherStart))
		if otherAt.Before(largeAt) {
			ahead++
		}

		aloneStart := time.Now()
		if err := w.UpdateContext(ctx, "small", fmt.Sprint(i, "-alone")); err != nil {
			b.Fatal(err)
		}
		alone = append(alone, clock.await(b, w.Revision()).Sub(aloneStart))
		otherAloneStart := time.Now()
		if err := wo.UpdateContext(ctx, "small", fmt.Sprint(i, "-alone")); err != nil {
			b.Fatal(err)
		}
		otherAlone = append(otherAlone, otherClock.await(b, wo.Revision()).Sub(otherAloneStart))
	}
	round(-1) // loads the scripts
	gap, followUp, alone, large, otherFollowUp, otherAlone, ahead = nil, nil, nil, nil, nil, nil, 0
	for i := 0; b.Loop(); i++ {
		round(i)
	}
	reportMillis(b, "small-after-large", gap)
	reportMillis(b, "small-followup", followUp)
	reportMillis(b, "small-alone", alone)
	reportMillis(b, "large-applied", large)
	reportMillis(b, "other-followup", otherFollowUp)
	reportMillis(b, "other-alone", otherAlone)
	reportRatio(b, "small-followup/alone", followUp, alone)
	reportRatio(b, "other-followup/alone", otherFollowUp, otherAlone)
	if n := len(otherFollowUp); n > 0 {
		b.ReportMetric(100*float64(ahead)/float64(n), "other-ahead-%")
	}
	if v, ok, err := r.Get(ctx, "key-19999"); err != nil || !ok || v != values["key-19999"] {
		b.Fatalf("receiver has key-19999 = %q, %v, %v; want %q", v, ok, err, values["key-19999"])
	}
}

// reportRatio adds the ratio of the p50s of two series of samples (each
// sorted by reportMillis or here) as a metric.
func reportRatio(b *testing.B, what string, num, den []time.Duration) {
	if len(num) == 0 || len(den) == 0 {
		return
	}
	slices.Sort(num)
	slices.Sort(den)
	if d := den[len(den)/2]; d > 0 {
		b.ReportMetric(float64(num[len(num)/2])/float64(d), what+"-p50-x")
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
