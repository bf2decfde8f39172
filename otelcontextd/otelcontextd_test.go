package otelcontextd_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/otelcontextd"
)

// The attributes every measurement of the context "ctx" has.
const base = "contextd.context=ctx"

// at returns the encoded attributes of a measurement of "ctx" with the
// given further keys and values.
func at(kvs ...string) string {
	attrs := []attribute.KeyValue{attribute.String("contextd.context", "ctx")}
	for i := 0; i+1 < len(kvs); i += 2 {
		attrs = append(attrs, attribute.String(kvs[i], kvs[i+1]))
	}
	return enc(attribute.NewSet(attrs...))
}

// wantSpan is what a span should be.
type wantSpan struct {
	name   string
	attrs  map[string]string // all its attributes, formatted with Value.String
	status codes.Code
	desc   string
	parent trace.SpanContext // invalid: a root span
}

// checkSpans compares spans with want, in order.
func checkSpans(t *testing.T, step string, got []sdktrace.ReadOnlySpan, want ...wantSpan) {
	t.Helper()
	if len(got) != len(want) {
		names := make([]string, len(got))
		for i, s := range got {
			names[i] = s.Name()
		}
		t.Fatalf("%s: spans %v, want %d", step, names, len(want))
	}
	for i, w := range want {
		s := got[i]
		if s.Name() != w.name {
			t.Errorf("%s: span %d is %s, want %s", step, i, s.Name(), w.name)
			continue
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if !maps.Equal(attrs, w.attrs) {
			t.Errorf("%s: %s attributes %v, want %v", step, w.name, attrs, w.attrs)
		}
		if st := s.Status(); st.Code != w.status || st.Description != w.desc {
			t.Errorf("%s: %s status %v %q, want %v %q", step, w.name, st.Code, st.Description, w.status, w.desc)
		}
		if s.SpanKind() != trace.SpanKindInternal {
			t.Errorf("%s: %s kind %v, want internal", step, w.name, s.SpanKind())
		}
		if p := s.Parent(); p.TraceID() != w.parent.TraceID() || p.SpanID() != w.parent.SpanID() {
			t.Errorf("%s: %s parent %v, want %v", step, w.name, p.SpanID(), w.parent.SpanID())
		}
		if n := len(s.Events()); n != 0 {
			t.Errorf("%s: %s has %d events, want none (no error messages)", step, w.name, n)
		}
		if s.InstrumentationScope().Name != otelcontextd.ScopeName {
			t.Errorf("%s: %s scope %q", step, w.name, s.InstrumentationScope().Name)
		}
	}
}

// TestMetricsAndSpans drives Contexts on the memory backend through every
// hook of contextd.Trace and checks each metric (name, unit, attributes,
// values) and each span (name, attributes, status, parent) that the
// Instrumentation makes of them, and that no key or value is recorded.
//
// The writer and the reader are two instances of the context, each
// instrumented on its own SDK: the writer's writes, lock waits and spans
// are checked on its SDK, and what the reader hears of them (events,
// losses, catch-ups, Watch resets, gauges) on the reader's. A writer's own
// event may reach its copy before the commit returns, and then counts as
// applied; the reader's counts are exact because it does not write.
func TestMetricsAndSpans(t *testing.T) {
	ws, rs := newSDK(t), newSDK(t)
	winst := ws.instrument(t, "ctx", false)
	rinst := rs.instrument(t, "ctx", false)
	b := newMemory(t)
	ctx := context.Background()
	wcaller, rcaller := ws.tp.Tracer("caller"), rs.tp.Tracer("caller")
	opts := func(inst *otelcontextd.Instrumentation) *contextd.Options {
		return &contextd.Options{Trace: inst.Trace(), WatchBuffer: 1, ResyncInterval: -1}
	}

	// Initialize loads a snapshot, in a span of the caller's.
	r, err := contextd.New[string](b, "ctx", opts(rinst))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	initCtx, initSpan := rcaller.Start(ctx, "init")
	if err := r.Initialize(initCtx); err != nil {
		t.Fatal(err)
	}
	initSpan.End()
	checkSpans(t, "Initialize", rs.newSpans(), wantSpan{
		name:   "contextd.snapshot.load",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.snapshot.entries": "0"},
		parent: initSpan.SpanContext(),
	})
	w := open[string](t, b, "ctx", opts(winst))
	ws.newSpans() // the writer's Initialize
	other := open[string](t, b, "ctx", nil)

	// A write in a span of the caller's.
	reqCtx, reqSpan := wcaller.Start(ctx, "request")
	if err := w.UpdateContext(reqCtx, "key-user", "secret-1"); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()
	checkSpans(t, "UpdateContext", ws.newSpans(), wantSpan{
		name:   "contextd.write",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.write.keys": "1", "contextd.revision": "1"},
		parent: reqSpan.SpanContext(),
	})

	// A failed write, without a parent.
	if err := w.Delete(ctx, ""); !errors.Is(err, contextd.ErrInvalid) {
		t.Fatalf("Delete of an empty key = %v, want ErrInvalid", err)
	}
	checkSpans(t, "failed Delete", ws.newSpans(), wantSpan{
		name:   "contextd.write",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.write.keys": "1", "error.type": "invalid"},
		status: codes.Error, desc: "invalid",
	})

	// A write that waits for another instance's lock: the wait is a child
	// of the write's span.
	l, err := other.AcquireLock(ctx, contextd.LockOptions{Key: "key-user", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, waitSpan := wcaller.Start(ctx, "waiter")
	done := make(chan error, 1)
	go func() { done <- w.UpdateContext(waitCtx, "key-user", "secret-2") }()
	eventually(t, "the write waits for the lock", func() bool { return ws.started("contextd.lock.wait") })
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitSpan.End()
	spans := ws.newSpans()
	var writeSpan trace.SpanContext
	if len(spans) == 2 {
		writeSpan = spans[1].SpanContext()
	}
	checkSpans(t, "write after a lock wait", spans, wantSpan{
		name:   "contextd.lock.wait",
		attrs:  map[string]string{"contextd.context": "ctx"},
		parent: writeSpan,
	}, wantSpan{
		name:   "contextd.write",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.write.keys": "1", "contextd.revision": "2"},
		parent: waitSpan.SpanContext(),
	})

	// A lock wait that ends without the lock.
	l, err = other.AcquireLock(ctx, contextd.LockOptions{Key: "key-order", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AcquireLock(ctx, contextd.LockOptions{Key: "key-order", RetryDelay: time.Millisecond, MaxRetries: 1}); !errors.Is(err, contextd.ErrLockNotAcquired) {
		t.Fatalf("AcquireLock of a held key = %v, want ErrLockNotAcquired", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	checkSpans(t, "failed AcquireLock", ws.newSpans(), wantSpan{
		name:   "contextd.lock.wait",
		attrs:  map[string]string{"contextd.context": "ctx", "error.type": "lock_not_acquired"},
		status: codes.Error, desc: "lock_not_acquired",
	})

	// The reader applies the writer's two events.
	eventually(t, "the reader counts two events", func() bool {
		return value(rs.metrics(t), "contextd.events.applied", base) == 2
	})

	// Lost messages, and the catch-up from the change log after them.
	b.BreakSubscriptions()
	if err := other.UpdateContext(ctx, "key-other", "secret-3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the loss, the catch-up and the event are counted", func() bool {
		ms := rs.metrics(t)
		return value(ms, "contextd.gaps", at("contextd.gap.reason", "loss")) == 1 &&
			value(ms, "contextd.catch_ups", at("contextd.catch_up.source", "log")) == 1 &&
			value(ms, "contextd.events.applied", base) == 3
	})

	// Sync loads a snapshot, in a span of the caller's.
	syncCtx, syncSpan := rcaller.Start(ctx, "sync")
	if err := r.Sync(syncCtx); err != nil {
		t.Fatal(err)
	}
	syncSpan.End()
	checkSpans(t, "Sync", rs.newSpans(), wantSpan{
		name:   "contextd.snapshot.load",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.snapshot.entries": "2"},
		parent: syncSpan.SpanContext(),
	})

	// A Watch reader that falls behind: one event of three changes into a
	// buffer of one.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := r.Watch(wctx)
	if err := w.TransactionalUpdate(ctx, map[string]string{"key-a": "secret-5", "key-b": "secret-6", "key-c": "secret-7"}); err != nil {
		t.Fatal(err)
	}
	checkSpans(t, "TransactionalUpdate", ws.newSpans(), wantSpan{
		name:  "contextd.write",
		attrs: map[string]string{"contextd.context": "ctx", "contextd.write.keys": "3", "contextd.revision": "4"},
	})
	for ch := range watch {
		if ch.Reset {
			break
		}
	}
	cancel()
	eventually(t, "the event and the reset are counted", func() bool {
		ms := rs.metrics(t)
		return value(ms, "contextd.watch.resets", base) == 1 && value(ms, "contextd.events.applied", base) == 4
	})

	// The reader's revision and lag as gauges.
	rinst.Observe(r)

	// The writer's metrics.
	ms := ws.metrics(t)
	writes := histogram[float64](t, ms, "contextd.write.duration", "s")
	if got, want := counts(writes), map[string]uint64{base: 3, at("error.type", "invalid"): 1}; !maps.Equal(got, want) {
		t.Errorf("contextd.write.duration counts %v, want %v", got, want)
	}
	if p := writes[base]; len(p.Bounds) == 0 || p.Bounds[0] != 0.0005 || p.Sum <= 0 {
		t.Errorf("contextd.write.duration: bounds %v, sum %v; want buckets from 0.5 ms and a positive sum", p.Bounds, p.Sum)
	}
	waits := histogram[float64](t, ms, "contextd.lock.wait.duration", "s")
	if got, want := counts(waits), map[string]uint64{base: 1, at("error.type", "lock_not_acquired"): 1}; !maps.Equal(got, want) {
		t.Errorf("contextd.lock.wait.duration counts %v, want %v", got, want)
	}
	if p := waits[base]; p.Sum <= 0 {
		t.Errorf("contextd.lock.wait.duration sum %v, want > 0", p.Sum)
	}
	checkNoKeysOrValues(t, ws)

	// The reader's metrics.
	ms = rs.metrics(t)
	for _, name := range []string{"contextd.write.duration", "contextd.lock.wait.duration"} {
		if _, ok := ms[name]; ok {
			t.Errorf("the reader, which does not write, reports %s", name)
		}
	}
	if got, want := counts(histogram[float64](t, ms, "contextd.snapshot.load.duration", "s")), map[string]uint64{base: 2}; !maps.Equal(got, want) {
		t.Errorf("contextd.snapshot.load.duration counts %v, want %v", got, want)
	}
	entries := histogram[int64](t, ms, "contextd.snapshot.load.entries", "{entry}")
	if p := entries[base]; len(entries) != 1 || p.Count != 2 || p.Sum != 2 {
		t.Errorf("contextd.snapshot.load.entries %v, want one point of two loads with 0 and 2 entries", entries)
	}
	if got, want := counter(t, ms, "contextd.events.applied", "{event}"), map[string]int64{base: 4}; !maps.Equal(got, want) {
		t.Errorf("contextd.events.applied %v, want %v", got, want)
	}
	if got, want := counts(histogram[int64](t, ms, "contextd.event.lag", "{revision}")), map[string]uint64{base: 4}; !maps.Equal(got, want) {
		t.Errorf("contextd.event.lag counts %v, want %v (one per event applied)", got, want)
	}
	if got, want := counter(t, ms, "contextd.gaps", "{gap}"), map[string]int64{at("contextd.gap.reason", "loss"): 1}; !maps.Equal(got, want) {
		t.Errorf("contextd.gaps %v, want %v", got, want)
	}
	if got, want := counter(t, ms, "contextd.catch_ups", "{catch_up}"), map[string]int64{
		at("contextd.catch_up.source", "log"):      1,
		at("contextd.catch_up.source", "snapshot"): 1,
	}; !maps.Equal(got, want) {
		t.Errorf("contextd.catch_ups %v, want %v", got, want)
	}
	if got, want := counter(t, ms, "contextd.watch.resets", "{reset}"), map[string]int64{base: 1}; !maps.Equal(got, want) {
		t.Errorf("contextd.watch.resets %v, want %v", got, want)
	}
	if got, want := gauge(t, ms, "contextd.copy.revision", "{revision}"), map[string]int64{base: 4}; !maps.Equal(got, want) {
		t.Errorf("contextd.copy.revision %v, want %v", got, want)
	}
	if got, want := gauge(t, ms, "contextd.copy.lag", "{revision}"), map[string]int64{base: int64(r.Lag())}; !maps.Equal(got, want) {
		t.Errorf("contextd.copy.lag %v, want %v", got, want)
	}
	if len(ms) != 9 {
		t.Errorf("the reader reports %d metrics, want 9: %v", len(ms), slices.Sorted(maps.Keys(ms)))
	}
	checkSpans(t, "the reader's background work", rs.newSpans()) // none
	checkNoKeysOrValues(t, rs)

	// Close stops the gauges.
	if err := rinst.Close(); err != nil {
		t.Fatal(err)
	}
	rinst.Observe(r) // does nothing after Close
	ms = rs.metrics(t)
	for _, name := range []string{"contextd.copy.lag", "contextd.copy.revision"} {
		if _, ok := ms[name]; ok {
			t.Errorf("%s still reported after Close", name)
		}
	}
	if err := rinst.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// checkNoKeysOrValues fails if any attribute of any span or metric point
// holds a key ("key-...") or a value ("secret-...") of the test context.
func checkNoKeysOrValues(t *testing.T, s *sdk) {
	t.Helper()
	check := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			if v := kv.Value.String(); kv.Key == "contextd.key" || strings.Contains(v, "key-") || strings.Contains(v, "secret-") {
				t.Errorf("%s records %s=%s", where, kv.Key, v)
			}
		}
	}
	for _, sp := range s.spans.Ended() {
		check(sp.Name(), sp.Attributes())
		for _, ev := range sp.Events() {
			check(sp.Name()+" event", ev.Attributes)
		}
	}
	for name, m := range s.metrics(t) {
		text := fmt.Sprintf("%+v", m.Data)
		if strings.Contains(text, "key-") || strings.Contains(text, "secret-") {
			t.Errorf("metric %s records a key or a value: %s", name, text)
		}
	}
}

// TestKeysOption checks that Options.Keys puts the key of a lock wait on
// its span, and nowhere else.
func TestKeysOption(t *testing.T) {
	s := newSDK(t)
	inst := s.instrument(t, "ctx", true)
	b := newMemory(t)
	ctx := context.Background()
	c := open[string](t, b, "ctx", &contextd.Options{Trace: inst.Trace(), ResyncInterval: -1})
	other := open[string](t, b, "ctx", nil)
	s.newSpans() // Initialize's

	l, err := other.AcquireLock(ctx, contextd.LockOptions{Key: "key-order", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "key-order", RetryDelay: time.Millisecond, MaxRetries: 1}); !errors.Is(err, contextd.ErrLockNotAcquired) {
		t.Fatalf("AcquireLock of a held key = %v, want ErrLockNotAcquired", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	checkSpans(t, "AcquireLock", s.newSpans(), wantSpan{
		name:   "contextd.lock.wait",
		attrs:  map[string]string{"contextd.context": "ctx", "contextd.key": "key-order", "error.type": "lock_not_acquired"},
		status: codes.Error, desc: "lock_not_acquired",
	})
	for name, m := range s.metrics(t) {
		if text := fmt.Sprintf("%+v", m.Data); strings.Contains(text, "key-") {
			t.Errorf("metric %s records a key: %s", name, text)
		}
	}
}

// fixedCopy is a Copy with set numbers.
type fixedCopy struct{ lag, rev uint64 }

func (f fixedCopy) Lag() uint64      { return f.lag }
func (f fixedCopy) Revision() uint64 { return f.rev }

// TestHookValues calls the hooks with known arguments and checks the
// values and attributes they become: revision lags, the reasons of gaps,
// the sources and error types of catch-ups, a failed snapshot load, and
// gauges that Observe replaces and stops.
func TestHookValues(t *testing.T) {
	s := newSDK(t)
	inst := s.instrument(t, "ctx", false)
	tr := inst.Trace()
	if inst.Trace() != tr {
		t.Error("Trace returned another *contextd.Trace on the second call")
	}
	ctx := context.Background()

	tr.EventApplied(10, 3)
	tr.EventApplied(11, 0)
	tr.Gap("gap")
	tr.Gap("diverged")
	tr.CatchUp("log", fmt.Errorf("changes since 9: %w", backend.ErrLogTruncated))
	tr.CatchUp("snapshot", errors.Join(contextd.ErrLockNotAcquired, context.DeadlineExceeded))
	tr.CatchUp("snapshot", errors.New("connection refused"))
	_, done := tr.SnapshotStart(ctx)
	done(5, fmt.Errorf("key %q: %w", "key-x", contextd.ErrCorrupt))
	inst.Observe(fixedCopy{lag: 7, rev: 12})

	ms := s.metrics(t)
	lag := histogram[int64](t, ms, "contextd.event.lag", "{revision}")[base]
	if lo, _ := lag.Min.Value(); lag.Count != 2 || lag.Sum != 3 || lo != 0 {
		t.Errorf("contextd.event.lag count %d sum %d min %d, want 2, 3, 0", lag.Count, lag.Sum, lo)
	}
	if hi, _ := lag.Max.Value(); hi != 3 {
		t.Errorf("contextd.event.lag max %d, want 3", hi)
	}
	if got, want := counter(t, ms, "contextd.gaps", "{gap}"), map[string]int64{
		at("contextd.gap.reason", "gap"):      1,
		at("contextd.gap.reason", "diverged"): 1,
	}; !maps.Equal(got, want) {
		t.Errorf("contextd.gaps %v, want %v", got, want)
	}
	if got, want := counter(t, ms, "contextd.catch_ups", "{catch_up}"), map[string]int64{
		at("contextd.catch_up.source", "log", "error.type", "log_truncated"):          1,
		at("contextd.catch_up.source", "snapshot", "error.type", "deadline_exceeded"): 1,
		at("contextd.catch_up.source", "snapshot", "error.type", "_OTHER"):            1,
	}; !maps.Equal(got, want) {
		t.Errorf("contextd.catch_ups %v, want %v", got, want)
	}
	if got, want := counts(histogram[float64](t, ms, "contextd.snapshot.load.duration", "s")), map[string]uint64{at("error.type", "corrupt"): 1}; !maps.Equal(got, want) {
		t.Errorf("contextd.snapshot.load.duration counts %v, want %v", got, want)
	}
	if _, ok := ms["contextd.snapshot.load.entries"]; ok {
		t.Error("a failed snapshot load recorded its entries")
	}
	if got, want := gauge(t, ms, "contextd.copy.lag", "{revision}"), map[string]int64{base: 7}; !maps.Equal(got, want) {
		t.Errorf("contextd.copy.lag %v, want %v", got, want)
	}
	if got, want := gauge(t, ms, "contextd.copy.revision", "{revision}"), map[string]int64{base: 12}; !maps.Equal(got, want) {
		t.Errorf("contextd.copy.revision %v, want %v", got, want)
	}
	checkSpans(t, "failed snapshot load", s.newSpans(), wantSpan{
		name:   "contextd.snapshot.load",
		attrs:  map[string]string{"contextd.context": "ctx", "error.type": "corrupt"},
		status: codes.Error, desc: "corrupt",
	})

	// A later Observe replaces the copy; nil stops the gauges.
	inst.Observe(fixedCopy{lag: 0, rev: 13})
	if got := gauge(t, s.metrics(t), "contextd.copy.revision", "{revision}")[base]; got != 13 {
		t.Errorf("contextd.copy.revision after a second Observe = %d, want 13", got)
	}
	inst.Observe(nil)
	if _, ok := s.metrics(t)["contextd.copy.revision"]; ok {
		t.Error("contextd.copy.revision reported after Observe(nil)")
	}
}

// typedError has the semantic conventions' ErrorType method.
type typedError struct{}

func (typedError) Error() string     { return "typed" }
func (typedError) ErrorType() string { return "custom_type" }

// TestErrorTypes checks the error.type of each kind of error a Context
// reports, through a write's done hook.
func TestErrorTypes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("update %q: %w", "key-x", contextd.ErrLockLost), "lock_lost"},
		{errors.Join(contextd.ErrLockNotAcquired, context.Canceled), "canceled"},
		{contextd.ErrLockNotAcquired, "lock_not_acquired"},
		{contextd.ErrConflict, "conflict"},
		{backend.ErrLocked, "locked"},
		{contextd.ErrCodecMismatch, "codec_mismatch"},
		{contextd.ErrClosed, "closed"},
		{contextd.ErrNotInitialized, "not_initialized"},
		{contextd.ErrDecode, "decode"},
		{contextd.ErrStale, "stale"},
		{backend.ErrInvalidEvent, "invalid_event"},
		{backend.ErrNotFound, "not_found"},
		{fmt.Errorf("wrapped: %w", typedError{}), "custom_type"},
		{errors.New("dial tcp: connection refused"), "_OTHER"},
	} {
		s := newSDK(t)
		inst := s.instrument(t, "ctx", false)
		_, done := inst.Trace().WriteStart(context.Background(), 1)
		done(0, tc.err)
		got := counts(histogram[float64](t, s.metrics(t), "contextd.write.duration", "s"))
		if want := map[string]uint64{at("error.type", tc.want): 1}; !maps.Equal(got, want) {
			t.Errorf("error %q: %v, want %v", tc.err, got, want)
		}
		checkSpans(t, tc.err.Error(), s.newSpans(), wantSpan{
			name:   "contextd.write",
			attrs:  map[string]string{"contextd.context": "ctx", "contextd.write.keys": "1", "error.type": tc.want},
			status: codes.Error, desc: tc.want,
		})
	}
}

// TestNew checks New's bad input and its default providers, the global
// ones.
func TestNew(t *testing.T) {
	if _, err := otelcontextd.New("", nil); !errors.Is(err, contextd.ErrInvalid) {
		t.Errorf("New with an empty name = %v, want ErrInvalid", err)
	}
	s := newSDK(t)
	otel.SetMeterProvider(s.mp)
	otel.SetTracerProvider(s.tp)
	inst, err := otelcontextd.New("ctx", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	_, done := inst.Trace().WriteStart(context.Background(), 2)
	done(1, nil)
	if got := counts(histogram[float64](t, s.metrics(t), "contextd.write.duration", "s")); got[base] != 1 {
		t.Errorf("a write through the global meter provider: %v", got)
	}
	checkSpans(t, "write", s.newSpans(), wantSpan{
		name:  "contextd.write",
		attrs: map[string]string{"contextd.context": "ctx", "contextd.write.keys": "2", "contextd.revision": "1"},
	})
}

// gateCopy is a Copy whose Lag blocks until release is closed, to hold a
// collection inside the gauges' callback.
type gateCopy struct{ entered, release chan struct{} }

func (g gateCopy) Lag() uint64 {
	close(g.entered)
	<-g.release
	return 0
}
func (g gateCopy) Revision() uint64 { return 1 }

// TestCloseDuringCollect calls Close while a collection is inside the
// gauges' callback (the SDK holds its lock there, and Close's Unregister
// waits for it): Close must return once the collection ends, Observe must
// not block meanwhile, and the gauges must be gone afterwards.
func TestCloseDuringCollect(t *testing.T) {
	s := newSDK(t)
	inst := s.instrument(t, "ctx", false)
	g := gateCopy{entered: make(chan struct{}), release: make(chan struct{})}
	inst.Observe(g)
	collected := make(chan error, 1)
	go func() {
		var rm metricdata.ResourceMetrics
		collected <- s.reader.Collect(context.Background(), &rm)
	}()
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the collection did not call the gauges' callback")
	}
	closed := make(chan error, 1)
	go func() { closed <- inst.Close() }()
	observed := make(chan struct{})
	go func() {
		inst.Observe(fixedCopy{rev: 2})
		close(observed)
	}()
	select {
	case <-observed:
	case <-time.After(30 * time.Second):
		t.Fatal("Observe blocked while Close waited for the collection")
	}
	close(g.release)
	if err := <-collected; err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	ms := s.metrics(t)
	for _, name := range []string{"contextd.copy.lag", "contextd.copy.revision"} {
		if _, ok := ms[name]; ok {
			t.Errorf("%s reported after Close", name)
		}
	}
}
