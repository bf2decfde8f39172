package otelcontextd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// ScopeName is the instrumentation scope of the meter and the tracer: the
// import path of this package.
const ScopeName = "github.com/contextd-go/contextd/otelcontextd"

// Attribute keys this package sets, besides error.type
// (semconv.ErrorTypeKey). The package documentation lists where each goes.
const (
	// attrContext is the name of the context, on every metric and span.
	attrContext = attribute.Key("contextd.context")
	// attrWriteKeys is the number of keys a write changes, on
	// contextd.write spans.
	attrWriteKeys = attribute.Key("contextd.write.keys")
	// attrRevision is the revision a write committed, on contextd.write
	// spans of writes that committed one.
	attrRevision = attribute.Key("contextd.revision")
	// attrSnapshotEntries is the number of entries a snapshot load read,
	// on contextd.snapshot.load spans.
	attrSnapshotEntries = attribute.Key("contextd.snapshot.entries")
	// attrGapReason says how missed events were noticed ("loss", "gap",
	// "diverged"), on contextd.gaps.
	attrGapReason = attribute.Key("contextd.gap.reason")
	// attrCatchUpSource says where a catch-up read what it missed ("log",
	// "snapshot"), on contextd.catch_ups.
	attrCatchUpSource = attribute.Key("contextd.catch_up.source")
	// attrKey is the key a lock wait is for, on contextd.lock.wait spans,
	// only with Options.Keys.
	attrKey = attribute.Key("contextd.key")
)

// Options configure an Instrumentation. The zero value (or nil) means
// defaults; New copies the options.
type Options struct {
	// MeterProvider makes the meter of the metrics. Default: the global
	// one (otel.GetMeterProvider) as it is when New is called, which
	// forwards to a provider installed later with otel.SetMeterProvider.
	MeterProvider metric.MeterProvider

	// TracerProvider makes the tracer of the spans. Default: the global
	// one (otel.GetTracerProvider), which likewise forwards.
	TracerProvider trace.TracerProvider

	// Keys puts the key a lock wait is for on its contextd.lock.wait span
	// as contextd.key. Keys may name people or orders, and are many:
	// they never go on metrics, and on spans only with this option.
	// Values never go anywhere. Default: false.
	Keys bool
}

// Instrumentation turns the hooks of a contextd.Trace into OpenTelemetry
// metrics and spans for one context name. Its methods are safe for
// concurrent use.
type Instrumentation struct {
	keys   bool
	tracer trace.Tracer

	nameAttr  attribute.KeyValue
	nameOnly  metric.MeasurementOption // the context name alone
	spanStart []trace.SpanStartOption  // internal, with the context name

	writeDuration    metric.Float64Histogram
	lockWaitDuration metric.Float64Histogram
	snapshotDuration metric.Float64Histogram
	snapshotEntries  metric.Int64Histogram
	eventsApplied    metric.Int64Counter
	eventLag         metric.Int64Histogram
	gaps             metric.Int64Counter
	catchUps         metric.Int64Counter
	watchResets      metric.Int64Counter
	copyLag          metric.Int64ObservableGauge
	copyRevision     metric.Int64ObservableGauge

	trace *contextd.Trace

	observed atomic.Pointer[observed] // read by the gauges' callback

	mu     sync.Mutex // serializes Observe and Close
	closed bool
	reg    metric.Registration
}

// observed boxes the Copy that Observe was given.
type observed struct{ Copy }

// Copy is what Observe reads: the local copy of a context, as a
// *contextd.Context[T] is.
type Copy interface {
	// Lag is how many revisions the store is known to be ahead of the copy.
	Lag() uint64
	// Revision is the revision of the copy.
	Revision() uint64
}

// Bucket boundaries of the duration histograms, in seconds: from half a
// millisecond (a write to a nearby Redis) to a minute (a long lock wait).
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Bucket boundaries of the revision-lag histogram.
var lagBuckets = []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}

// Bucket boundaries of the snapshot size histogram, in entries.
var entryBuckets = []float64{0, 10, 100, 1000, 10000, 100000, 1000000}

