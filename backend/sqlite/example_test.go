package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/contextd"
)

// Two Backends on one file stand for two processes on one machine: what
// one writes, the other sees.
func Example() {
	dir, err := os.MkdirTemp("", "contextd-sqlite-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "contextd.db")
	ctx := context.Background()

	b1, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		panic(err)
	}
	defer b1.Close()
	b2, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		panic(err)
	}
	defer b2.Close()
	fmt.Println(backend.CapabilitiesOf(b1))

	writer, err := contextd.New[int](b1, "counters", nil)
	if err != nil {
		panic(err)
	}
	defer writer.Close()
	reader, err := contextd.New[int](b2, "counters", nil)
	if err != nil {
		panic(err)
	}
	defer reader.Close()
	for _, cx := range []*contextd.Context[int]{writer, reader} {
		if err := cx.Initialize(ctx); err != nil {
			panic(err)
		}
	}
	changes := reader.Watch(ctx)

	if err := writer.UpdateContext(ctx, "visits", 1); err != nil {
		panic(err)
	}
	if _, err := writer.Modify(ctx, "visits", func(n int, _ bool) (int, error) { return n + 1, nil }); err != nil {
		panic(err)
	}
	for ch := range changes {
		if ch.Key == "visits" && ch.Value == 2 {
			break
		}
	}
	v, _, err := reader.Get(ctx, "visits")
	if err != nil {
		panic(err)
	}
	fmt.Println("visits:", v)
	// Output:
	// AtomicPublish+LockAwareCommit+ChangeLog+ReleaseNotify+Expiry
	// visits: 2
}
