package otelcontextd_test

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/otelcontextd"
)

// BenchmarkUpdateContext measures what the instrumentation adds to a write
// on the memory backend (the cheapest write there is, so the worst ratio):
// "bare" has no Trace and is the baseline; "noop" has the instrumentation
// on no-op providers; "sdk" on the SDK, with a ManualReader and every span
// sampled (and dropped, as no processor is installed).
func BenchmarkUpdateContext(b *testing.B) {
	sdkOpts := func(b *testing.B) *otelcontextd.Options {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		tp := sdktrace.NewTracerProvider()
		b.Cleanup(func() {
			_ = mp.Shutdown(context.Background())
			_ = tp.Shutdown(context.Background())
		})
		return &otelcontextd.Options{MeterProvider: mp, TracerProvider: tp}
	}
	for _, bc := range []struct {
		name string
		opts func(*testing.B) *otelcontextd.Options // nil: no Trace
	}{
		{"bare", nil},
		{"noop", func(*testing.B) *otelcontextd.Options {
			return &otelcontextd.Options{MeterProvider: metricnoop.NewMeterProvider(), TracerProvider: tracenoop.NewTracerProvider()}
		}},
		{"sdk", sdkOpts},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var copts contextd.Options
			if bc.opts != nil {
				inst, err := otelcontextd.New("bench", bc.opts(b))
				if err != nil {
					b.Fatal(err)
				}
				defer inst.Close()
				copts.Trace = inst.Trace()
			}
			c := open[int](b, newMemory(b), "bench", &copts)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := c.UpdateContext(ctx, "k", i); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
