// Package msgpack is the MessagePack codec for contextd, in a package of
// its own so that programs using only codec.JSON (or codec.Raw) do not link
// github.com/vmihailenco/msgpack/v5.
//
//	cx, err := contextd.New[User](b, "users", &contextd.Options{Codec: msgpack.Codec})
//
// Its name is "msgpack", as it was when the codec lived in package codec,
// so contexts written before the move open without ErrCodecMismatch.
package msgpack

import (
	"bytes"

	vmsgpack "github.com/vmihailenco/msgpack/v5"

	"github.com/contextd-go/contextd/codec"
)

// Codec encodes with MessagePack (github.com/vmihailenco/msgpack/v5):
// smaller and faster than JSON. Struct fields are named by their `msgpack`
// tag, else by their `json` tag, else by the field name, so a type tagged
// for JSON keeps its names under either codec. It is safe for concurrent
// use.
var Codec codec.Codec = msgpackCodec{}

type msgpackCodec struct{}

func (msgpackCodec) Name() string { return "msgpack" }

func (msgpackCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := vmsgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (msgpackCodec) Unmarshal(data []byte, v any) error {
	dec := vmsgpack.NewDecoder(bytes.NewReader(data))
	dec.SetCustomStructTag("json")
	return dec.Decode(v)
}
