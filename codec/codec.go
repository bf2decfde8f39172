// Package codec turns the values of a contextd.Context into bytes and back.
//
// A Codec has a Name, which contextd records with the context the first time
// it writes: an instance whose codec has another name then fails to
// initialize (ErrCodecMismatch) instead of misreading the data.
//
// This package has JSON (the default) and Raw (byte slices stored as they
// are). MessagePack lives in package codec/msgpack, so that programs which
// do not use it do not link its library.
package codec

// Codec encodes and decodes values. Implementations must be safe for
// concurrent use.
type Codec interface {
	// Name identifies the encoding; it is stored with the context.
	Name() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into the value v points to.
	Unmarshal(data []byte, v any) error
}
