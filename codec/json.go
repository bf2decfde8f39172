package codec

import "encoding/json"

// JSON encodes with encoding/json. It is the default codec: readable in
// redis-cli and compatible with the original library's stored values.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Name() string { return "json" }

// Marshal encodes v as json.Marshal does. Values of the types Exact
// vouches for (and pointers to them) are written by a direct encoder
// (jsonfast.go) that gives the same bytes at a fraction of the cost.
func (jsonCodec) Marshal(v any) ([]byte, error) {
	if b, ok := marshalFast(v); ok {
		return b, nil
	}
	return json.Marshal(v)
}

func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
