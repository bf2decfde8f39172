package redis_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// countingHook counts the commands a client sends.
type countingHook struct {
	mu   sync.Mutex
	sent []string
}

func (h *countingHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *countingHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.mu.Lock()
		h.sent = append(h.sent, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.mu.Lock()
		for _, c := range cmds {
			h.sent = append(h.sent, c.Name())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *countingHook) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sent
	h.sent = nil
	return s
}

// TestOneRoundTripPerWrite checks the promise behind the write benchmarks:
// UpdateContext and TransactionalUpdate of free keys send exactly one
// command (EVALSHA), and Redis runs exactly one script per write.
func TestOneRoundTripPerWrite(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer client.Close()
	hook := &countingHook{}
	client.AddHook(hook)
	b, err := redis.New(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	cx, err := contextd.New[int](b, "roundtrips", &contextd.Options{ResyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	// Load the script once, so the count below is not of a NOSCRIPT retry.
	if err := cx.UpdateContext(ctx, "warm", 0); err != nil {
		t.Fatal(err)
	}
	hook.take()
	if _, err := srv.Do(ctx, "CONFIG", "RESETSTAT"); err != nil {
		t.Fatal(err)
	}
	const writes = 50
	for i := range writes {
		var err error
		if i%2 == 0 {
			err = cx.UpdateContext(ctx, "k", i)
		} else {
			err = cx.TransactionalUpdate(ctx, map[string]int{"a": i, "b": i})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	sent := hook.take()
	if len(sent) != writes {
		t.Fatalf("%d writes sent %d commands %v, want one each", writes, len(sent), sent)
	}
	for _, name := range sent {
		if name != "evalsha" {
			t.Fatalf("a write sent %q, want only evalsha", name)
		}
	}
	stats, err := srv.Do(ctx, "INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	want := "cmdstat_evalsha:calls=50,"
	if !strings.Contains(stats.(string), want) {
		t.Fatalf("INFO commandstats lacks %q:\n%s", want, stats)
	}
}
