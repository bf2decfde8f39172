package redis_test

import (
	"context"
	"os"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// quietLogger drops go-redis's log lines (reconnects, Sentinel
// discoveries): the fault tests provoke them on purpose. Set
// CONTEXTD_REDIS_LOG=1 to see them.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	if os.Getenv("CONTEXTD_REDIS_LOG") == "" {
		goredis.SetLogger(quietLogger{})
	}
	goleak.VerifyTestMain(m)
}
