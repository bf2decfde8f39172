package redis_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/redistest"
)

// reviewHook counts the pipelines and commands a client's hooks see.
type reviewHook struct{ pipelines, commands atomic.Int64 }

func (h *reviewHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *reviewHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.commands.Add(1)
		return next(ctx, cmd)
	}
}
func (h *reviewHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.pipelines.Add(1)
		return next(ctx, cmds)
	}
}

// TestUserClientTxKeepsClientSettings checks that the Tx the Backend
// sends a user client's pipelines on keeps what the client was made
// with: its hooks see the pipelines and the script load, its DB, RESP2,
// OnConnect; and that on a pool of one connection a NOSCRIPT inside the
// Tx (GetMany, a commit with WAIT) loads the script on the Tx's
// connection instead of waiting for a second one.
func TestUserClientTxKeepsClientSettings(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name = "pipelines-settings"
	var connects atomic.Int64
	client := goredis.NewClient(&goredis.Options{
		Addr: srv.Addr(), Password: srv.Password(), ClientName: clientName(t),
		DB: 3, Protocol: 2, PoolSize: 1, PoolTimeout: 2 * time.Second,
		OnConnect: func(context.Context, *goredis.Conn) error { connects.Add(1); return nil },
	})
	hook := &reviewHook{}
	client.AddHook(hook)
	be := backendOn(t, client, &redis.Options{WaitReplicas: 1, WaitTimeout: time.Millisecond})
	cx := openInstance[int](t, be, name, noResync)
	if hook.pipelines.Load() == 0 {
		t.Errorf("the client's hook saw no pipeline during Initialize")
	}
	if connects.Load() == 0 {
		t.Errorf("OnConnect never ran")
	}
	if _, err := srv.Do(ctx, "SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	if _, err := be.GetMany(ctx, name, []string{"a"}); err != nil {
		t.Fatalf("GetMany after SCRIPT FLUSH on a pool of one: %v", err)
	}
	if _, err := srv.Do(ctx, "SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	if err := cx.UpdateContext(ctx, "a", 1); !errors.Is(err, redis.ErrNotReplicated) {
		t.Fatalf("UpdateContext with WAIT after SCRIPT FLUSH on a pool of one: %v; want ErrNotReplicated", err)
	}
	// A failed commit may have been made (here it was): its echo, held
	// while the commit was under way, brings it in, with no command.
	eventually(t, "the failed commit in the copy", func() error {
		if v, ok, err := cx.Get(ctx, "a"); err != nil || !ok || v != 1 {
			return fmt.Errorf("a = %d, %v, %v", v, ok, err)
		}
		return nil
	})
	// The write (applied, not replicated) is in DB 3, and a load on
	// the Tx reads it from there.
	snap, err := be.Load(ctx, name)
	if err != nil || len(snap.Entries) != 1 {
		t.Errorf("Load = %d entries, %v; want the write in DB 3", len(snap.Entries), err)
	}
	if n, err := srv.Do(ctx, "EXISTS", "{contextd:"+name+"}:data"); err != nil || n != int64(0) {
		t.Errorf("data key in DB 0: %v, %v; want none", n, err)
	}
	if s := client.PoolStats(); s.TotalConns != 1 || s.IdleConns != 1 {
		t.Errorf("pool %+v; want its one connection idle", s)
	}
}
