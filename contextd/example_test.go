package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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

	// Ten goroutines increment one key at once. Calls that find another
	// under way join its commit (Stats().ModifyJoined counts them), each
	// still with its own result; none is lost.
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

// Get reads the local copy, without a round trip. A key that does not
// exist gives ok == false and no error.
func ExampleContext_Get() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[bool](b, "feature_flags", nil)
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := cx.UpdateContext(ctx, "dark_mode", true); err != nil {
		panic(err)
	}

	on, ok, err := cx.Get(ctx, "dark_mode")
	fmt.Println(on, ok, err)
	on, ok, err = cx.Get(ctx, "beta_banner")
	fmt.Println(on, ok, err)
	// Output:
	// true true <nil>
	// false false <nil>
}

// With Fresh, Get reads the store: it sees every write that completed
// before it, also another instance's whose change event may not have
// arrived yet.
func ExampleContext_Get_fresh() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	admin, _ := contextd.New[bool](b, "feature_flags", nil)
	defer admin.Close()
	cx, _ := contextd.New[bool](b, "feature_flags", nil)
	defer cx.Close()
	for _, instance := range []*contextd.Context[bool]{admin, cx} {
		if err := instance.Initialize(ctx); err != nil {
			panic(err)
		}
	}

	if err := admin.UpdateContext(ctx, "maintenance", true); err != nil {
		panic(err)
	}
	on, ok, err := cx.Get(ctx, "maintenance", contextd.Fresh())
	fmt.Println(on, ok, err)
	// Output: true true <nil>
}

// UpdateContext sets one key; the writer reads its own write at once.
func ExampleContext_UpdateContext() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	users, _ := contextd.New[User](b, "users", nil)
	defer users.Close()
	if err := users.Initialize(ctx); err != nil {
		panic(err)
	}

	if err := users.UpdateContext(ctx, "alice", User{Name: "Alice", Email: "alice@example.com"}); err != nil {
		panic(err)
	}
	alice, _, _ := users.Get(ctx, "alice")
	fmt.Println(alice.Email)
	// Output: alice@example.com
}

// TransactionalUpdate writes several keys in one step: every instance sees
// both changes, at one revision, or neither.
func ExampleContext_TransactionalUpdate() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	users, _ := contextd.New[User](b, "users", nil)
	defer users.Close()
	watcher, _ := contextd.New[User](b, "users", nil)
	defer watcher.Close()
	for _, cx := range []*contextd.Context[User]{users, watcher} {
		if err := cx.Initialize(ctx); err != nil {
			panic(err)
		}
	}
	changes := watcher.Watch(ctx)

	// Alice and Bob swap email addresses; no instance ever sees both
	// users with the same one.
	if err := users.TransactionalUpdate(ctx, map[string]User{
		"alice": {Name: "Alice", Email: "shared@example.com"},
		"bob":   {Name: "Bob", Email: "alice@example.com"},
	}); err != nil {
		panic(err)
	}
	got := []contextd.Change[User]{<-changes, <-changes}
	slices.SortFunc(got, func(a, b contextd.Change[User]) int { return strings.Compare(a.Key, b.Key) })
	for _, ch := range got {
		fmt.Println(ch.Revision, ch.Key, ch.Value.Email)
	}
	// Output:
	// 1 alice shared@example.com
	// 1 bob alice@example.com
}

// GetContext returns a copy of the whole map.
func ExampleContext_GetContext() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	users, _ := contextd.New[User](b, "users", nil)
	defer users.Close()
	if err := users.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := users.TransactionalUpdate(ctx, map[string]User{
		"alice": {Name: "Alice", Email: "alice@example.com"},
		"bob":   {Name: "Bob", Email: "bob@example.com"},
	}); err != nil {
		panic(err)
	}

	all, err := users.GetContext(ctx)
	if err != nil {
		panic(err)
	}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		fmt.Printf("%s: %s\n", k, all[k].Email)
	}
	// Output:
	// alice: alice@example.com
	// bob: bob@example.com
}

// Delete removes keys in one step; keys that do not exist are fine.
func ExampleContext_Delete() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	sessions, _ := contextd.New[string](b, "sessions", nil)
	defer sessions.Close()
	if err := sessions.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := sessions.TransactionalUpdate(ctx, map[string]string{"s1": "alice", "s2": "bob", "s3": "carol"}); err != nil {
		panic(err)
	}

	if err := sessions.Delete(ctx, "s1"); err != nil {
		panic(err)
	}
	// Several keys at once: a transaction.
	if _, err := sessions.Txn().Delete("s2").Delete("s-unknown").Commit(ctx); err != nil {
		panic(err)
	}
	left, _ := sessions.GetContext(ctx)
	fmt.Println(left)
	// Output: map[s3:carol]
}

// Sync brings the local copy up to the store: reads after it see every
// write that completed before it was called, by any instance.
func ExampleContext_Sync() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	admin, _ := contextd.New[bool](b, "feature_flags", nil)
	defer admin.Close()
	cx, _ := contextd.New[bool](b, "feature_flags", nil)
	defer cx.Close()
	for _, instance := range []*contextd.Context[bool]{admin, cx} {
		if err := instance.Initialize(ctx); err != nil {
			panic(err)
		}
	}

	if err := admin.UpdateContext(ctx, "new_checkout", true); err != nil {
		panic(err)
	}
	if err := cx.Sync(ctx); err != nil {
		panic(err)
	}
	on, _, _ := cx.Get(ctx, "new_checkout") // the local copy, now current
	fmt.Println(on, cx.Revision(), cx.Lag())
	// Output: true 1 0
}

