package codec

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// Exact is an optional interface of a Codec: one that implements it can
// vouch that, for some types, decoding what it encoded gives back exactly
// the value it encoded. contextd keeps such a value as it was written
// instead of decoding the encoded bytes again for its local copy, which
// spares a decode per write. (The copy then shares the written value's
// strings, which are immutable, where a decode would have made its own.)
//
// Implement it only where it holds for every value: a codec that drops
// fields (unexported ones, `json:"-"`), transforms values (custom
// marshalers, lossy numbers) or shares memory between the written value
// and its encoding must return nil for such types.
type Exact interface {
	// Exact returns, for values of type t, a function that reports whether
	// data, which Marshal returned for a value v of type t, decodes into a
	// zero t as a value equal to v in every bit; or nil if the codec cannot
	// vouch for values of t (then contextd decodes every value). The
	// function is called once per written value and must be safe for
	// concurrent use.
	Exact(t reflect.Type) func(data []byte) bool
}

// Exact vouches for types made only of booleans, integers, floats and
// strings, in arrays and structs of exported fields: no pointers, slices,
// maps or interfaces (whose memory the written value and the copy would
// share, or that decode into other types), no embedded or unexported
// fields, no field options but a plain name and omitempty (not on floats:
// it would drop -0), no two fields
// whose names differ only in case, and no type with its own JSON or text
// (un)marshalling methods, nor json.Number. encoding/json writes such
// values so that they decode bit for bit, floats included (shortest
// round-tripping form; NaN and infinities do not encode at all), except
// one thing: it replaces invalid UTF-8 in strings by U+FFFD. So for types
// with strings the function reports false when the encoding holds U+FFFD,
// raw or escaped, in any string (a few exact values are decoded for
// nothing: those that hold U+FFFD or the text \ufffd themselves).
func (jsonCodec) Exact(t reflect.Type) func(data []byte) bool {
	var s jsonScan
	if !s.exact(t, 0) {
		return nil
	}
	if !s.strings {
		return always
	}
	return noReplacement
}

var _ Exact = jsonCodec{}

func always([]byte) bool { return true }

// noReplacement reports whether data holds no U+FFFD: neither its UTF-8
// bytes nor a \u escape of it in any case.
func noReplacement(data []byte) bool {
	if bytes.Contains(data, []byte("\uFFFD")) {
		return false
	}
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte(`\u`))
		if j < 0 {
			return true
		}
		i += j + 2
		if len(data)-i >= 4 && bytes.EqualFold(data[i:i+4], []byte("fffd")) {
			return false
		}
	}
}

// jsonScan checks a type for Exact.
type jsonScan struct {
	strings bool // the type holds strings
}

// maxDepth bounds the nesting of arrays and structs that Exact examines.
const maxDepth = 32

var (
	numberType = reflect.TypeFor[json.Number]()
	// custom are the methods through which encoding/json (v1, and v2 when
	// it backs v1) lets a type encode or decode itself.
	custom = []string{"MarshalJSON", "UnmarshalJSON", "MarshalText", "UnmarshalText", "AppendText", "MarshalJSONTo", "UnmarshalJSONFrom"}
)

func (s *jsonScan) exact(t reflect.Type, depth int) bool {
	if depth > maxDepth || t == numberType {
		return false
	}
	for _, m := range custom {
		if _, ok := t.MethodByName(m); ok {
			return false
		}
		if _, ok := reflect.PointerTo(t).MethodByName(m); ok {
			return false
		}
	}
	switch t.Kind() {
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	case reflect.String:
		s.strings = true
		return true
	case reflect.Array:
		return s.exact(t.Elem(), depth+1)
	case reflect.Struct:
		seen := make(map[string]bool, t.NumField())
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Anonymous {
				return false
			}
			name, ok := plainName(f)
			if !ok {
				return false
			}
			folded := asciiLower(name)
			if seen[folded] {
				return false
			}
			seen[folded] = true
			if !s.exact(f.Type, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

// plainName returns the JSON name of field f if its tag is absent, or a
// name of ASCII letters, digits and underscores optionally followed by
// ",omitempty" (except on floats); ok is false for anything else.
func plainName(f reflect.StructField) (string, bool) {
	tag, tagged := f.Tag.Lookup("json")
	name := f.Name
	if tagged {
		n, opts, hasOpts := cutComma(tag)
		if hasOpts && opts != "omitempty" {
			return "", false
		}
		if k := f.Type.Kind(); hasOpts && (k == reflect.Float32 || k == reflect.Float64) {
			// omitempty drops -0 (it equals 0), which decodes as +0.
			return "", false
		}
		if n != "" {
			name = n
		}
	}
	if !plainIdent(name) {
		return "", false
	}
	return name, true
}

func cutComma(s string) (before, after string, found bool) {
	for i := range len(s) {
		if s[i] == ',' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func plainIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
