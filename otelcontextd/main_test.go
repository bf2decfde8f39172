package otelcontextd_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/otelcontextd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sdk is an OpenTelemetry SDK that keeps what it is given: metrics in a
// ManualReader, spans in a SpanRecorder.
type sdk struct {
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	seen   int // spans ended before the last call of newSpans
}

func newSDK(t testing.TB) *sdk {
	s := &sdk{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	t.Cleanup(func() {
		ctx := context.Background()
		_ = s.mp.Shutdown(ctx)
		_ = s.tp.Shutdown(ctx)
	})
	return s
}

// instrument returns an Instrumentation of name on the SDK, closed when the
// test ends.
func (s *sdk) instrument(t testing.TB, name string, keys bool) *otelcontextd.Instrumentation {
	t.Helper()
	inst, err := otelcontextd.New(name, &otelcontextd.Options{MeterProvider: s.mp, TracerProvider: s.tp, Keys: keys})
	if err != nil {
		t.Fatalf("otelcontextd.New: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return inst
}

// metrics collects the metrics of the SDK by name.
func (s *sdk) metrics(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelcontextd.ScopeName {
			t.Errorf("metrics of scope %q, want %q", sm.Scope.Name, otelcontextd.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// newSpans returns the spans of contextd ended since the last call.
func (s *sdk) newSpans() []sdktrace.ReadOnlySpan {
	ended := s.spans.Ended()
	fresh := ended[s.seen:]
	s.seen = len(ended)
	return slices.DeleteFunc(slices.Clone(fresh), func(sp sdktrace.ReadOnlySpan) bool {
		return !strings.HasPrefix(sp.Name(), "contextd.")
	})
}

// started reports whether a span named name has started.
func (s *sdk) started(name string) bool {
	return slices.ContainsFunc(s.spans.Started(), func(sp sdktrace.ReadWriteSpan) bool { return sp.Name() == name })
}

// enc encodes an attribute set as "k=v,k=v" in key order.
func enc(set attribute.Set) string {
	return set.Encoded(attribute.DefaultEncoder())
}

// metric returns the metric called name after checking its unit and that
// it has a description.
func metric(t testing.TB, ms map[string]metricdata.Metrics, name, unit string) (metricdata.Metrics, bool) {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Errorf("no metric %s", name)
		return m, false
	}
	if m.Unit != unit {
		t.Errorf("%s: unit %q, want %q", name, m.Unit, unit)
	}
	if m.Description == "" {
		t.Errorf("%s: no description", name)
	}
	return m, true
}

// histogram returns the points of the histogram called name by attributes.
func histogram[N int64 | float64](t testing.TB, ms map[string]metricdata.Metrics, name, unit string) map[string]metricdata.HistogramDataPoint[N] {
	t.Helper()
	out := map[string]metricdata.HistogramDataPoint[N]{}
	m, ok := metric(t, ms, name, unit)
	if !ok {
		return out
	}
	h, ok := m.Data.(metricdata.Histogram[N])
	if !ok {
		t.Errorf("%s is a %T, want a histogram", name, m.Data)
		return out
	}
	for _, p := range h.DataPoints {
		out[enc(p.Attributes)] = p
	}
	return out
}

// counter returns the values of the monotonic counter called name by
// attributes.
func counter(t testing.TB, ms map[string]metricdata.Metrics, name, unit string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	m, ok := metric(t, ms, name, unit)
	if !ok {
		return out
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !s.IsMonotonic {
		t.Errorf("%s is a %T (monotonic: %v), want a monotonic int64 sum", name, m.Data, s.IsMonotonic)
		return out
	}
	for _, p := range s.DataPoints {
		out[enc(p.Attributes)] = p.Value
	}
	return out
}

// gauge returns the values of the int64 gauge called name by attributes.
func gauge(t testing.TB, ms map[string]metricdata.Metrics, name, unit string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	m, ok := metric(t, ms, name, unit)
	if !ok {
		return out
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Errorf("%s is a %T, want an int64 gauge", name, m.Data)
		return out
	}
	for _, p := range g.DataPoints {
		out[enc(p.Attributes)] = p.Value
	}
	return out
}

// counts returns the count of each histogram point.
func counts[N int64 | float64](ps map[string]metricdata.HistogramDataPoint[N]) map[string]uint64 {
	out := map[string]uint64{}
	for k, p := range ps {
		out[k] = p.Count
	}
	return out
}

// open returns an initialized Context on b, closed when the test ends.
func open[T any](t testing.TB, b backend.Backend, name string, opts *contextd.Options) *contextd.Context[T] {
	t.Helper()
	c, err := contextd.New[T](b, name, opts)
	if err != nil {
		t.Fatalf("contextd.New: %v", err)
	}
	if err := c.Initialize(context.Background()); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// newMemory returns a memory backend closed when the test ends.
func newMemory(t testing.TB) *memory.Backend {
	b := memory.New(nil)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// eventually polls cond until it holds, failing the test after a deadline
// that only bounds a failure.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// value returns the value of the counter called name at the encoded
// attributes, or 0; for polling, so it fails nothing.
func value(ms map[string]metricdata.Metrics, name, attrs string) int64 {
	s, _ := ms[name].Data.(metricdata.Sum[int64])
	for _, p := range s.DataPoints {
		if enc(p.Attributes) == attrs {
			return p.Value
		}
	}
	return 0
}