// Revision, Lag, Ready and Stats tell how fresh an instance's copy is.
func ExampleContext_Revision() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[int](b, "counters", nil)
	defer cx.Close()
	fmt.Println(cx.Ready())
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	_ = cx.UpdateContext(ctx, "visits", 1)
	_ = cx.UpdateContext(ctx, "visits", 2)

	fmt.Println(cx.Ready(), cx.Revision(), cx.Lag(), cx.Stats().Snapshots)
	// Output:
	// false
	// true 2 0 1
}

// A write made WithLock(l) goes through the caller's own lock, which keeps
// out every other write to the key, even this instance's without it; once
// the lock is released such a write is refused.
func ExampleWithLock() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	// MaxRetries -1: writes to a locked key fail at once instead of waiting.
	jobs, _ := contextd.New[string](b, "jobs", &contextd.Options{MaxRetries: -1})
	defer jobs.Close()
	if err := jobs.Initialize(ctx); err != nil {
		panic(err)
	}
	lock, err := jobs.AcquireLock(ctx, contextd.LockOptions{Key: "nightly"})
	if err != nil {
		panic(err)
	}

	err = jobs.UpdateContext(ctx, "nightly", "started")
	fmt.Println(errors.Is(err, contextd.ErrLockNotAcquired))
	err = jobs.UpdateContext(ctx, "nightly", "started", contextd.WithLock(lock))
	fmt.Println(err)

	_ = lock.Release(ctx)
	err = jobs.UpdateContext(ctx, "nightly", "done", contextd.WithLock(lock))
	fmt.Println(errors.Is(err, contextd.ErrLockLost))
	// Output:
	// true
	// <nil>
	// true
}

// With FailClosed, reads fail with ErrStale while the instance knows its
// copy may be out of date, here because the backend became unreachable;
// without it (the default) they serve the last known state.
func ExampleOptions_failClosed() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	strict, _ := contextd.New[bool](b, "feature_flags", &contextd.Options{FailClosed: true})
	defer strict.Close()
	lenient, _ := contextd.New[bool](b, "feature_flags", nil)
	defer lenient.Close()
	for _, cx := range []*contextd.Context[bool]{strict, lenient} {
		if err := cx.Initialize(ctx); err != nil {
			panic(err)
		}
	}
	if err := strict.UpdateContext(ctx, "dark_mode", true); err != nil {
		panic(err)
	}
	if err := lenient.Sync(ctx); err != nil {
		panic(err)
	}

	_ = b.Close() // as if the server went away
	fmt.Println(strict.Sync(ctx) != nil, lenient.Sync(ctx) != nil)

	_, _, err := strict.Get(ctx, "dark_mode")
	fmt.Println(errors.Is(err, contextd.ErrStale))
	on, _, err := lenient.Get(ctx, "dark_mode")
	fmt.Println(on, err)
	// Output:
	// true true
	// true
	// true <nil>
}

// Release gives a lock back, so the next contender gets it; releasing
// twice is fine.
func ExampleLock_Release() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	worker1, _ := contextd.New[string](b, "invoices", nil)
	defer worker1.Close()
	worker2, _ := contextd.New[string](b, "invoices", nil)
	defer worker2.Close()
	for _, cx := range []*contextd.Context[string]{worker1, worker2} {
		if err := cx.Initialize(ctx); err != nil {
			panic(err)
		}
	}
	once := contextd.LockOptions{Key: "invoice-42", MaxRetries: -1} // one attempt, no waiting

	lock, err := worker1.AcquireLock(ctx, once)
	if err != nil {
		panic(err)
	}
	_, err = worker2.AcquireLock(ctx, once)
	fmt.Println(errors.Is(err, contextd.ErrLockNotAcquired))

	fmt.Println(lock.Release(ctx), lock.Release(ctx))
	next, err := worker2.AcquireLock(ctx, once)
	fmt.Println(err)
	_ = next.Release(ctx)
	// Output:
	// true
	// <nil> <nil>
	// <nil>
}

// Token is a fencing token: it grows with every acquisition, so a system
// outside contextd that remembers the highest token it has seen can refuse
// work from a holder that has since been superseded.
func ExampleLock_Token() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[string](b, "jobs", nil)
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}

	first, _ := cx.AcquireLock(ctx, contextd.LockOptions{Key: "leader"})
	_ = first.Release(ctx)
	second, _ := cx.AcquireLock(ctx, contextd.LockOptions{Key: "leader"})
	defer second.Release(ctx)
	fmt.Println(second.Token() > first.Token())
	// Output: true
}

// Extend gives a held lock more time; a lock no longer held cannot be
// extended.
func ExampleLock_Extend() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[string](b, "jobs", nil)
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	lock, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: "export", LockTimeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}

	fmt.Println(lock.Extend(ctx, time.Minute)) // the export takes longer than planned
	_ = lock.Release(ctx)
	fmt.Println(errors.Is(lock.Extend(ctx, time.Minute), contextd.ErrLockLost))
	// Output:
	// <nil>
	// true
}

// With AutoExtend a lock is renewed until Release, however long the work
// takes. Lost is closed if renewal fails, so the work checks it between
// steps; it is closed on Release as well.
func ExampleLockOptions_autoExtend() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	cx, _ := contextd.New[string](b, "jobs", nil)
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	lock, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: "reindex", AutoExtend: true})
	if err != nil {
		panic(err)
	}

	for _, step := range []string{"scan", "build", "swap"} {
		select {
		case <-lock.Lost():
			fmt.Println("lock lost: stopping before", step)
			return
		default:
		}
		if err := cx.UpdateContext(ctx, "reindex", step, contextd.WithLock(lock)); err != nil {
			panic(err)
		}
	}
	_ = lock.Release(ctx)
	<-lock.Lost()
	step, _, _ := cx.Get(ctx, "reindex")
	fmt.Println("finished at", step)
	// Output: finished at swap
}
