package codec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/contextd"
)

// rawValues are byte strings that JSON would not store as they are.
var rawValues = map[string][]byte{
	"empty":   {},
	"text":    []byte("hello, world"),
	"binary":  {0x00, 0xff, 0xfe, 0x80, 0xc1, '"', '\\', 0x00},
	"invalid": []byte("caf\xe9 \xed\xa0\x80"), // Latin-1 é and a UTF-16 surrogate: not UTF-8
	"large":   bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64<<10),
}

func TestRawRoundTrip(t *testing.T) {
	for name, in := range rawValues {
		t.Run(name, func(t *testing.T) {
			for _, arg := range []any{in, &in} {
				b, err := codec.Raw.Marshal(arg)
				if err != nil {
					t.Fatalf("Marshal(%T): %v", arg, err)
				}
				if !bytes.Equal(b, in) {
					t.Fatalf("Marshal(%T) changed the bytes: %q, want %q", arg, b, in)
				}
			}
			data := bytes.Clone(in)
			var out []byte
			if err := codec.Raw.Unmarshal(data, &out); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !bytes.Equal(out, in) || out == nil {
				t.Fatalf("Unmarshal = %q (nil: %v), want %q", out, out == nil, in)
			}
			if len(data) > 0 {
				data[0] ^= 0xff
				if out[0] != in[0] {
					t.Fatal("Unmarshal's result shares memory with data; it must be a copy")
				}
			}
		})
	}
}

type blob []byte

// Types whose underlying type is []byte work too, through reflection.
func TestRawNamedByteTypes(t *testing.T) {
	in := blob("\xffblob")
	for _, arg := range []any{in, &in, json.RawMessage(in)} {
		b, err := codec.Raw.Marshal(arg)
		if err != nil || !bytes.Equal(b, in) {
			t.Errorf("Marshal(%T) = %q, %v; want %q", arg, b, err, in)
		}
	}
	var out blob
	if err := codec.Raw.Unmarshal(in, &out); err != nil || !bytes.Equal(out, in) {
		t.Errorf("Unmarshal into *blob = %q, %v; want %q", out, err, in)
	}
	var msg json.RawMessage
	if err := codec.Raw.Unmarshal(in, &msg); err != nil || !bytes.Equal(msg, in) {
		t.Errorf("Unmarshal into *json.RawMessage = %q, %v; want %q", msg, err, in)
	}
}

// Anything but bytes is an error naming the type and matching
// ErrUnsupportedType, never a panic.
func TestRawUnsupportedTypes(t *testing.T) {
	var (
		nilBytes *[]byte
		nilBlob  *blob
		s        = "text"
		arr      = [3]byte{1, 2, 3}
		bs       = []byte("x")
	)
	marshal := []struct {
		v    any
		name string
	}{
		{nil, "nil"},
		{"text", "string"},
		{42, "int"},
		{user{Name: "Jane"}, "codec_test.user"},
		{nilBytes, "nil *[]uint8"},
		{nilBlob, "nil *codec_test.blob"},
		{&s, "*string"},
		{arr, "[3]uint8"},
		{[]int{1}, "[]int"},
		{make(chan int), "chan int"},
		{&bs, ""}, // sanity: a valid one in the middle
	}
	for _, c := range marshal {
		b, err := codec.Raw.Marshal(c.v)
		if c.name == "" {
			if err != nil {
				t.Errorf("Marshal(%T) = %v", c.v, err)
			}
			continue
		}
		if !errors.Is(err, codec.ErrUnsupportedType) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("Marshal(%s) = %q, %v; want an error matching ErrUnsupportedType that names %s", c.name, b, err, c.name)
		}
	}
	var (
		notPtr []byte
		str    string
		ptrPtr *[]byte
		arrOut [3]byte
	)
	unmarshal := []struct {
		v    any
		name string
	}{
		{nil, "nil"},
		{notPtr, "[]uint8"},
		{nilBytes, "nil *[]uint8"},
		{nilBlob, "nil *codec_test.blob"},
		{&str, "*string"},
		{&ptrPtr, "**[]uint8"},
		{&arrOut, "*[3]uint8"},
		{new(any), "*interface {}"},
	}
	for _, c := range unmarshal {
		if err := codec.Raw.Unmarshal([]byte("x"), c.v); !errors.Is(err, codec.ErrUnsupportedType) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("Unmarshal into %s = %v; want an error matching ErrUnsupportedType that names %s", c.name, err, c.name)
		}
	}
}

