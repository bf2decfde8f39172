package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// commandCounts returns INFO commandstats as command name -> calls.
// Redis counts the commands a script calls too, under their own names.
func commandCounts(t testing.TB, srv *redistest.Server) map[string]int {
	t.Helper()
	stats, err := srv.Do(context.Background(), "INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(stats.(string), "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		counts[name], _ = strconv.Atoi(n)
	}
	delete(counts, "info") // this call
	delete(counts, "config|resetstat")
	return counts
}

// TestOneRoundTripPerWrite checks the promise behind the write benchmarks:
// in a steady stream of writes of free keys, with other instances
// receiving them, each UpdateContext and TransactionalUpdate sends exactly
// one command (EVALSHA), and the server runs nothing else at all — no
// background command per write, and for a client that does not resend
// (redis.Open, or MaxRetries -1) no remembered commit head. Every command
// the server ran is counted (INFO commandstats, which also counts the
// commands the script calls), so a new command in the commit script shows
// here too.
func TestOneRoundTripPerWrite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxRetries int
		// perWrite: the commands the server runs per write, the script's
		// own calls included.
		perWrite map[string]int
	}{
		// HMGET meta; EXISTS of the locks and queues; TYPE of data and
		// revs; HSET of the change log, meta, data and revs; PUBLISH.
		{"no resends", -1, map[string]int{"evalsha": 1, "hmget": 1, "exists": 1, "type": 2, "hset": 4, "publish": 1}},
		// A client that may resend a command (go-redis's default of 3
		// retries) costs a GET and a SET of the commit's head per write.
		{"resending client", 0, map[string]int{"evalsha": 1, "hmget": 1, "exists": 1, "type": 2, "hset": 4, "publish": 1, "get": 1, "set": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, nil)
			ctx := context.Background()
			client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), MaxRetries: tc.maxRetries})
			defer client.Close()
			hook := &countingHook{}
			client.AddHook(hook)
			b, err := redis.New(client, nil)
			if err != nil {
				t.Fatal(err)
			}
			const name = "roundtrips"
			cx := openInstance[int](t, b, name, noResync)
			receivers := instances[int](t, srv, name, 2, noResync, nil)
			// Load the script once, so the count below is not of a
			// NOSCRIPT retry.
			if err := cx.UpdateContext(ctx, "warm", 0); err != nil {
				t.Fatal(err)
			}
			waitRevision(t, cx.Revision(), receivers...)
			hook.take()
			if _, err := srv.Do(ctx, "CONFIG", "RESETSTAT"); err != nil {
				t.Fatal(err)
			}
			const writes = 200
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
			waitRevision(t, cx.Revision(), receivers...)
			sent := hook.take()
			if len(sent) != writes {
				t.Fatalf("%d writes sent %d commands %v, want one each", writes, len(sent), sent)
			}
			for _, name := range sent {
				if name != "evalsha" {
					t.Fatalf("a write sent %q, want only evalsha", name)
				}
			}
			want := map[string]int{}
			for cmd, n := range tc.perWrite {
				want[cmd] = n * writes
			}
			if got := commandCounts(t, srv); !maps.Equal(got, want) {
				t.Fatalf("during %d writes the server ran %v; want %v (%v per write)", writes, got, want, tc.perWrite)
			}
			keys, err := srv.Do(ctx, "KEYS", "*:commit:*")
			if err != nil {
				t.Fatal(err)
			}
			if n := len(keys.([]any)); tc.maxRetries < 0 && n != 0 {
				t.Errorf("%d commit-head keys left by a client that does not resend; want none", n)
			}
		})
	}
}

// waitRevision waits until every instance has applied revision rev.
func waitRevision(t *testing.T, rev uint64, cs ...*contextd.Context[int]) {
	t.Helper()
	for i, c := range cs {
		eventually(t, fmt.Sprintf("instance %d reaches revision %d", i, rev), func() error {
			if r := c.Revision(); r != rev {
				return fmt.Errorf("at revision %d", r)
			}
			return nil
		})
	}
}

// TestModifyConflictNeedsNoRead has another instance write the key while a
// Modify computes its value, so the Modify's commit meets a conflict: the
// script's refusal carries the key's current value and revision
// (backend.ConflictError), so the retry follows without a read — two
// commands in all, besides connection handshakes — and still loses no
// update.
func TestModifyConflictNeedsNoRead(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := context.Background()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	hook := &countingHook{}
	client.AddHook(hook)
	b, err := redis.New(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	const name = "modify-conflict"
	cx := openInstance[int](t, b, name, noResync)
	other := instances[int](t, srv, name, 1, noResync, nil)[0]
	if err := cx.UpdateContext(ctx, "n", 1); err != nil {
		t.Fatal(err)
	}
	hook.take()
	calls := 0
	got, err := cx.Modify(ctx, "n", func(cur int, _ bool) (int, error) {
		calls++
		if calls == 1 {
			if err := other.UpdateContext(ctx, "n", 10); err != nil {
				return 0, err
			}
		}
		return cur + 1, nil
	})
	if err != nil || got != 11 || calls != 2 {
		t.Fatalf("Modify = %d, %v after %d calls; want 11 after 2 (the second with the other instance's 10)", got, err, calls)
	}
	// Connection handshakes (a fair store's lost race waits for the key
	// as a lock waiter would, on a connection of its own) are not reads.
	var sent []string
	for _, name := range hook.take() {
		if name != "hello" && name != "client" {
			sent = append(sent, name)
		}
	}
	if len(sent) != 2 {
		t.Fatalf("a Modify that met one conflict sent %d commands %v; want 2 (commit, commit), no read", len(sent), sent)
	}
}

// countingCodec is JSON that counts the values it decodes.
type countingCodec struct{ decoded atomic.Int64 }

func (c *countingCodec) Name() string                  { return "json" }
func (c *countingCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }
func (c *countingCodec) Unmarshal(data []byte, v any) error {
	c.decoded.Add(1)
	return json.Unmarshal(data, v)
}

// TestOwnEchoNotDecoded checks that a writer decodes each of its values
// once: the echo of its own commit is recognised by its head when the
// commit's reply came first, and takes the writer's decoded values when it
// came first itself (on Redis the PUBLISH usually reaches the subscription
// before the EVALSHA reply reaches the writer).
func TestOwnEchoNotDecoded(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := context.Background()
	codec := &countingCodec{}
	cx := openInstance[int](t, newBackend(t, srv, nil), "own-echo", &contextd.Options{ResyncInterval: -1, Codec: codec})
	// Another instance follows every write, so the writer's subscription
	// has received them all when it has (they share the server's order).
	follower := openInstance[int](t, newBackend(t, srv, nil), "own-echo", noResync)
	const writes = 300
	before := codec.decoded.Load()
	for i := range writes {
		if err := cx.UpdateContext(ctx, "k", i); err != nil {
			t.Fatal(err)
		}
	}
	waitRevision(t, cx.Revision(), follower)
	if got := codec.decoded.Load() - before; got != writes {
		t.Fatalf("the writer decoded %d values for %d writes; want exactly one each", got, writes)
	}
	if v, _, err := cx.Get(ctx, "k"); err != nil || v != writes-1 {
		t.Fatalf("Get = %v, %v; want %d", v, err, writes-1)
	}
}
