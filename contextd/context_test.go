package contextd_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/codec/msgpack"
	"github.com/contextd-go/contextd/contextd"
)

type noNameCodec struct{ codec.Codec }

func (noNameCodec) Name() string { return "" }

func TestNewRejectsBadArguments(t *testing.T) {
	b := newMemory(t, nil)
	var typedNil *memory.Backend
	cases := []struct {
		name string
		b    backend.Backend
		key  string
		opts *contextd.Options
		want string
	}{
		{"nil backend", nil, "k", nil, "backend"},
		{"typed nil backend", typedNil, "k", nil, "backend"},
		{"empty contextKey", b, "", nil, "contextKey"},
		{"codec without a name", b, "k", &contextd.Options{Codec: noNameCodec{codec.JSON}}, "Codec"},
		{"negative lock timeout", b, "k", &contextd.Options{LockTimeout: -1}, "LockTimeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := contextd.New[int](tc.b, tc.key, tc.opts)
			if err == nil || c != nil {
				t.Fatalf("New = %v, %v; want an error", c, err)
			}
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, contextd.ErrInvalid) {
				t.Errorf("error %q does not mention %q or does not match ErrInvalid", err, tc.want)
			}
		})
	}
}

func TestUseBeforeInitialize(t *testing.T) {
	c, err := contextd.New[int](newMemory(t, nil), "ctx", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	checks := map[string]error{
		"UpdateContext":       c.UpdateContext(ctx, "k", 1),
		"TransactionalUpdate": c.TransactionalUpdate(ctx, map[string]int{"k": 1}),
		"Delete":              c.Delete(ctx, "k"),
		"Sync":                c.Sync(ctx),
	}
	_, _, checks["Get"] = c.Get(ctx, "k")
	_, checks["GetContext"] = c.GetContext(ctx)
	_, checks["Modify"] = c.Modify(ctx, "k", func(int, bool) (int, error) { return 1, nil })
	_, checks["AcquireLock"] = c.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
	for op, err := range checks {
		if !errors.Is(err, contextd.ErrNotInitialized) {
			t.Errorf("%s before Initialize = %v, want ErrNotInitialized", op, err)
		}
	}
	if c.Ready() {
		t.Error("Ready before Initialize")
	}
}

func TestUseAfterClose(t *testing.T) {
	b := newMemory(t, nil)
	c, err := contextd.New[int](b, "ctx", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.Ready() {
		t.Error("not Ready after Initialize")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{
		"Initialize":    c.Initialize(ctx),
		"UpdateContext": c.UpdateContext(ctx, "k", 1),
		"Delete":        c.Delete(ctx, "k"),
		"Sync":          c.Sync(ctx),
	}
	_, _, checks["Get"] = c.Get(ctx, "k")
	_, checks["GetContext"] = c.GetContext(ctx)
	_, checks["AcquireLock"] = c.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
	for op, err := range checks {
		if !errors.Is(err, contextd.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", op, err)
		}
	}
	if _, ok := <-c.Watch(ctx); ok {
		t.Error("Watch after Close delivered a change")
	}
	if c.Ready() {
		t.Error("Ready after Close")
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	b := newMemory(t, nil)
	c := open[any](t, b, "ctx", nil)
	other := open[any](t, b, "other", nil)
	foreign, err := other.AcquireLock(t.Context(), contextd.LockOptions{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		what string
		call func() error
		// names is a part the error must contain, so the user sees what
		// was wrong.
		names string
	}{
		{"UpdateContext with an empty key", func() error { return c.UpdateContext(ctx, "", 1) }, "empty key"},
		{"TransactionalUpdate with an unencodable value", func() error {
			return c.TransactionalUpdate(ctx, map[string]any{"good": 1, "bad": make(chan int)})
		}, `"bad"`},
		{"UpdateContext with an unencodable value", func() error { return c.UpdateContext(ctx, "k", func() {}) }, `"k"`},
		{"TransactionalUpdate with an empty key", func() error { return c.TransactionalUpdate(ctx, map[string]any{"": 1}) }, "empty key"},
		{"Delete with an empty key", func() error { return c.Delete(ctx, "") }, "empty key"},
		{"Txn deleting an empty key", func() error { _, err := c.Txn().Delete("a").Delete("").Commit(ctx); return err }, "empty key"},
		{"Txn writing a key twice", func() error { _, err := c.Txn().Put("a", 1).Delete("a").Commit(ctx); return err }, "twice"},
		{"Txn with a condition on an empty key", func() error { _, err := c.Txn().Put("a", 1).IfAbsent("").Commit(ctx); return err }, "empty key"},
		{"Delete WithTTL", func() error { return c.Delete(ctx, "a", contextd.WithTTL(time.Second)) }, "WithTTL"},
		{"Get with an empty key", func() error { _, _, err := c.Get(ctx, ""); return err }, "empty key"},
		{"AcquireLock without a key", func() error { _, err := c.AcquireLock(ctx, contextd.LockOptions{}); return err }, "empty key"},
		{"AcquireLock with a negative timeout", func() error {
			_, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: -time.Second})
			return err
		}, "negative"},
		{"Modify with a nil function", func() error { _, err := c.Modify(ctx, "k", nil); return err }, "nil function"},
		{"Modify with an empty key", func() error {
			_, err := c.Modify(ctx, "", func(any, bool) (any, error) { return 1, nil })
			return err
		}, "empty key"},
		{"Modify to an unencodable value", func() error {
			_, err := c.Modify(ctx, "k", func(any, bool) (any, error) { return make(chan int), nil })
			return err
		}, `"k"`},
		{"UpdateContext WithLock(nil)", func() error { return c.UpdateContext(ctx, "k", 1, contextd.WithLock(nil)) }, "WithLock(nil)"},
		{"UpdateContext WithLock of another Context", func() error {
			return c.UpdateContext(ctx, "k", 1, contextd.WithLock(foreign))
		}, "another Context"},
	} {
		err := tc.call()
		if !errors.Is(err, contextd.ErrInvalid) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%s = %v; want an error matching ErrInvalid that says %s", tc.what, err, tc.names)
		}
	}
	if h, _ := b.Revision(ctx, "ctx"); h.Revision != 0 {
		t.Errorf("bad input wrote %d revisions", h.Revision)
	}
	if err := c.TransactionalUpdate(ctx, nil); err != nil {
		t.Errorf("empty TransactionalUpdate = %v, want nil", err)
	}
}

// TestNilContextAndLock calls every method on a nil *Context and a nil
// *Lock: each returns an error matching ErrInvalid (or a zero value), none
// panics.
func TestNilContextAndLock(t *testing.T) {
	var c *contextd.Context[int]
	ctx := t.Context()
	calls := map[string]func() error{
		"Initialize":          func() error { return c.Initialize(ctx) },
		"Close":               func() error { return c.Close() },
		"UpdateContext":       func() error { return c.UpdateContext(ctx, "k", 1) },
		"TransactionalUpdate": func() error { return c.TransactionalUpdate(ctx, map[string]int{"k": 1}) },
		"Delete":              func() error { return c.Delete(ctx, "k") },
		"Modify": func() error {
			_, err := c.Modify(ctx, "k", func(int, bool) (int, error) { return 1, nil })
			return err
		},
		"Get":         func() error { _, _, err := c.Get(ctx, "k"); return err },
		"Get Fresh":   func() error { _, _, err := c.Get(ctx, "k", contextd.Fresh()); return err },
		"GetContext":  func() error { _, err := c.GetContext(ctx); return err },
		"Sync":        func() error { return c.Sync(ctx) },
		"AcquireLock": func() error { _, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "k"}); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, contextd.ErrInvalid) {
			t.Errorf("nil *Context: %s = %v, want ErrInvalid", name, err)
		}
	}
	if c.Name() != "" || c.ID() != "" || c.Ready() || c.Revision() != 0 || c.Lag() != 0 || c.Stats() != (contextd.Stats{}) ||
		c.Capabilities() != (backend.Capabilities{}) {
		t.Error("nil *Context: getters returned non-zero values")
	}
	if _, open := <-c.Watch(ctx); open {
		t.Error("nil *Context: Watch returned an open channel")
	}
	var l *contextd.Lock
	if err := l.Release(ctx); !errors.Is(err, contextd.ErrInvalid) {
		t.Errorf("nil *Lock: Release = %v, want ErrInvalid", err)
	}
	if err := l.Extend(ctx, time.Second); !errors.Is(err, contextd.ErrInvalid) {
		t.Errorf("nil *Lock: Extend = %v, want ErrInvalid", err)
	}
	if l.Key() != "" || l.Token() != 0 {
		t.Error("nil *Lock: Key or Token not zero")
	}
	select {
	case <-l.Lost():
	default:
		t.Error("nil *Lock: Lost is not closed")
	}
}

