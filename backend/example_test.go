package backend_test

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// Compose mixes parts of backends. Capabilities that span two parts
// (atomic publishing, lock-aware commits) are offered only when those parts
// are one backend.
func ExampleCompose() {
	store, bus := memory.New(nil), memory.New(nil)
	defer store.Close()
	defer bus.Close()
	b, err := backend.Compose(store, store, bus)
	if err != nil {
		panic(err)
	}
	fmt.Println(backend.CapabilitiesOf(b))

	cx, _ := contextd.New[int](b, "composed", nil)
	defer cx.Close()
	ctx := context.Background()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := cx.UpdateContext(ctx, "k", 1); err != nil {
		panic(err)
	}
	v, _, _ := cx.Get(ctx, "k")
	fmt.Println(v)
	// Output:
	// LockAwareCommit+ChangeLog+ReleaseNotify+FairLocks
	// 1
}