func FuzzRaw(f *testing.F) {
	for _, v := range rawValues {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out []byte
		if err := codec.Raw.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		b, err := codec.Raw.Marshal(out)
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("round trip of %q = %q, %v", data, b, err)
		}
	})
}

// TestRawContext stores bytes through a contextd.Context[[]byte]: another
// instance reads them back byte for byte, and the store holds exactly the
// value's bytes.
func TestRawContext(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	writer := openContext[[]byte](t, b, "blobs", codec.Raw)
	reader := openContext[[]byte](t, b, "blobs", codec.Raw)

	for key, v := range rawValues {
		if err := writer.UpdateContext(ctx, key, v); err != nil {
			t.Fatalf("UpdateContext(%q): %v", key, err)
		}
	}
	if err := writer.UpdateContext(ctx, "nil", nil); err != nil {
		t.Fatalf("UpdateContext of a nil slice: %v", err)
	}
	if err := reader.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := reader.GetContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(rawValues)+1 {
		t.Errorf("GetContext holds %d keys, want %d", len(all), len(rawValues)+1)
	}
	for key, want := range rawValues {
		got, ok, err := reader.Get(ctx, key)
		if err != nil || !ok || !bytes.Equal(got, want) {
			t.Errorf("Get(%q) = %q, %v, %v; want %q", key, got, ok, err, want)
		}
		if !bytes.Equal(all[key], want) {
			t.Errorf("GetContext()[%q] = %q, want %q", key, all[key], want)
		}
		stored, err := b.Get(ctx, "blobs", key)
		if err != nil || !bytes.Equal(stored.Value, want) {
			t.Errorf("stored bytes of %q = %q, %v; want the value itself", key, stored.Value, err)
		}
	}
	if got, ok, err := reader.Get(ctx, "nil"); err != nil || !ok || len(got) != 0 {
		t.Errorf("Get of a key written as nil = %q, %v, %v; want an empty value", got, ok, err)
	}
	if got, ok, err := reader.Get(ctx, "binary", contextd.Fresh()); err != nil || !ok || !bytes.Equal(got, rawValues["binary"]) {
		t.Errorf("Fresh Get = %q, %v, %v", got, ok, err)
	}
}

// A context written with JSON refuses an instance with Raw, and the other
// way round, since the stored bytes mean different things.
func TestRawCodecMismatch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	jsonWriter := openContext[[]byte](t, b, "as_json", nil)
	if err := jsonWriter.UpdateContext(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	rawWriter := openContext[[]byte](t, b, "as_raw", codec.Raw)
	if err := rawWriter.UpdateContext(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		codec codec.Codec
	}{{"as_json", codec.Raw}, {"as_raw", codec.JSON}} {
		cx, err := contextd.New[[]byte](b, c.name, &contextd.Options{Codec: c.codec})
		if err != nil {
			t.Fatal(err)
		}
		if err := cx.Initialize(ctx); !errors.Is(err, contextd.ErrCodecMismatch) {
			t.Errorf("Initialize of %s with %s = %v, want ErrCodecMismatch", c.name, c.codec.Name(), err)
		}
		_ = cx.Close()
	}
}

// A Context of another type than []byte cannot use Raw: writes fail with
// an error naming the type and store nothing.
func TestRawContextOfOtherType(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	cx := openContext[string](t, b, "strings", codec.Raw)
	err := cx.UpdateContext(ctx, "k", "text")
	if !errors.Is(err, codec.ErrUnsupportedType) || !strings.Contains(err.Error(), "string") {
		t.Fatalf("UpdateContext of a string with Raw = %v, want an error matching ErrUnsupportedType naming string", err)
	}
	if head, err := b.Revision(ctx, "strings"); err != nil || head.Revision != 0 {
		t.Fatalf("after the refused write the store is at %+v, %v; want nothing written", head, err)
	}
}

// openContext returns an initialized Context closed when the test ends; a
// nil codec means the default.
func openContext[T any](t *testing.T, b *memory.Backend, name string, c codec.Codec) *contextd.Context[T] {
	t.Helper()
	cx, err := contextd.New[T](b, name, &contextd.Options{Codec: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cx.Close() })
	if err := cx.Initialize(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cx
}

// newBackend returns a memory backend closed when the test ends, after the
// Contexts opened on it.
func newBackend(t *testing.T) *memory.Backend {
	b := memory.New(nil)
	t.Cleanup(func() { _ = b.Close() })
	return b
}
