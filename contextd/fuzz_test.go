package contextd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/codec/msgpack"
	"github.com/contextd-go/contextd/contextd"
)

type fuzzValue struct {
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]int    `json:"attrs"`
	Next  *fuzzValue        `json:"next"`
	Any   any               `json:"any"`
	Raw   map[string][]byte `json:"raw"`
}

// FuzzStoredValue checks that whatever bytes sit in the store under a key,
// reading them through a Context never panics: the key either decodes or
// fails with ErrDecode naming it, and other keys stay readable.
func FuzzStoredValue(f *testing.F) {
	f.Add([]byte(`{"name":"x","tags":["a"],"attrs":{"a":1},"next":{"name":"y"}}`), false)
	f.Add([]byte(`{"name":`), false)
	f.Add([]byte{0x81, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x'}, true)
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, true)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte, packed bool) {
		b := newMemory(t, nil)
		c := codec.JSON
		if packed {
			c = msgpack.Codec
		}
		batch := backend.Batch{Codec: c.Name(), Ops: []backend.Op{{Key: "bad", Value: raw}, {Key: "good", Value: mustMarshal(t, c)}}}
		if _, err := b.Commit(ctx, "fuzz", batch); err != nil {
			t.Fatal(err)
		}
		cx := open[fuzzValue](t, b, "fuzz", &contextd.Options{Codec: c, ResyncInterval: -1})
		if _, _, err := cx.Get(ctx, "bad"); err != nil && !errors.Is(err, contextd.ErrDecode) {
			t.Fatalf("Get of fuzzed bytes = %v, want nil or ErrDecode", err)
		}
		if v, ok, err := cx.Get(ctx, "good"); err != nil || !ok || v.Name != "ok" {
			t.Fatalf("a good key next to fuzzed bytes: %+v, %v, %v", v, ok, err)
		}
		if _, err := cx.GetContext(ctx); err != nil && !errors.Is(err, contextd.ErrDecode) {
			t.Fatalf("GetContext = %v", err)
		}
	})
}

func mustMarshal(t *testing.T, c codec.Codec) []byte {
	b, err := c.Marshal(fuzzValue{Name: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
