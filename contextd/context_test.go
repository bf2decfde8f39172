package contextd_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
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
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "", 1); err == nil || !strings.Contains(err.Error(), "empty key") {
		t.Errorf("UpdateContext with an empty key = %v, want an empty-key error", err)
	}
	err := c.TransactionalUpdate(ctx, map[string]any{"good": 1, "bad": make(chan int)})
	if err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("TransactionalUpdate with an unencodable value = %v, want an error naming the key", err)
	}
	if err := c.Delete(ctx, "a", ""); err == nil {
		t.Error("Delete with an empty key succeeded")
	}
	if _, _, err := c.Get(ctx, ""); err == nil {
		t.Error("Get with an empty key succeeded")
	}
	if _, err := c.AcquireLock(ctx, contextd.LockOptions{}); err == nil {
		t.Error("AcquireLock without a key succeeded")
	}
	if _, err := c.Modify(ctx, "k", nil); err == nil {
		t.Error("Modify with a nil function succeeded")
	}
	if err := c.UpdateContext(ctx, "k", 1, contextd.WithLock(nil)); err == nil {
		t.Error("UpdateContext WithLock(nil) succeeded")
	}
	if h, _ := b.Revision(ctx, "ctx"); h.Revision != 0 {
		t.Errorf("bad input wrote %d revisions", h.Revision)
	}
	if err := c.TransactionalUpdate(ctx, nil); err != nil {
		t.Errorf("empty TransactionalUpdate = %v, want nil", err)
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
	if err := c.Delete(ctx, "a", "missing"); err != nil {
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
