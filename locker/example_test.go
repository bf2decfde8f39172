package locker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/locker"
)

// Acquire waits for a lock as the policy allows; KeepAlive renews it until
// stopped.
func ExampleAcquire() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	policy := locker.Policy{RetryDelay: 10 * time.Millisecond, MaxRetries: 3, Watcher: b}

	lease, err := locker.Acquire(ctx, b, "jobs", "report", time.Second, policy)
	if err != nil {
		panic(err)
	}
	stop := locker.KeepAlive(b, lease, func(err error) { fmt.Println("lost:", err) })

	_, err = locker.Acquire(ctx, b, "jobs", "report", time.Second, policy)
	fmt.Println(errors.Is(err, locker.ErrNotAcquired))

	stop()
	if err := b.Release(ctx, lease); err != nil {
		panic(err)
	}
	again, err := locker.Acquire(ctx, b, "jobs", "report", time.Second, policy)
	fmt.Println(err == nil, again.Fence > lease.Fence)
	// Output:
	// true
	// true true
}
