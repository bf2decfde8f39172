package codec

import (
	"math"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// A direct encoder for the types Exact vouches for (booleans, integers,
// floats and strings, in arrays and structs of plainly named exported
// fields; see Exact), which writes the bytes encoding/json writes for
// them, byte for byte (TestJSONFastMatchesEncodingJSON, FuzzJSONFast),
// at a fraction of json.Marshal's cost: a plan of the type is made once,
// and a value is written field by field without json.Marshal's per-call
// set-up. Values it cannot write (NaN and infinities, which are errors)
// go to json.Marshal, which reports them.

// jsonFastFn appends the encoding of v; ok is false for a value only
// encoding/json can handle (it returns the error).
type jsonFastFn func(b []byte, v reflect.Value) (_ []byte, ok bool)

// jsonFast is the cached plan for one type: fn nil if the type has none.
type jsonFast struct {
	t   reflect.Type
	fn  jsonFastFn
	ptr bool // t is a pointer to the planned type
	// size is the length of the last encoding, the capacity the next one
	// starts with (up to jsonFastMaxHint): a type's values mostly encode
	// to about one size, so the result is one allocation of about its
	// size, as json.Marshal's.
	size atomic.Int64
}

// jsonFastMaxHint bounds the capacity an encoding starts with, so that
// one large value does not make the next small one allocate, zero and
// return a buffer of the large one's size. Larger encodings grow by
// append, which copies no more than json.Marshal's final copy does.
const jsonFastMaxHint = 4 << 10

var (
	jsonFastPlans sync.Map // reflect.Type → *jsonFast
	// jsonFastLast holds the two plans used last, the latest first: a
	// program mostly writes one or a few types, and comparing a type is
	// cheaper than a map lookup. Two, because contextd encodes a T in
	// UpdateContext and a *T in Set: a writer of both alternates.
	jsonFastLast [2]atomic.Pointer[jsonFast]
)

// marshalFast encodes v directly if its type has a plan; ok is false
// otherwise, and for values json.Marshal must see.
func marshalFast(v any) ([]byte, bool) {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil, false
	}
	plan := jsonFastLast[0].Load()
	if plan == nil || plan.t != t {
		if plan = jsonFastLast[1].Load(); plan == nil || plan.t != t {
			p, found := jsonFastPlans.Load(t)
			if !found {
				p, _ = jsonFastPlans.LoadOrStore(t, planJSONFast(t))
			}
			plan = p.(*jsonFast)
			// The older of the two makes room. (Racing writers may
			// leave any two plans here: each is right for its type.)
			jsonFastLast[1].Store(jsonFastLast[0].Load())
			jsonFastLast[0].Store(plan)
		}
	}
	if plan.fn == nil {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if plan.ptr {
		if rv.IsNil() {
			return nil, false
		}
		rv = rv.Elem()
	}
	hint := plan.size.Load()
	b, ok := plan.fn(make([]byte, 0, min(max(8, hint), jsonFastMaxHint)), rv)
	if !ok {
		return nil, false
	}
	if n := int64(len(b)); n != hint {
		// Store only on a change: goroutines writing one type would
		// otherwise all write this cache line on every encoding.
		plan.size.Store(n)
	}
	return b, true
}

// planJSONFast returns the plan for t (or a pointer to t).
func planJSONFast(t reflect.Type) *jsonFast {
	orig, ptr := t, false
	if t.Kind() == reflect.Pointer {
		t, ptr = t.Elem(), true
	}
	var s jsonScan
	if !s.exact(t, 0) {
		return &jsonFast{t: orig}
	}
	return &jsonFast{t: orig, fn: compileJSONFast(t), ptr: ptr}
}

// compileJSONFast returns the encoder of t, a type Exact vouches for.
func compileJSONFast(t reflect.Type) jsonFastFn {
	switch t.Kind() {
	case reflect.Bool:
		return func(b []byte, v reflect.Value) ([]byte, bool) {
			if v.Bool() {
				return append(b, "true"...), true
			}
			return append(b, "false"...), true
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(b []byte, v reflect.Value) ([]byte, bool) {
			return strconv.AppendInt(b, v.Int(), 10), true
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(b []byte, v reflect.Value) ([]byte, bool) {
			return strconv.AppendUint(b, v.Uint(), 10), true
		}
	case reflect.Float32:
		return func(b []byte, v reflect.Value) ([]byte, bool) { return appendJSONFloat(b, v.Float(), 32) }
	case reflect.Float64:
		return func(b []byte, v reflect.Value) ([]byte, bool) { return appendJSONFloat(b, v.Float(), 64) }
	case reflect.String:
		return func(b []byte, v reflect.Value) ([]byte, bool) { return appendJSONString(b, v.String()), true }
	case reflect.Array:
		elem, n := compileJSONFast(t.Elem()), t.Len()
		return func(b []byte, v reflect.Value) ([]byte, bool) {
			b = append(b, '[')
			for i := range n {
				if i > 0 {
					b = append(b, ',')
				}
				var ok bool
				if b, ok = elem(b, v.Index(i)); !ok {
					return b, false
				}
			}
			return append(b, ']'), true
		}
	case reflect.Struct:
		type field struct {
			name string // `"name":`
			omit bool   // omitempty
			enc  jsonFastFn
		}
		fields := make([]field, t.NumField())
		for i := range fields {
			f := t.Field(i)
			name, _ := plainName(f) // Exact checked it
			_, opts, _ := cutComma(f.Tag.Get("json"))
			fields[i] = field{name: `"` + name + `":`, omit: opts == "omitempty", enc: compileJSONFast(f.Type)}
		}
		return func(b []byte, v reflect.Value) ([]byte, bool) {
			b = append(b, '{')
			first := true
			for i := range fields {
				f := &fields[i]
				fv := v.Field(i)
				if f.omit && emptyJSON(fv) {
					continue
				}
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, f.name...)
				var ok bool
				if b, ok = f.enc(b, fv); !ok {
					return b, false
				}
			}
			return append(b, '}'), true
		}
	}
	panic("codec: no fast JSON encoder for " + t.String()) // Exact refuses every other kind
}

// emptyJSON is encoding/json's test for omitempty, for the kinds Exact
// allows it on (not floats): a struct is never empty.
func emptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint() == 0
	case reflect.String, reflect.Array:
		return v.Len() == 0
	}
	return false
}

// appendJSONFloat writes f as encoding/json does: the shortest form that
// reads back as the same float of its size, in exponent form below 1e-6
// and from 1e21 on, with a one-digit negative exponent unpadded. NaN and
// infinities are not written (ok false).
func appendJSONFloat(b []byte, f float64, bits int) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// e-09 → e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

// appendJSONString writes s quoted as encoding/json does by default:
// with <, > and & escaped for HTML, U+2028 and U+2029 escaped, and each
// byte of invalid UTF-8 replaced by U+FFFD, escaped or not as
// encoding/json writes it (jsonReplacement).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, jsonReplacement...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"
