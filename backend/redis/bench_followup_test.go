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
//     the same-context small write; every other round, the rounds
//     between make raw-after-large's write instead), to the receiver
//     applying it. Its
//     events share the receiver's pub/sub connection with the
//     transaction's and depend on nothing of it, so the receiver must not
//     hold them behind the transaction's fetch; other-delivery is the part
//     after the write returned (the receiver's share);
//   - other-alone, other-alone-delivery: the same with nothing before the
//     write (the baseline, made once the rest of the round was applied);
//   - raw-after-large: a raw HSET by a client of its own, made right after
//     the transaction instead of the other context's write (the rounds
//     alternate), and raw-alone, one with nothing before it: what the
//     server and the machine, busy with the receiver's fetch, cost any
//     command sent at that moment;
//   - the p50 ratios: small-followup/alone, other-followup/alone and
//     raw-after-large/alone (not other-delivery's: the receiver often
//     applies a lone write before the writer has its reply, so its
//     baseline is about 0);
//   - other-ahead-%: the share of rounds in which the receiver applied
//     the other context's write before the transaction;
//   - receiver-losses: losses the receiver's two Contexts reported (each
//     costs a catch-up from the change log; there should be none).
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
	ro := benchInstanceOn[string](b, rb, "bench-followup-other", &contextd.Options{Trace: otherClock.trace()})
	raw := rawClient(b, srv)
	var gap, followUp, alone, large []time.Duration
	var otherFollowUp, otherDelivery, otherAlone, otherAloneDelivery, rawAfter, rawAlone []time.Duration
	ahead := 0
	// otherWrite writes the other context's small key and returns when
	// it started, when it returned and its revision.
	otherWrite := func(v string) (start, done time.Time, rev uint64) {
		start = time.Now()
		if err := wo.UpdateContext(ctx, "small", v); err != nil {
			b.Fatal(err)
		}
		return start, time.Now(), wo.Revision()
	}
	rawWrite := func(v string) time.Duration {
		start := time.Now()
		if err := raw.HSet(ctx, "bench-followup-raw", "small", fmt.Sprintf("%q", v)).Err(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	round := func(i int) {
		for k := range values {
			values[k] = fmt.Sprintf("%s-%09d", pad, i) // 100 bytes in JSON
		}
		if err := w.TransactionalUpdate(ctx, values); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		largeRev := w.Revision() // the only writer: its copy is at its own commit
		withOther := i%2 == 0
		var otherStart, otherDone time.Time
		var otherRev uint64
		if withOther {
			otherStart, otherDone, otherRev = otherWrite(fmt.Sprint(i))
		} else {
			rawAfter = append(rawAfter, rawWrite(fmt.Sprint(i)))
		}
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
		if withOther {
			otherAt := otherClock.await(b, otherRev)
			otherFollowUp = append(otherFollowUp, otherAt.Sub(otherStart))
			otherDelivery = append(otherDelivery, otherAt.Sub(otherDone))
			if otherAt.Before(largeAt) {
				ahead++
			}
		}

		aloneStart := time.Now()
		if err := w.UpdateContext(ctx, "small", fmt.Sprint(i, "-alone")); err != nil {
			b.Fatal(err)
		}
		alone = append(alone, clock.await(b, w.Revision()).Sub(aloneStart))
		start, done, rev := otherWrite(fmt.Sprint(i, "-alone"))
		at := otherClock.await(b, rev)
		otherAlone = append(otherAlone, at.Sub(start))
		otherAloneDelivery = append(otherAloneDelivery, at.Sub(done))
		rawAlone = append(rawAlone, rawWrite(fmt.Sprint(i, "-alone")))
	}
	round(-1) // loads the scripts
	gap, followUp, alone, large = nil, nil, nil, nil
	otherFollowUp, otherDelivery, otherAlone, otherAloneDelivery, rawAfter, rawAlone, ahead = nil, nil, nil, nil, nil, nil, 0
	for i := 0; b.Loop(); i++ {
		round(i)
	}
	reportMillis(b, "small-after-large", gap)
	reportMillis(b, "small-followup", followUp)
	reportMillis(b, "small-alone", alone)
	reportMillis(b, "large-applied", large)
	reportMillis(b, "other-followup", otherFollowUp)
	reportMillis(b, "other-delivery", otherDelivery)
	reportMillis(b, "other-alone", otherAlone)
	reportMillis(b, "other-alone-delivery", otherAloneDelivery)
	reportMillis(b, "raw-after-large", rawAfter)
	reportMillis(b, "raw-alone", rawAlone)
	reportRatio(b, "small-followup/alone", followUp, alone)
	reportRatio(b, "other-followup/alone", otherFollowUp, otherAlone)
	reportRatio(b, "raw-after-large/alone", rawAfter, rawAlone)
	b.ReportMetric(float64(r.Stats().Losses+ro.Stats().Losses), "receiver-losses")
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
