package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

type User struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// The original library's example: update a key, update two keys in one
// transaction, read the whole context.
func Example() {
	ctx := context.Background()
	b := memory.New(nil) // the embedded backend; redis.Open for Redis
	defer b.Close()

	shared, err := contextd.New[any](b, "my_cxtd", nil)
	if err != nil {
		panic(err)
	}
	defer shared.Close()
	if err := shared.Initialize(ctx); err != nil {
		panic(err)
	}

	if err := shared.UpdateContext(ctx, "user", User{Name: "John Doe", Email: "john@example.com"}); err != nil {
		panic(err)
	}
	if err := shared.TransactionalUpdate(ctx, map[string]any{
		"user":     User{Name: "Jane Doe", Email: "jane@example.com"},
		"loggedIn": true,
	}); err != nil {
		panic(err)
	}

	current, err := shared.GetContext(ctx)
	if err != nil {
		panic(err)
	}
	for _, k := range slices.Sorted(maps.Keys(current)) {
		fmt.Printf("%s: %v\n", k, current[k])
	}
	// Output:
	// loggedIn: true
	// user: map[email:jane@example.com name:Jane Doe]
}

// Instances sharing a backend see each other's writes; each reads its own
// copy without a round trip.
func Example_instances() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()

	flags := make([]*contextd.Context[bool], 2)
	for i := range flags {
		flags[i], _ = contextd.New[bool](b, "feature_flags", nil)
		defer flags[i].Close()
		if err := flags[i].Initialize(ctx); err != nil {
			panic(err)
		}
	}
	changes := flags[1].Watch(ctx)
	if err := flags[0].UpdateContext(ctx, "dark_mode", true); err != nil {
		panic(err)
	}
	ch := <-changes
	on, _, _ := flags[1].Get(ctx, "dark_mode")
	fmt.Println(ch.Key, ch.Value, on)
	// Output: dark_mode true true
}

// Modify is a read-modify-write that never loses an update, here a counter
// incremented from many goroutines.
func ExampleContext_Modify() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	counters, _ := contextd.New[int](b, "counters", nil)
	defer counters.Close()
	if err := counters.Initialize(ctx); err != nil {
		panic(err)
	}

	done := make(chan struct{})
	for range 10 {
		go func() {
			defer func() { done <- struct{}{} }()
			_, err := counters.Modify(ctx, "visits", func(cur int, _ bool) (int, error) { return cur + 1, nil })
			if err != nil {
				panic(err)
			}
		}()
	}
	for range 10 {
		<-done
	}
	visits, _, _ := counters.Get(ctx, "visits")
	fmt.Println(visits)
	// Output: 10
}

// A lock keeps other writers of a key out; writes made WithLock go through,
// and are refused once the lock is lost.
func ExampleContext_AcquireLock() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	jobs, _ := contextd.New[string](b, "jobs", nil)
	defer jobs.Close()
	if err := jobs.Initialize(ctx); err != nil {
		panic(err)
	}

	lock, err := jobs.AcquireLock(ctx, contextd.LockOptions{
		Key:         "report",
		LockTimeout: 15 * time.Second, // original: lockTimeout 15000
		RetryDelay:  200 * time.Millisecond,
		MaxRetries:  100,
	})
	if err != nil {
		panic(err)
	}
	if err := jobs.UpdateContext(ctx, "report", "running", contextd.WithLock(lock)); err != nil {
		panic(err)
	}

	// Another writer without the lock gives up after its retries.
	impatient, _ := contextd.New[string](b, "jobs", &contextd.Options{RetryDelay: time.Millisecond, MaxRetries: 3})
	defer impatient.Close()
	_ = impatient.Initialize(ctx)
	err = impatient.UpdateContext(ctx, "report", "stolen")
	fmt.Println(errors.Is(err, contextd.ErrLockNotAcquired))

	if err := lock.Release(ctx); err != nil {
		panic(err)
	}
	err = jobs.UpdateContext(ctx, "report", "late", contextd.WithLock(lock))
	fmt.Println(errors.Is(err, contextd.ErrLockLost))
	// Output:
	// true
	// true
}

// Watch delivers every change in revision order.
func ExampleContext_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[string](b, "workflow", nil)
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}

	changes := cx.Watch(ctx)
	_ = cx.UpdateContext(ctx, "step", "fetch")
	_ = cx.UpdateContext(ctx, "step", "build")
	_ = cx.Delete(ctx, "step")
	for range 3 {
		ch := <-changes
		fmt.Println(ch.Revision, ch.Key, ch.Value, ch.Deleted)
	}
	// Output:
	// 1 step fetch false
	// 2 step build false
	// 3 step  true
}
