package otelcontextd_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/otelcontextd"
)

// An instrumented Context: its writes and snapshot loads become spans and
// histograms, its copy's revision a gauge. Here the SDK keeps them in
// memory; a real service passes nil Options to use the global providers
// its exporters are set up on.
func Example() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tracers := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))

	inst, err := otelcontextd.New("flags", &otelcontextd.Options{MeterProvider: meters, TracerProvider: tracers})
	if err != nil {
		panic(err)
	}
	defer inst.Close()

	b := memory.New(nil)
	defer b.Close()
	shared, err := contextd.New[bool](b, "flags", &contextd.Options{Trace: inst.Trace()})
	if err != nil {
		panic(err)
	}
	defer shared.Close()
	if err := shared.Initialize(ctx); err != nil {
		panic(err)
	}
	inst.Observe(shared)

	if err := shared.UpdateContext(ctx, "dark-mode", true); err != nil {
		panic(err)
	}

	for _, s := range spans.Ended() {
		fmt.Println("span", s.Name(), s.Attributes()[0].Value.String())
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Histogram[float64]: // durations
			fmt.Println("metric", m.Name, m.Unit, "count", d.DataPoints[0].Count)
		case metricdata.Gauge[int64]:
			fmt.Println("metric", m.Name, m.Unit, d.DataPoints[0].Value)
		}
	}
	// Output:
	// span contextd.snapshot.load flags
	// span contextd.write flags
	// metric contextd.write.duration s count 1
	// metric contextd.snapshot.load.duration s count 1
	// metric contextd.copy.lag {revision} 0
	// metric contextd.copy.revision {revision} 1
}
