package codec

import (
	"bytes"

	"github.com/vmihailenco/msgpack/v5"
)

// MsgPack encodes with MessagePack (github.com/vmihailenco/msgpack/v5):
// smaller and faster than JSON. Struct fields are named by their `msgpack`
// tag, else by their `json` tag, else by the field name, so a type tagged
// for JSON keeps its names under either codec.
var MsgPack Codec = msgpackCodec{}

type msgpackCodec struct{}

func (msgpackCodec) Name() string { return "msgpack" }

func (msgpackCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (msgpackCodec) Unmarshal(data []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	dec.SetCustomStructTag("json")
	return dec.Decode(v)
}
