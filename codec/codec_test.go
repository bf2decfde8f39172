package codec_test

import (
	"reflect"
	"testing"

	"github.com/contextd-go/contextd/codec"
)

type user struct {
	Name   string         `json:"name"`
	Email  string         `json:"email,omitempty"`
	Tags   []string       `json:"tags"`
	Scores map[string]int `json:"scores"`
	Next   *user          `json:"next"`
}

func TestJSONRoundTrip(t *testing.T) {
	in := user{Name: "Jane", Tags: []string{"a"}, Scores: map[string]int{"go": 9}, Next: &user{Name: "John"}}
	b, err := codec.JSON.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out user
	if err := codec.JSON.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v != %+v", out, in)
	}
	if err := codec.JSON.Unmarshal([]byte{0xc1, '{'}, &out); err == nil {
		t.Error("garbage decoded without error")
	}
	if _, err := codec.JSON.Marshal(make(chan int)); err == nil {
		t.Error("a channel encoded without error")
	}
}

func TestNames(t *testing.T) {
	if codec.JSON.Name() != "json" || codec.Raw.Name() != "raw" {
		t.Fatal("codec names are recorded in stores and must not change")
	}
}
