package msgpack_test

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/codec/msgpack"
	"github.com/contextd-go/contextd/contextd"
)

// A context encoded with MessagePack; every instance of it must use the
// same codec, and one with the default (JSON) is refused.
func Example() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()

	scores, _ := contextd.New[map[string]int](b, "scores", &contextd.Options{Codec: msgpack.Codec})
	defer scores.Close()
	if err := scores.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := scores.UpdateContext(ctx, "alice", map[string]int{"go": 9}); err != nil {
		panic(err)
	}
	alice, _, _ := scores.Get(ctx, "alice")
	fmt.Println(alice)

	wrong, _ := contextd.New[map[string]int](b, "scores", nil) // JSON
	defer wrong.Close()
	fmt.Println(wrong.Initialize(ctx))
	// Output:
	// map[go:9]
	// contextd: scores: initialize: context is encoded with "msgpack", this instance uses "json": backend: codec mismatch
}
