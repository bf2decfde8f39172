package contextd_test

import (
	"context"
	"encoding/json"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/contextd"
)

// exactCodec is JSON that counts its decodes and, if vouch is set, passes
// on JSON's codec.Exact.
type exactCodec struct {
	vouch   bool
	decoded atomic.Int64
}

func (c *exactCodec) Name() string                  { return "json" }
func (c *exactCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }
func (c *exactCodec) Unmarshal(data []byte, v any) error {
	c.decoded.Add(1)
	return json.Unmarshal(data, v)
}

// Exact passes JSON's on only if c vouches.
func (c *exactCodec) Exact(t reflect.Type) func([]byte) bool {
	if !c.vouch {
		return nil
	}
	return codec.JSON.(codec.Exact).Exact(t)
}

type (
	exactValue struct {
		N int
		S string
	}
	droppedField struct {
		X int
		Y int `json:"-"`
	}
	hiddenField struct {
		X int
		y int
	}
	// upper encodes its string in capitals.
	upper struct{ S string }
)

func (u upper) MarshalJSON() ([]byte, error) {
	b := []byte(u.S)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return json.Marshal(map[string]string{"S": string(b)})
}

// checkCopy writes v with UpdateContext and with Modify on a writer whose
// codec counts decodes, and checks that the writer's copy holds what
// another instance decodes, want, and that the writer decoded the value
// decodes times per write.
func checkCopy[T comparable](t *testing.T, vouch bool, v, want T, decodes int64) {
	t.Helper()
	ctx := context.Background()
	b := newMemory(t, nil)
	cdc := &exactCodec{vouch: vouch}
	w := open[T](t, b, "exact", &contextd.Options{Codec: cdc})
	r := open[T](t, b, "exact", &contextd.Options{Codec: &exactCodec{}})
	before := cdc.decoded.Load()
	if err := w.UpdateContext(ctx, "k", v); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Modify(ctx, "m", func(T, bool) (T, error) { return v, nil }); err != nil {
		t.Fatal(err)
	}
	if got := cdc.decoded.Load() - before; got != 2*decodes {
		t.Errorf("the writer decoded %d times for 2 writes, want %d", got, 2*decodes)
	}
	eventually(t, "the reader has both writes", func() bool { return r.Revision() >= w.Revision() })
	for _, key := range []string{"k", "m"} {
		got, _, err := w.Get(ctx, key)
		if err != nil || got != want {
			t.Errorf("writer: Get(%s) = %+v, %v; want %+v", key, got, err, want)
		}
		if other, _, err := r.Get(ctx, key); err != nil || other != got {
			t.Errorf("reader: Get(%s) = %+v, %v; the writer holds %+v", key, other, err, got)
		}
	}
}

// TestCopyHoldsWhatOthersDecode: a writer's copy holds what other instances
// decode, also for values the codec does not round-trip; it skips the
// decode only where the codec vouches for the value (codec.Exact).
func TestCopyHoldsWhatOthersDecode(t *testing.T) {
	t.Run("exact", func(t *testing.T) {
		v := exactValue{N: 7, S: "<é>"}
		checkCopy(t, true, v, v, 0)
	})
	t.Run("exact type, invalid UTF-8", func(t *testing.T) {
		checkCopy(t, true, exactValue{S: "a\xffb"}, exactValue{S: "a\uFFFDb"}, 1)
	})
	t.Run("codec does not vouch", func(t *testing.T) {
		v := exactValue{N: 7, S: "x"}
		checkCopy(t, false, v, v, 1)
	})
	t.Run("json dash", func(t *testing.T) {
		checkCopy(t, true, droppedField{X: 1, Y: 2}, droppedField{X: 1}, 1)
	})
	t.Run("unexported", func(t *testing.T) {
		checkCopy(t, true, hiddenField{X: 1, y: 2}, hiddenField{X: 1}, 1)
	})
	t.Run("custom marshaler", func(t *testing.T) {
		checkCopy(t, true, upper{S: "abc"}, upper{S: "ABC"}, 1)
	})
}