func TestCancelledContext(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.UpdateContext(ctx, "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("UpdateContext with a cancelled ctx = %v", err)
	}
	if _, _, err := c.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled ctx = %v", err)
	}
	if _, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "k"}); !errors.Is(err, context.Canceled) {
		t.Errorf("AcquireLock with a cancelled ctx = %v", err)
	}
}

func TestReadYourWritesAndDelete(t *testing.T) {
	c := open[string](t, newMemory(t, nil), "ctx", nil)
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Get(ctx, "a"); v != "1" || !ok || err != nil {
		t.Fatalf("Get after UpdateContext = %q, %v, %v", v, ok, err)
	}
	if _, err := c.Txn().Delete("a").Delete("missing").Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, "a"); ok || err != nil {
		t.Fatalf("Get after Delete = %v, %v; want absent", ok, err)
	}
	m, err := c.GetContext(ctx)
	if err != nil || len(m) != 0 {
		t.Fatalf("GetContext after Delete = %v, %v", m, err)
	}
	if c.Revision() != 2 {
		t.Errorf("Revision = %d, want 2", c.Revision())
	}
}

func TestCallerMutationDoesNotReachCache(t *testing.T) {
	c := open[[]int](t, newMemory(t, nil), "ctx", nil)
	ctx := context.Background()
	v := []int{1, 2}
	if err := c.UpdateContext(ctx, "k", v); err != nil {
		t.Fatal(err)
	}
	v[0] = 99
	got, _, _ := c.Get(ctx, "k")
	if got[0] != 1 {
		t.Fatalf("cache changed with the caller's slice: %v", got)
	}
}

