package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// openExample returns an initialized Context on a memory backend of its
// own, and a function that closes both.
func openExample[T any](name string) (*contextd.Context[T], func()) {
	b := memory.New(nil)
	cx, err := contextd.New[T](b, name, nil)
	if err != nil {
		panic(err)
	}
	if err := cx.Initialize(context.Background()); err != nil {
		panic(err)
	}
	return cx, func() { _ = cx.Close(); _ = b.Close() }
}

// GetEntry gives a key's value with the revision that wrote it: the
// revision to pass to IfRevision for a compare-and-set.
func ExampleContext_GetEntry() {
	ctx := context.Background()
	cx, done := openExample[string]("config")
	defer done()
	_ = cx.UpdateContext(ctx, "region", "eu-west")
	_ = cx.UpdateContext(ctx, "tier", "gold")

	e, ok, err := cx.GetEntry(ctx, "region")
	fmt.Println(e.Key, e.Value, e.Revision, ok, err)
	// Output:
	// region eu-west 1 true <nil>
}

// IfRevision makes a write conditional: it commits only while the key is
// still at the revision the caller read, else it fails with ErrConflict
// and writes nothing.
func ExampleIfRevision() {
	ctx := context.Background()
	cx, done := openExample[int]("stock")
	defer done()
	_ = cx.UpdateContext(ctx, "apples", 10)
	e, _, _ := cx.GetEntry(ctx, "apples")

	_ = cx.UpdateContext(ctx, "apples", 7) // someone else sells three

	err := cx.UpdateContext(ctx, "apples", e.Value-1, contextd.IfRevision(e.Revision))
	fmt.Println(errors.Is(err, contextd.ErrConflict))
	v, _, _ := cx.Get(ctx, "apples")
	fmt.Println(v)
	// Output:
	// true
	// 7
}

// Create writes a key only if it does not exist (IfAbsent), and reports
// the revision it committed at: the first claimant wins.
func ExampleContext_Create() {
	ctx := context.Background()
	cx, done := openExample[string]("jobs")
	defer done()

	rev, err := cx.Create(ctx, "nightly-report", "worker-1")
	fmt.Println(rev, err)
	_, err = cx.Create(ctx, "nightly-report", "worker-2")
	fmt.Println(errors.Is(err, contextd.ErrConflict))
	// Output:
	// 1 <nil>
	// true
}

// A Txn mixes puts, deletes and per-key conditions; it commits all of them
// in one revision, or nothing if a condition fails.
func ExampleContext_Txn() {
	ctx := context.Background()
	cx, done := openExample[int]("accounts")
	defer done()
	_ = cx.TransactionalUpdate(ctx, map[string]int{"alice": 100, "bob": 20})
	alice, _, _ := cx.GetEntry(ctx, "alice")

	rev, err := cx.Txn().
		Put("alice", alice.Value-30).
		Put("bob", 50).
		Delete("pending:alice").
		IfRevision("alice", alice.Revision).
		IfAbsent("frozen:alice").
		Commit(ctx)
	fmt.Println(rev, err)
	for k, v := range cx.All() {
		fmt.Println(k, v)
	}
	// Unordered output:
	// 2 <nil>
	// alice 70
	// bob 50
}

// WithTTL makes a key expire: every instance, and every watcher, sees it
// go as an ordinary delete at a new revision.
func ExampleWithTTL() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cx, done := openExample[string]("sessions")
	defer done()
	changes := cx.Watch(ctx, contextd.Key("sid-42"))

	_ = cx.UpdateContext(ctx, "sid-42", "alice", contextd.WithTTL(50*time.Millisecond))
	for ch := range changes {
		fmt.Println(ch.Revision, ch.Key, ch.Value, ch.Deleted)
		if ch.Deleted {
			break
		}
	}
	_, ok, _ := cx.Get(ctx, "sid-42")
	fmt.Println(ok)
	// Output:
	// 1 sid-42 alice false
	// 2 sid-42  true
	// false
}

// Prefix iterates the keys that start with a prefix, in no particular
// order, over one consistent state of the local copy: no copy is made and
// writers are not blocked.
func ExampleContext_Prefix() {
	ctx := context.Background()
	cx, done := openExample[string]("users")
	defer done()
	_ = cx.TransactionalUpdate(ctx, map[string]string{
		"user:1": "alice", "user:2": "bob", "group:admins": "alice",
	})

	for k, v := range cx.Prefix("user:") {
		fmt.Println(k, v)
	}
	fmt.Println(cx.Len())
	// Unordered output:
	// user:1 alice
	// user:2 bob
	// 3
}

// FromRevision resumes a watch where an earlier one stopped: the changes
// after that revision are replayed from the change log, then an UpToDate
// marker says that what follows is live.
func ExampleFromRevision() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cx, done := openExample[string]("workflow")
	defer done()
	_ = cx.UpdateContext(ctx, "step", "fetch")
	seen := cx.Revision() // what a consumer had processed
	_ = cx.UpdateContext(ctx, "step", "build")
	_ = cx.UpdateContext(ctx, "owner", "ci")

	for ch := range cx.Watch(ctx, contextd.FromRevision(seen), contextd.KeyPrefix("st")) {
		if ch.UpToDate {
			fmt.Println("caught up at", ch.Revision)
			break
		}
		fmt.Println(ch.Revision, ch.Key, ch.Value)
	}
	// Output:
	// 2 step build
	// caught up at 3
}

// WithInitial starts a watch with the current state, one change per key
// marked Initial, then an UpToDate marker, even for an empty context.
func ExampleWithInitial() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cx, done := openExample[bool]("feature_flags")
	defer done()
	_ = cx.UpdateContext(ctx, "dark_mode", true)

	for ch := range cx.Watch(ctx, contextd.WithInitial()) {
		if ch.UpToDate {
			fmt.Println("up to date at", ch.Revision)
			break
		}
		fmt.Println(ch.Key, ch.Value, ch.Initial)
	}
	// Output:
	// dark_mode true true
	// up to date at 1
}

// Lock.Context gives work guarded by a lock a ctx that ends when the lock
// is lost, so the work stops instead of running on unguarded.
func ExampleLock_Context() {
	ctx := context.Background()
	cx, done := openExample[int]("jobs")
	defer done()
	lock, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: "reindex", LockTimeout: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	work, cancel := lock.Context(ctx)
	defer cancel()

	_ = lock.Release(ctx) // as if the lock expired or was taken over
	<-work.Done()
	fmt.Println(errors.Is(context.Cause(work), contextd.ErrLockLost))
	// Output:
	// true
}
