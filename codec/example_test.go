package codec_test

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/contextd"
)

// The codec is chosen per context; its name is recorded with the context,
// and an instance with another codec is refused.
func Example() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()

	packed, _ := contextd.New[map[string]int](b, "scores", &contextd.Options{Codec: codec.MsgPack})
	defer packed.Close()
	if err := packed.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := packed.UpdateContext(ctx, "alice", map[string]int{"go": 9}); err != nil {
		panic(err)
	}

	wrong, _ := contextd.New[map[string]int](b, "scores", nil) // JSON
	defer wrong.Close()
	fmt.Println(wrong.Initialize(ctx))
	// Output:
	// contextd: scores: initialize: context is encoded with "msgpack", this instance uses "json": backend: codec mismatch
}