func TestCodecMismatch(t *testing.T) {
	b := newMemory(t, nil)
	ctx := context.Background()
	w := open[int](t, b, "ctx", nil)
	if err := w.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	c, err := contextd.New[int](b, "ctx", &contextd.Options{Codec: msgpack.Codec})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Initialize(ctx); !errors.Is(err, contextd.ErrCodecMismatch) {
		t.Fatalf("Initialize with another codec = %v, want ErrCodecMismatch", err)
	}
	// A msgpack instance that started before the first write is refused at
	// its first write instead.
	b2 := newMemory(t, nil)
	mp := open[int](t, b2, "ctx", &contextd.Options{Codec: msgpack.Codec})
	js := open[int](t, b2, "ctx", nil)
	if err := mp.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := js.UpdateContext(ctx, "k", 2); !errors.Is(err, contextd.ErrCodecMismatch) {
		t.Fatalf("write with another codec = %v, want ErrCodecMismatch", err)
	}
}

func TestUndecodableValue(t *testing.T) {
	b := newMemory(t, nil)
	ctx := context.Background()
	w := open[any](t, b, "ctx", nil)
	if err := w.TransactionalUpdate(ctx, map[string]any{"good": 7, "bad": "not a number"}); err != nil {
		t.Fatal(err)
	}
	r := open[int](t, b, "ctx", nil)
	if v, ok, err := r.Get(ctx, "good"); v != 7 || !ok || err != nil {
		t.Errorf("Get of a good key = %v, %v, %v", v, ok, err)
	}
	_, _, err := r.Get(ctx, "bad")
	if !errors.Is(err, contextd.ErrDecode) || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("Get of an undecodable key = %v, want ErrDecode naming the key", err)
	}
	m, err := r.GetContext(ctx)
	if !errors.Is(err, contextd.ErrDecode) || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("GetContext = %v, want ErrDecode naming the key", err)
	}
	if m["good"] != 7 || len(m) != 1 {
		t.Errorf("GetContext hid the good keys: %v", m)
	}
	// Modify of the bad key refuses rather than overwriting blindly.
	if _, err := r.Modify(ctx, "bad", func(cur int, ok bool) (int, error) { return cur + 1, nil }); !errors.Is(err, contextd.ErrDecode) {
		t.Errorf("Modify of an undecodable key = %v, want ErrDecode", err)
	}
}

func TestModifyFunctionError(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx := context.Background()
	boom := errors.New("boom")
	_, err := c.Modify(ctx, "k", func(int, bool) (int, error) { return 0, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Modify = %v, want the function's error", err)
	}
	if c.Revision() != 0 {
		t.Fatal("Modify wrote despite the function's error")
	}
	v, err := c.Modify(ctx, "k", func(cur int, ok bool) (int, error) {
		if ok {
			t.Error("absent key reported present")
		}
		return cur + 5, nil
	})
	if v != 5 || err != nil {
		t.Fatalf("Modify = %v, %v", v, err)
	}
}
