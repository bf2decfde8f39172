package redis_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/redistest"
)

// poolsUntouched fails the test if client's pipeline pool holds a
// connection, or if a connection of its main pool is still taken: the
// Backend sends its pipelines on a main-pool connection it gives back.
func poolsUntouched(t *testing.T, client *goredis.Client, after string) {
	t.Helper()
	s := client.PoolStats()
	if s.PipelineStats == nil {
		t.Fatalf("after %s: the client has no pipeline pool; the test needs go-redis's default one", after)
	}
	if s.PipelineStats.TotalConns != 0 {
		t.Errorf("after %s: the pipeline pool holds %d connection(s); want none (pipelines on the main pool)", after, s.PipelineStats.TotalConns)
	}
	if s.TotalConns != s.IdleConns {
		t.Errorf("after %s: %d of the main pool's %d connections are still taken; want all given back", after, s.TotalConns-s.IdleConns, s.TotalConns)
	}
}

// TestUserClientLoadsOnMainPool checks that on a client the user made
// with go-redis's defaults, which come with a dedicated pipeline pool
// (each of its connections with 128 KiB read and write buffers), the
// loads of Initialize and Sync (a MULTI/EXEC) run on a connection of the
// main pool, given back once done, and the pipeline pool stays empty;
// the client's options are left as they are. (Bulk fetches go through
// the client, pipeline pool and all, so that go-redis may resend them:
// TestUserClientGetManyRetriesBrokenConn.)
func TestUserClientLoadsOnMainPool(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name = "pipelines-main-pool"
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password(), ClientName: clientName(t)})
	be := backendOn(t, client, nil)
	writer := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	for i := range 3 {
		if err := writer.UpdateContext(ctx, fmt.Sprint("k", i), i); err != nil {
			t.Fatal(err)
		}
	}

	cx := openInstance[int](t, be, name, noResync)
	poolsUntouched(t, client, "Initialize")
	if got, err := cx.GetContext(ctx); err != nil || len(got) != 3 {
		t.Fatalf("GetContext = %v, %v; want the 3 keys", got, err)
	}
	if err := cx.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	poolsUntouched(t, client, "Sync")
	if err := cx.UpdateContext(ctx, "k0", 10); err != nil {
		t.Fatal(err)
	}
	poolsUntouched(t, client, "a commit")
	if o := client.Options(); o.PipelinePoolSize != 0 || o.PipelineReadBufferSize != 0 || o.PipelineWriteBufferSize != 0 {
		t.Errorf("client options changed: pipeline pool size %d, buffers %d / %d; want go-redis's defaults (0)",
			o.PipelinePoolSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize)
	}
}

// TestUserClientLoadGivesConnBack checks that a load on a client the user
// made gives its main-pool connection back on the paths that fail: a ctx
// already done, a refused command (a damaged key), and a deadline on a
// stalled server, where the connection, its reply never read, is dropped.
// Loads afterwards succeed.
func TestUserClientLoadGivesConnBack(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	ctx := faultCtx(t)
	const name, damaged = "pipelines-give-back", "pipelines-give-back-damaged"
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr(), Password: srv.Password(), ClientName: clientName(t), ContextTimeoutEnabled: true})
	be := backendOn(t, client, nil)
	writer := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	if err := writer.UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(ctx, "{contextd:"+damaged+"}:data", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	loaded := func(what string) {
		t.Helper()
		if snap, err := be.Load(ctx, name); err != nil || len(snap.Entries) != 1 {
			t.Fatalf("Load after %s = %d entries, %v; want 1", what, len(snap.Entries), err)
		}
		poolsUntouched(t, client, "a load after "+what)
	}
	loaded("nothing")

	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := be.Load(done, name); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a canceled ctx: %v; want context.Canceled", err)
	}
	poolsUntouched(t, client, "a load with a canceled ctx")
	loaded("a canceled ctx")

	if _, err := be.Load(ctx, damaged); !errors.Is(err, backend.ErrCorrupt) {
		t.Fatalf("Load of a context whose data hash is a string: %v; want ErrCorrupt", err)
	}
	poolsUntouched(t, client, "a refused load")
	loaded("a refused load")

	proxy.Stall()
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := be.Load(short, name)
	stop()
	if !errors.Is(err, context.DeadlineExceeded) {
		proxy.Resume()
		t.Fatalf("Load with a deadline on a stalled server: %v; want context.DeadlineExceeded", err)
	}
	poolsUntouched(t, client, "a load past its deadline")
	proxy.Resume()
	loaded("a stall")
}

// TestChosenPipelinePoolKept checks that a user who sized go-redis's
// pipeline pool gets it: the Backend's pipelines go through the client,
// which sends them there.
func TestChosenPipelinePoolKept(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "pipelines-chosen-pool"
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password(), ClientName: clientName(t), PipelinePoolSize: 2})
	openInstance[int](t, backendOn(t, client, nil), name, noResync)
	if s := client.PoolStats(); s.PipelineStats == nil || s.PipelineStats.TotalConns != 1 {
		t.Errorf("pipeline pool stats after Initialize: %+v; want the load on one connection of the pool the user sized", s.PipelineStats)
	}
}

// TestOpenPipelinesOnMainPool checks the same for a Backend from Open,
// whose client has no pipeline pool: a load leaves no main-pool
// connection taken.
func TestOpenPipelinesOnMainPool(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	be := openedBackend(t, redistest.StartProxy(t, srv.Addr()), redis.Options{})
	openInstance[int](t, be, "pipelines-open", noResync)
	client := be.Client().(*goredis.Client)
	if s := client.PoolStats(); s.PipelineStats != nil || s.TotalConns != s.IdleConns {
		t.Errorf("pool stats after Initialize: %+v; want no pipeline pool and every connection idle", s)
	}
}
