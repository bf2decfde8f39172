package msgpack_test

import (
	"reflect"
	"testing"

	"github.com/contextd-go/contextd/codec/msgpack"
)

type user struct {
	Name   string            `json:"name"`
	Email  string            `json:"email,omitempty"`
	Tags   []string          `json:"tags"`
	Scores map[string]int    `json:"scores"`
	Next   *user             `json:"next"`
	Extra  map[string]string `msgpack:"x" json:"extra"`
	Blob   []byte            `json:"blob"`
}

func TestRoundTrip(t *testing.T) {
	in := user{
		Name: "Jane", Tags: []string{"a"}, Scores: map[string]int{"go": 9},
		Next: &user{Name: "John"}, Extra: map[string]string{"k": "v"}, Blob: []byte{0, 0xff},
	}
	b, err := msgpack.Codec.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out user
	if err := msgpack.Codec.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v != %+v", out, in)
	}
	for _, v := range []any{42, "text", true, []int{1, 2}, map[string]any{"a": "b"}} {
		b, err := msgpack.Codec.Marshal(v)
		if err != nil {
			t.Fatalf("Marshal(%v): %v", v, err)
		}
		got := reflect.New(reflect.TypeOf(v))
		if err := msgpack.Codec.Unmarshal(b, got.Interface()); err != nil || !reflect.DeepEqual(got.Elem().Interface(), v) {
			t.Errorf("round trip of %#v = %#v, %v", v, got.Elem().Interface(), err)
		}
	}
}

func TestErrors(t *testing.T) {
	var out user
	if err := msgpack.Codec.Unmarshal([]byte{0xc1, '{'}, &out); err == nil {
		t.Error("garbage decoded without error")
	}
	if err := msgpack.Codec.Unmarshal([]byte{0x81, 0xa4, 'n', 'a'}, &out); err == nil {
		t.Error("a truncated map decoded without error")
	}
	var n int
	if err := msgpack.Codec.Unmarshal([]byte{0xa1, 'x'}, &n); err == nil {
		t.Error("a string decoded into an int without error")
	}
	if err := msgpack.Codec.Unmarshal([]byte{0x01}, n); err == nil {
		t.Error("decoding into a non-pointer gave no error")
	}
	if _, err := msgpack.Codec.Marshal(make(chan int)); err == nil {
		t.Error("a channel encoded without error")
	}
}

// The name is recorded in stores: it is the one the codec had when it lived
// in package codec, so existing contexts still open.
func TestName(t *testing.T) {
	if msgpack.Codec.Name() != "msgpack" {
		t.Fatalf("Name = %q, want msgpack", msgpack.Codec.Name())
	}
}

// MsgPack names fields by their json tag when they have no msgpack tag, so
// a type tagged for JSON keeps its field names under either codec.
func TestUsesJSONTags(t *testing.T) {
	b, err := msgpack.Codec.Marshal(user{Name: "Jane", Extra: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := msgpack.Codec.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if _, ok := generic["name"]; !ok {
		t.Errorf("json tag not used: %v", generic)
	}
	if _, ok := generic["x"]; !ok {
		t.Errorf("msgpack tag not preferred: %v", generic)
	}
}

// FuzzUnmarshal checks that no input makes decoding panic, and that what
// decodes encodes again into something that decodes to the same value.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte{0x81, 0xa4, 'n', 'a', 'm', 'e', 0xa1, 'x'})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xc1})
	f.Add([]byte{0x92, 0x01, 0xc0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var u user
		if err := msgpack.Codec.Unmarshal(data, &u); err != nil {
			return
		}
		b, err := msgpack.Codec.Marshal(u)
		if err != nil {
			t.Fatalf("a decoded value does not encode: %+v: %v", u, err)
		}
		var again user
		if err := msgpack.Codec.Unmarshal(b, &again); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalize(u), normalize(again)) {
			t.Fatalf("decode(encode(%+v)) = %+v", u, again)
		}
	})
}

// normalize makes empty and nil collections equal, as MessagePack encodes
// both as nil or empty depending on the decoder's choices.
func normalize(u user) user {
	if len(u.Tags) == 0 {
		u.Tags = nil
	}
	if len(u.Scores) == 0 {
		u.Scores = nil
	}
	if len(u.Extra) == 0 {
		u.Extra = nil
	}
	if len(u.Blob) == 0 {
		u.Blob = nil
	}
	if u.Next != nil {
		n := normalize(*u.Next)
		u.Next = &n
	}
	return u
}
