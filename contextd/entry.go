package contextd

import (
	"context"
	"errors"
	"iter"
	"strings"
	"time"

	"github.com/contextd-go/contextd/backend"
)

// Entry is one key of a context with what contextd knows about it.
type Entry[T any] struct {
	Key   string
	Value T
	// Revision is the context revision that last wrote the key: the value
	// to give IfRevision for a write that must not overwrite a change made
	// since this read.
	Revision uint64
	// Expires is when the key expires (WithTTL), by the store's clock; the
	// zero time if it does not.
	Expires time.Time
}

// GetEntry returns key's entry — its value, the revision that wrote it and
// its expiry — and whether the key exists. Like Get it reads the local copy,
// or the store with Fresh().
func (c *Context[T]) GetEntry(ctx context.Context, key string, opts ...ReadOption) (Entry[T], bool, error) {
	if err := c.usable(); err != nil {
		return Entry[T]{}, false, c.errorf("get %q", err, key)
	}
	if err := ctx.Err(); err != nil {
		return Entry[T]{}, false, c.errorf("get %q", err, key)
	}
	if key == "" {
		return Entry[T]{}, false, c.errorf("get", errEmptyKey)
	}
	if readOpts(opts).fresh {
		return c.freshEntry(ctx, key)
	}
	e, ok := c.cache.current().entries.Get(key)
	if stale := c.cache.staleness(); stale != nil && c.opts.FailClosed {
		return Entry[T]{}, false, c.errorf("get %q", staleError(stale), key)
	}
	if !ok || e.deleted() {
		return Entry[T]{}, false, nil
	}
	if err := e.err(); err != nil {
		return Entry[T]{}, false, c.errorf("get %q", err, key)
	}
	return Entry[T]{Key: key, Value: e.value, Revision: e.rev, Expires: unixMilli(e.expires())}, true, nil
}

// freshEntry reads key's entry from the store.
func (c *Context[T]) freshEntry(ctx context.Context, key string) (Entry[T], bool, error) {
	e, err := c.store.Get(ctx, c.name, key)
	if errors.Is(err, backend.ErrNotFound) {
		return Entry[T]{}, false, nil
	}
	if err != nil {
		return Entry[T]{}, false, c.errorf("get %q", err, key)
	}
	if e.Revision == 0 {
		return Entry[T]{}, false, c.errorf("get %q", damaged(key))
	}
	v, err := c.decode(key, e.Value)
	if err != nil {
		return Entry[T]{}, false, c.errorf("get %q", err, key)
	}
	return Entry[T]{Key: key, Value: v, Revision: e.Revision, Expires: e.Expires}, true, nil
}

// All returns the context's keys and values as they are in one consistent
// state of the local copy, in no particular order. It copies nothing and
// takes no lock: writers and readers go on meanwhile, and what they do
// after All was called is not seen. Keys whose value does not decode, or
// that are damaged, are skipped (Get reports them). A Context that is not
// initialized, or closed, yields nothing; FailClosed is not applied (use
// GetContext for that).
func (c *Context[T]) All() iter.Seq2[string, T] {
	return c.Prefix("")
}

// Prefix is All for the keys that start with p. It looks at every key of
// the copy, so on large contexts it costs what All does.
func (c *Context[T]) Prefix(p string) iter.Seq2[string, T] {
	return func(yield func(string, T) bool) {
		if c.usable() != nil {
			return
		}
		for k, e := range c.cache.current().entries.All() {
			if e.deleted() || e.err() != nil || !strings.HasPrefix(k, p) {
				continue
			}
			if !yield(k, e.value) {
				return
			}
		}
	}
}

// Keys returns the keys of one consistent state of the local copy, as All
// does, in no particular order.
func (c *Context[T]) Keys() iter.Seq[string] {
	return func(yield func(string) bool) {
		for k := range c.All() {
			if !yield(k) {
				return
			}
		}
	}
}

// Len returns how many keys the local copy holds (damaged ones included).
func (c *Context[T]) Len() int {
	if c.usable() != nil {
		return 0
	}
	return c.cache.current().live
}
