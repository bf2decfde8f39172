package codec_test

import (
	"reflect"
	"testing"

	"github.com/contextd-go/contextd/codec"
)

type user struct {
	Name   string            `json:"name"`
	Email  string            `json:"email,omitempty"`
	Tags   []string          `json:"tags"`
	Scores map[string]int    `json:"scores"`
	Next   *user             `json:"next"`
	Extra  map[string]string `msgpack:"x" json:"extra"`
}

func TestRoundTrip(t *testing.T) {
	in := user{Name: "Jane", Tags: []string{"a"}, Scores: map[string]int{"go": 9}, Next: &user{Name: "John"}, Extra: map[string]string{"k": "v"}}
	for _, c := range []codec.Codec{codec.JSON, codec.MsgPack} {
		t.Run(c.Name(), func(t *testing.T) {
			b, err := c.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var out user
			if err := c.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip: %+v != %+v", out, in)
			}
			if err := c.Unmarshal([]byte{0xc1, '{'}, &out); err == nil {
				t.Error("garbage decoded without error")
			}
			if _, err := c.Marshal(make(chan int)); err == nil {
				t.Error("a channel encoded without error")
			}
		})
	}
}

func TestNames(t *testing.T) {
	if codec.JSON.Name() != "json" || codec.MsgPack.Name() != "msgpack" {
		t.Fatal("codec names are recorded in stores and must not change")
	}
}

// MsgPack names fields by their json tag when they have no msgpack tag, so
// a type tagged for JSON keeps its field names under either codec.
func TestMsgPackUsesJSONTags(t *testing.T) {
	b, err := codec.MsgPack.Marshal(user{Name: "Jane", Extra: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := codec.MsgPack.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if _, ok := generic["name"]; !ok {
		t.Errorf("json tag not used: %v", generic)
	}
	if _, ok := generic["x"]; !ok {
		t.Errorf("msgpack tag not preferred: %v", generic)
	}
}