// New returns the Instrumentation of the context named contextName (the
// name given to contextd.New; it becomes the contextd.context attribute).
// An empty name gives an error matching contextd.ErrInvalid; New also
// fails if the meter refuses to make an instrument.
func New(contextName string, opts *Options) (*Instrumentation, error) {
	if contextName == "" {
		return nil, fmt.Errorf("otelcontextd: empty context name: %w", contextd.ErrInvalid)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MeterProvider == nil {
		o.MeterProvider = otel.GetMeterProvider()
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	i := &Instrumentation{
		keys:     o.Keys,
		tracer:   o.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		nameAttr: attrContext.String(contextName),
	}
	i.nameOnly = metric.WithAttributeSet(attribute.NewSet(i.nameAttr))
	i.spanStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(i.nameAttr)}

	meter := o.MeterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	i.writeDuration, err = meter.Float64Histogram("contextd.write.duration",
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Duration of writes (UpdateContext, TransactionalUpdate, Delete, Modify), lock waits included."))
	add(err)
	i.lockWaitDuration, err = meter.Float64Histogram("contextd.lock.wait.duration",
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Duration of waits for a lock another holder had, by a write or AcquireLock; error.type is set when the lock was not obtained."))
	add(err)
	i.snapshotDuration, err = meter.Float64Histogram("contextd.snapshot.load.duration",
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Duration of snapshot loads (Initialize, Sync, catch-ups the change log could not serve)."))
	add(err)
	i.snapshotEntries, err = meter.Int64Histogram("contextd.snapshot.load.entries",
		metric.WithUnit("{entry}"), metric.WithExplicitBucketBoundaries(entryBuckets...),
		metric.WithDescription("Entries read by successful snapshot loads."))
	add(err)
	i.eventsApplied, err = meter.Int64Counter("contextd.events.applied",
		metric.WithUnit("{event}"),
		metric.WithDescription("Change events from other instances applied to the local copy."))
	add(err)
	i.eventLag, err = meter.Int64Histogram("contextd.event.lag",
		metric.WithUnit("{revision}"), metric.WithExplicitBucketBoundaries(lagBuckets...),
		metric.WithDescription("Revisions the local copy was known to be behind the store after applying an event from another instance."))
	add(err)
	i.gaps, err = meter.Int64Counter("contextd.gaps",
		metric.WithUnit("{gap}"),
		metric.WithDescription("Times events were missed, by how it was noticed (contextd.gap.reason)."))
	add(err)
	i.catchUps, err = meter.Int64Counter("contextd.catch_ups",
		metric.WithUnit("{catch_up}"),
		metric.WithDescription("Catch-ups of the local copy, by source (contextd.catch_up.source); error.type is set when one failed."))
	add(err)
	i.watchResets, err = meter.Int64Counter("contextd.watch.resets",
		metric.WithUnit("{reset}"),
		metric.WithDescription("Resets sent to Watch readers that fell behind their buffer."))
	add(err)
	i.copyLag, err = meter.Int64ObservableGauge("contextd.copy.lag",
		metric.WithUnit("{revision}"),
		metric.WithDescription("Revisions the store is known to be ahead of the observed local copy."))
	add(err)
	i.copyRevision, err = meter.Int64ObservableGauge("contextd.copy.revision",
		metric.WithUnit("{revision}"),
		metric.WithDescription("Revision of the observed local copy."))
	add(err)
	if len(errs) == 0 {
		i.reg, err = meter.RegisterCallback(i.observe, i.copyLag, i.copyRevision)
		add(err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelcontextd: instruments of %q: %w", contextName, err)
	}

	i.trace = &contextd.Trace{
		WriteStart:    i.writeStart,
		LockWaitStart: i.lockWaitStart,
		SnapshotStart: i.snapshotStart,
		EventApplied:  i.eventApplied,
		Gap:           i.gap,
		CatchUp:       i.catchUp,
		WatchReset:    i.watchReset,
	}
	return i, nil
}

// Trace returns the hooks to put in contextd.Options.Trace. It is the same
// *contextd.Trace at every call; several Contexts of the context may share
// it.
func (i *Instrumentation) Trace() *contextd.Trace {
	return i.trace
}

// Observe reports the lag and revision of cx as the contextd.copy.lag and
// contextd.copy.revision gauges, read whenever the meter collects, until
// Close. A later call replaces cx; nil stops the gauges. After Close it
// does nothing.
func (i *Instrumentation) Observe(cx Copy) {
	i.mu.Lock()
	defer i.mu.Unlock()
	switch {
	case i.closed:
	case cx == nil:
		i.observed.Store(nil)
	default:
		i.observed.Store(&observed{cx})
	}
}

// Close stops the gauges of Observe and unregisters their callback from
// the meter. The hooks of Trace keep working. Close is idempotent.
func (i *Instrumentation) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.observed.Store(nil)
	i.mu.Unlock()
	// Unregister outside mu: the SDK holds its own lock while it runs
	// the callback.
	if err := i.reg.Unregister(); err != nil {
		return fmt.Errorf("otelcontextd: close: %w", err)
	}
	return nil
}

// observe is the callback of the gauges. It takes no lock of its own.
func (i *Instrumentation) observe(_ context.Context, o metric.Observer) error {
	cx := i.observed.Load()
	if cx == nil {
		return nil
	}
	o.ObserveInt64(i.copyLag, clamp(cx.Lag()), i.nameOnly)
	o.ObserveInt64(i.copyRevision, clamp(cx.Revision()), i.nameOnly)
	return nil
}

func (i *Instrumentation) writeStart(ctx context.Context, keys int) (context.Context, func(uint64, error)) {
	start := time.Now()
	ctx, span := i.tracer.Start(ctx, "contextd.write", i.spanStart...)
	if span.IsRecording() {
		span.SetAttributes(attrWriteKeys.Int(keys))
	}
	return ctx, func(rev uint64, err error) {
		i.writeDuration.Record(ctx, time.Since(start).Seconds(), i.outcome(err))
		if rev > 0 && span.IsRecording() {
			span.SetAttributes(attrRevision.Int64(clamp(rev)))
		}
		end(span, err)
	}
}

func (i *Instrumentation) lockWaitStart(ctx context.Context, key string) (context.Context, func(error)) {
	start := time.Now()
	ctx, span := i.tracer.Start(ctx, "contextd.lock.wait", i.spanStart...)
	if i.keys && span.IsRecording() {
		span.SetAttributes(attrKey.String(key))
	}
	return ctx, func(err error) {
		i.lockWaitDuration.Record(ctx, time.Since(start).Seconds(), i.outcome(err))
		end(span, err)
	}
}

func (i *Instrumentation) snapshotStart(ctx context.Context) (context.Context, func(int, error)) {
	start := time.Now()
	ctx, span := i.tracer.Start(ctx, "contextd.snapshot.load", i.spanStart...)
	return ctx, func(entries int, err error) {
		i.snapshotDuration.Record(ctx, time.Since(start).Seconds(), i.outcome(err))
		if err == nil {
			i.snapshotEntries.Record(ctx, int64(entries), i.nameOnly)
			span.SetAttributes(attrSnapshotEntries.Int(entries))
		}
		end(span, err)
	}
}

func (i *Instrumentation) eventApplied(_, lag uint64) {
	ctx := context.Background()
	i.eventsApplied.Add(ctx, 1, i.nameOnly)
	i.eventLag.Record(ctx, clamp(lag), i.nameOnly)
}

func (i *Instrumentation) gap(reason string) {
	i.gaps.Add(context.Background(), 1, metric.WithAttributes(i.nameAttr, attrGapReason.String(reason)))
}

func (i *Instrumentation) catchUp(how string, err error) {
	attrs := []attribute.KeyValue{i.nameAttr, attrCatchUpSource.String(how)}
	if err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
	}
	i.catchUps.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

func (i *Instrumentation) watchReset() {
	i.watchResets.Add(context.Background(), 1, i.nameOnly)
}

// outcome returns the attributes of a measurement: the context name, and
// error.type when err is not nil.
func (i *Instrumentation) outcome(err error) metric.MeasurementOption {
	if err == nil {
		return i.nameOnly
	}
	return metric.WithAttributes(i.nameAttr, semconv.ErrorTypeKey.String(errorType(err)))
}

// end ends span, with error.type and an error status if err is not nil.
// The status description is the error type, not the message: messages
// name keys.
func end(span trace.Span, err error) {
	if err != nil {
		t := errorType(err)
		span.SetAttributes(semconv.ErrorTypeKey.String(t))
		span.SetStatus(codes.Error, t)
	}
	span.End()
}

// clamp converts a revision count to an int64 attribute or measurement.
func clamp(n uint64) int64 {
	return int64(min(n, math.MaxInt64))
}

// errorTypes maps the errors a Context reports to error.type values, in
// the order they are tested: a lock wait ended by its ctx says so rather
// than that the lock was not obtained.
var errorTypes = []struct {
	err  error
	name string
}{
	{context.Canceled, "canceled"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{contextd.ErrLockNotAcquired, "lock_not_acquired"},
	{contextd.ErrLockLost, "lock_lost"},
	{contextd.ErrConflict, "conflict"},
	{backend.ErrLocked, "locked"},
	{contextd.ErrCodecMismatch, "codec_mismatch"},
	{contextd.ErrClosed, "closed"},
	{contextd.ErrNotInitialized, "not_initialized"},
	{contextd.ErrInvalid, "invalid"},
	{contextd.ErrCorrupt, "corrupt"},
	{contextd.ErrDecode, "decode"},
	{contextd.ErrStale, "stale"},
	{backend.ErrLogTruncated, "log_truncated"},
	{backend.ErrInvalidEvent, "invalid_event"},
	{backend.ErrNotFound, "not_found"},
}

// ErrorType returns the error.type value this package gives err: the name
// of the first of contextd's errors (and the context package's) that err
// matches, as listed in the package documentation; else the result of an
// errorType() string method of an error in its chain (the semantic
// conventions' hook for libraries); else "_OTHER". It never returns the
// message, which may name keys. errorType(nil) is "".
func errorType(err error) string {
	if err == nil {
		return ""
	}
	for _, e := range errorTypes {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if t := typed.ErrorType(); t != "" {
			return t
		}
	}
	return semconv.ErrorTypeOther.Value.AsString()
}
