package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	vmsgpack "github.com/vmihailenco/msgpack/v5"
)

// value is what the tool stores and reads under every codec: JSON text
// with the json and msgpack codecs, the bytes themselves with raw.
//
//   - codec.JSON calls MarshalJSON/UnmarshalJSON, so the stored bytes are
//     the JSON text (compacted by encoding/json);
//   - codec.Raw takes a type whose underlying type is []byte as bytes;
//   - msgpack calls EncodeMsgpack/DecodeMsgpack, which turn the JSON text
//     into MessagePack values and back, so programs that use the msgpack
//     codec with their own types read what the tool writes.
type value []byte

// MarshalJSON returns the JSON text itself.
func (v value) MarshalJSON() ([]byte, error) {
	if len(v) == 0 {
		return []byte("null"), nil
	}
	return v, nil
}

// UnmarshalJSON keeps a copy of the JSON text.
func (v *value) UnmarshalJSON(b []byte) error {
	*v = append((*v)[:0:0], b...)
	return nil
}

// EncodeMsgpack encodes the JSON text as MessagePack: objects as maps,
// arrays as arrays, integral numbers as integers, others as floats.
func (v value) EncodeMsgpack(enc *vmsgpack.Encoder) error {
	x, err := decodeJSON(v)
	if err != nil {
		return err
	}
	return enc.Encode(x)
}

// DecodeMsgpack decodes MessagePack into JSON text. Binary strings become
// base64 JSON strings (as encoding/json writes []byte); maps with keys
// that are not strings give an error.
func (v *value) DecodeMsgpack(dec *vmsgpack.Decoder) error {
	x, err := dec.DecodeInterface()
	if err != nil {
		return err
	}
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Errorf("a MessagePack value that has no JSON form: %w", err)
	}
	*v = b
	return nil
}

// decodeJSON parses JSON text with numbers kept exact: an integral number
// becomes an int64 (or uint64), others a float64.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return nil, err
	}
	return numbers(x), nil
}

func numbers(x any) any {
	switch t := x.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return u
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = numbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = numbers(e)
		}
	}
	return x
}

// isRaw reports whether values are bytes rather than JSON.
func (g *globals) isRaw() bool { return g.codec == "raw" }

// parseValue turns a command-line or stdin value into a value: with the
// raw codec the bytes as they are, else JSON text, checked.
func (g *globals) parseValue(b []byte) (value, error) {
	if g.isRaw() {
		return value(b), nil
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, withCode(exitBadValue, fmt.Errorf("value %s is not JSON (quote a string: '\"text\"', use --string, or --codec raw for bytes)", abbrev(b)))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, withCode(exitBadValue, err)
	}
	return value(buf.Bytes()), nil
}

// abbrev quotes the start of b for an error message.
func abbrev(b []byte) string {
	if len(b) > 40 {
		return strconv.Quote(string(b[:40])) + "..."
	}
	return strconv.Quote(string(b))
}

// text is a value as printed for people: the JSON text, or the bytes.
func (g *globals) text(v value) []byte { return v }

// record is one key as --json output, export and import write it. Value is
// the JSON value (json, msgpack) or, with raw, a JSON string of the bytes
// when they are UTF-8; other bytes go in ValueBase64.
type record struct {
	Key         string          `json:"key"`
	Value       json.RawMessage `json:"value,omitempty"`
	ValueBase64 string          `json:"value_base64,omitempty"`
	Revision    uint64          `json:"revision,omitempty"`
	Expires     *time.Time      `json:"expires,omitempty"`
}

// fill sets r's value fields from v.
func (g *globals) fill(r *record, v value) {
	if !g.isRaw() {
		r.Value = json.RawMessage(v)
		if len(v) == 0 {
			r.Value = json.RawMessage("null")
		}
		return
	}
	if utf8.Valid(v) {
		r.Value, _ = json.Marshal(string(v))
		return
	}
	r.ValueBase64 = base64.StdEncoding.EncodeToString(v)
}

// valueOf returns r's value, checked against the codec.
func (g *globals) valueOf(r record) (value, error) {
	switch {
	case r.ValueBase64 != "" && r.Value != nil:
		return nil, fmt.Errorf("key %q has both value and value_base64", r.Key)
	case r.ValueBase64 != "":
		if !g.isRaw() {
			return nil, fmt.Errorf("key %q: value_base64 needs --codec raw", r.Key)
		}
		b, err := base64.StdEncoding.DecodeString(r.ValueBase64)
		if err != nil {
			return nil, fmt.Errorf("key %q: value_base64: %w", r.Key, err)
		}
		return value(b), nil
	case r.Value == nil:
		return nil, fmt.Errorf("key %q has no value", r.Key)
	case g.isRaw():
		var s string
		if err := json.Unmarshal(r.Value, &s); err != nil {
			return nil, fmt.Errorf("key %q: with --codec raw, value must be a JSON string (or use value_base64)", r.Key)
		}
		return value(s), nil
	}
	return g.parseValue(r.Value)
}

// expiresPtr returns nil for the zero time.
func expiresPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// printJSON writes x as one line of JSON.
func (g *globals) printJSON(x any) error {
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	_, err = g.stdout.Write(append(b, '\n'))
	return err
}

// expiresText shows an expiry for people: "-" for none, else the time and
// what is left.
func expiresText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (in %v)", t.UTC().Format(time.RFC3339), time.Until(t).Round(time.Second))
}
