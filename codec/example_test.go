package codec_test

import (
	"context"
	"fmt"
	"reflect"

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

	blobs, _ := contextd.New[[]byte](b, "thumbnails", &contextd.Options{Codec: codec.Raw})
	defer blobs.Close()
	if err := blobs.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := blobs.UpdateContext(ctx, "alice", []byte{0x89, 'P', 'N', 'G'}); err != nil {
		panic(err)
	}

	wrong, _ := contextd.New[[]byte](b, "thumbnails", nil) // JSON
	defer wrong.Close()
	fmt.Println(wrong.Initialize(ctx))
	// Output:
	// contextd: thumbnails: initialize: context is encoded with "raw", this instance uses "json": backend: codec mismatch
}

// Raw stores a Context[[]byte]'s values as they are; JSON would store
// them base64-encoded in quotes.
func ExampleRaw() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()

	cx, _ := contextd.New[[]byte](b, "thumbnails", &contextd.Options{Codec: codec.Raw})
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := cx.UpdateContext(ctx, "alice", []byte("\x89PNG")); err != nil {
		panic(err)
	}
	stored, _ := b.Get(ctx, "thumbnails", "alice") // what the backend holds
	fmt.Printf("%q\n", stored.Value)

	asJSON, _ := codec.JSON.Marshal([]byte("\x89PNG"))
	fmt.Printf("%s\n", asJSON)

	_, err := codec.Raw.Marshal("a string")
	fmt.Println(err)
	// Output:
	// "\x89PNG"
	// "iVBORw=="
	// codec: raw encodes []byte, not string: codec: unsupported type
}

// A codec that implements Exact tells contextd, per type, that decoding
// what it encoded gives the same value back, so a writer keeps the value
// it wrote in its copy instead of decoding it again. JSON vouches for
// plain structs of booleans, numbers and strings, not for pointers, maps,
// slices or custom marshalers.
func ExampleExact() {
	type flag struct {
		Enabled bool    `json:"enabled"`
		Percent float64 `json:"percent"`
		Owner   string  `json:"owner,omitempty"`
	}
	exact := codec.JSON.(codec.Exact)
	fmt.Println(exact.Exact(reflect.TypeFor[flag]()) != nil)
	fmt.Println(exact.Exact(reflect.TypeFor[map[string]int]()) != nil)
	// Output:
	// true
	// false
}
