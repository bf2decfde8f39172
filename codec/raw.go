package codec

import (
	"errors"
	"fmt"
	"reflect"
)

// ErrUnsupportedType is matched by the error of a codec asked to encode or
// decode a type it does not handle, such as Raw given anything but bytes.
var ErrUnsupportedType = errors.New("codec: unsupported type")

// Raw stores byte slices as they are, for a contextd.Context[[]byte]: no
// base64 and no quotes, as JSON would add, so other programs can read and
// write the values directly.
//
// Marshal accepts a []byte or a *[]byte (or a type whose underlying type is
// []byte, such as json.RawMessage, or a pointer to one) and returns the
// bytes themselves, not a copy. Unmarshal accepts a non-nil pointer to such
// a slice and stores a copy of data in it; empty data gives an empty,
// non-nil slice. Any other type gives an error matching ErrUnsupportedType
// that names the type.
var Raw Codec = rawCodec{}

type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case *[]byte:
		if b != nil {
			return *b, nil
		}
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && !rv.IsNil() {
			rv = rv.Elem()
		}
		if rv.IsValid() && isBytes(rv.Type()) {
			return rv.Bytes(), nil
		}
	}
	return nil, fmt.Errorf("codec: raw encodes []byte, not %s: %w", typeName(v), ErrUnsupportedType)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	cp := make([]byte, len(data))
	copy(cp, data)
	switch p := v.(type) {
	case *[]byte:
		if p != nil {
			*p = cp
			return nil
		}
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && !rv.IsNil() && isBytes(rv.Type().Elem()) {
			rv.Elem().SetBytes(cp)
			return nil
		}
	}
	return fmt.Errorf("codec: raw decodes into a non-nil *[]byte, not %s: %w", typeName(v), ErrUnsupportedType)
}

// isBytes reports whether t is a slice of bytes (possibly of a named type).
func isBytes(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8
}

// typeName names v's dynamic type for an error, with nil pointers called so.
func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.IsNil() {
		return fmt.Sprintf("nil %T", v)
	}
	return fmt.Sprintf("%T", v)
}
