package contextd

import (
	"context"
	"errors"
	"fmt"
)

// Get returns the value of key from the local copy, and whether the key
// exists. It costs no round trip and, for a T without pointers, no
// allocation.
//
// With Fresh() it reads the store instead: a linearizable read. A value that
// cannot be decoded gives an error matching ErrDecode that names the key.
// With Options.FailClosed it returns ErrStale while the copy may be out of
// date.
func (c *Context[T]) Get(ctx context.Context, key string, opts ...ReadOption) (T, bool, error) {
	var zero T
	if err := c.usable(); err != nil {
		return zero, false, c.errorf("get %q", err, key)
	}
	if err := ctx.Err(); err != nil {
		return zero, false, c.errorf("get %q", err, key)
	}
	if key == "" {
		return zero, false, c.errorf("get", errEmptyKey)
	}
	// Options are looked at only when given: passing a local to an
	// unknown function would move it to the heap on every call.
	if len(opts) > 0 && readOpts(opts).fresh {
		return c.getFresh(ctx, key)
	}
	e, ok := c.cache.current().entries.Get(key)
	if stale := c.cache.staleness(); stale != nil && c.opts.FailClosed {
		return zero, false, c.errorf("get %q", staleError(stale), key)
	}
	if !ok || e.deleted() {
		return zero, false, nil
	}
	if err := e.err(); err != nil {
		return zero, false, c.errorf("get %q", err, key)
	}
	return e.value, true, nil
}

func readOpts(opts []ReadOption) readOptions {
	var ro readOptions
	for _, o := range opts {
		o(&ro)
	}
	return ro
}

func (c *Context[T]) getFresh(ctx context.Context, key string) (T, bool, error) {
	e, ok, err := c.freshEntry(ctx, key)
	return e.Value, ok, err
}

func staleError(cause error) error {
	return fmt.Errorf("%w: %w", ErrStale, cause)
}

// GetContext returns a copy of the whole context from the local copy (the
// original's getContext). The map is new, but values that hold maps, slices
// or pointers share memory with the copy: treat them as read-only.
//
// If some values cannot be decoded, GetContext returns the others together
// with an error matching ErrDecode that names those keys.
func (c *Context[T]) GetContext(ctx context.Context) (map[string]T, error) {
	if err := c.usable(); err != nil {
		return nil, c.errorf("get context", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, c.errorf("get context", err)
	}
	if stale := c.cache.staleness(); stale != nil && c.opts.FailClosed {
		return nil, c.errorf("get context", staleError(stale))
	}
	// One view, read without a lock: writers go on meanwhile.
	v := c.cache.current()
	out := make(map[string]T, v.live)
	var errs []error
	for k, e := range v.entries.All() {
		switch {
		case e.deleted():
		case e.err() != nil:
			errs = append(errs, e.err())
		default:
			out[k] = e.value
		}
	}
	if len(errs) > 0 {
		return out, c.errorf("get context", errors.Join(errs...))
	}
	return out, nil
}

// Sync loads a fresh snapshot of the store into the local copy. Reads after
// Sync returns see at least every write that completed before Sync was
// called (a linearizable read point).
func (c *Context[T]) Sync(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return c.errorf("sync", err)
	}
	if err := c.catchUp(ctx, viaSnapshot); err != nil {
		return c.errorf("sync", err)
	}
	return nil
}

// damaged is the error of reads of a key the store holds without a valid
// revision (backend.Entry with Revision 0).
func damaged(key string) error {
	return fmt.Errorf("key %q: stored without a valid revision (written by another program?): %w", key, ErrCorrupt)
}

// errEmptyKey is the error of an operation on key "".
var errEmptyKey = invalid("empty key")

// invalid returns an error matching ErrInvalid that says what was wrong.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// decode turns stored bytes into a T; its error names the key and matches
// ErrDecode.
func (c *Context[T]) decode(key string, b []byte) (T, error) {
	var v T
	if err := c.opts.Codec.Unmarshal(b, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("key %q: %w: %s: %w", key, ErrDecode, c.opts.Codec.Name(), err)
	}
	return v, nil
}

// local returns what the copy holds for v, written as b: what other
// instances decode from b, which is v itself where the codec vouches for
// it (codec.Exact), and otherwise b decoded, since the copy must not hold
// what the codec drops or changes, nor memory the caller may go on
// changing.
func (c *Context[T]) local(key string, v T, b []byte) (T, error) {
	if c.exact != nil && c.exact(b) {
		return v, nil
	}
	return c.decode(key, b)
}

// encode turns a T into bytes (v is a T, or a *T where marshalRef says
// that encodes the same); its error names the key.
func (c *Context[T]) encode(key string, v any) ([]byte, error) {
	b, err := c.opts.Codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %q with %s: %w: %w", key, c.opts.Codec.Name(), ErrInvalid, err)
	}
	return b, nil
}
