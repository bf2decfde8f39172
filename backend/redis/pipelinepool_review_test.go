package redis_test

import (
	"fmt"
	"testing"

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
// the Tx that withPipelines runs the load in initialises a new connection
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
