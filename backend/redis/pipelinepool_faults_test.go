package redis_test

import (
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/contextd-go/contextd/internal/redistest"
)

// staticStreamingCredentials is a StreamingCredentialsProvider (as Entra
// ID or another token source would be) that hands out one password and
// never rotates it.
type staticStreamingCredentials struct{ password string }

func (p staticStreamingCredentials) Subscribe(auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	return auth.NewBasicCredentials("", p.password), func() error { return nil }, nil
}

// TestUserClientStreamingCredentialsLoad checks that a load on a client
// the user made with a StreamingCredentialsProvider (and go-redis's
// default pipeline pool) works when the load has to dial its connection:
// the Tx that execLoad runs the load in initialises a new connection
// with its own baseClient, which go-redis makes without the client's
// streaming-credentials manager.
func TestUserClientStreamingCredentialsLoad(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	client := goredis.NewClient(&goredis.Options{
		Addr:                         srv.Addr(),
		ClientName:                   clientName(t),
		StreamingCredentialsProvider: staticStreamingCredentials{password: srv.Password()},
	})
	be := backendOn(t, client, nil)
	// The main pool is empty: the load dials its connection.
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		_, err = be.Load(ctx, "streaming-credentials")
		return err
	}()
	if err != nil {
		t.Fatalf("Load on a client with a StreamingCredentialsProvider: %v", err)
	}
}

// TestUserClientGetManyRetriesBrokenConn checks that a bulk fetch on a
// client the user made with go-redis's defaults (MaxRetries 3) survives a
// connection that breaks after the fetch was sent, as it did when the
// fetch went through the client: go-redis sends a read-only pipeline
// again on another connection. The fetch reaches Redis, its reply is held
// back, and the connection breaks before the reply arrives.
func TestUserClientGetManyRetriesBrokenConn(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	ctx := faultCtx(t)
	const name = "pipelines-getmany-retry"
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr(), Password: srv.Password(), ClientName: clientName(t)})
	be := backendOn(t, client, nil)
	writer := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	if err := writer.UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	// Script loaded, connection dialled.
	if es, err := be.GetMany(ctx, name, []string{"a"}); err != nil || len(es) != 1 {
		t.Fatalf("GetMany = %+v, %v; want a", es, err)
	}
	sent := commandCounts(t, srv)["evalsha"]

	proxy.StallReplies()
	res := make(chan error, 1)
	go func() {
		es, err := be.GetMany(ctx, name, []string{"a"})
		if err == nil && len(es) != 1 {
			err = fmt.Errorf("got %+v; want a", es)
		}
		res <- err
	}()
	eventually(t, "the fetch has run in Redis", func() error {
		if n := commandCounts(t, srv)["evalsha"]; n <= sent {
			return fmt.Errorf("%d EVALSHA, %d before", n, sent)
		}
		return nil
	})
	proxy.Break() // the reply is lost with the connection
	proxy.Resume()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("GetMany whose connection broke, on a client with MaxRetries %d: %v; want it sent again", client.Options().MaxRetries, err)
		}
	case <-time.After(faultWait):
		t.Fatal("GetMany did not return after its connection broke")
	}
}
