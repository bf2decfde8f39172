// Command custombackend runs contextd on a backend of its own: a toy store
// (mapStore, a Go map with revisions, epochs, commit ids and conditions, in
// store.go) composed with the locker and broadcaster of an existing backend
// through backend.Compose. Its test proves the store with the conformance
// suite, which is how any new backend shows it is correct.
//
//	go run ./examples/custombackend
//
// By default the locker and broadcaster are the memory backend's; with
// -redis host:port, -postgres URL or -sqlite FILE they are that backend's,
// while the store stays the map in this process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

// User is what the context holds, per user name.
type User struct {
	Name   string `json:"name"`
	Email  string `json:"email"`
	Logins int    `json:"logins"`
}

func main() {
	flags := examplebackend.Register(flag.CommandLine)
	flag.Parse()
	if err := run(os.Stdout, *flags); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	store := newMapStore()
	parts := examplebackend.New(flags)
	defer parts.Close()
	// Each instance composes the one store with a locker and broadcaster
	// client of its own.
	open := func(opts *contextd.Options) (*contextd.Context[User], error) {
		p, err := parts.Open(ctx)
		if err != nil {
			return nil, err
		}
		b, err := backend.Compose(store, p, p)
		if err != nil {
			return nil, err
		}
		cx, err := contextd.New[User](b, "users", opts)
		if err != nil {
			return nil, err
		}
		if err := cx.Initialize(ctx); err != nil {
			_ = cx.Close()
			return nil, err
		}
		return cx, nil
	}
	first, err := open(nil)
	if err != nil {
		return err
	}
	defer first.Close()
	second, err := open(nil)
	if err != nil {
		return err
	}
	defer second.Close()
	fmt.Fprintf(out, "capabilities: %v\n", first.Capabilities())

	// A write through one instance reaches the other.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	changes := second.Watch(watchCtx)
	if err := first.UpdateContext(ctx, "alice", User{Name: "Alice", Email: "alice@example.com"}); err != nil {
		return err
	}
	ch := <-changes
	stopWatch()
	fmt.Fprintf(out, "second instance sees %s: %s <%s>\n", ch.Key, ch.Value.Name, ch.Value.Email)

	// Read-modify-write from both instances at once loses no update.
	const logins = 10
	var wg sync.WaitGroup
	errs := make(chan error, logins)
	for i := range logins {
		cx := []*contextd.Context[User]{first, second}[i%2]
		wg.Go(func() {
			_, err := cx.Modify(ctx, "alice", func(u User, _ bool) (User, error) {
				u.Logins++
				return u, nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	alice, _, err := second.Get(ctx, "alice", contextd.Fresh())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "after %d concurrent logins through both instances: %d logins\n", logins, alice.Logins)

	// A lock from the composed locker keeps other writers out.
	lock, err := first.AcquireLock(ctx, contextd.LockOptions{Key: "alice"})
	if err != nil {
		return err
	}
	impatient, err := open(&contextd.Options{MaxRetries: -1}) // no waiting for locks
	if err != nil {
		return err
	}
	defer impatient.Close()
	err = impatient.UpdateContext(ctx, "alice", User{Name: "Mallory"})
	fmt.Fprintf(out, "a write while alice is locked: refused=%v\n", errors.Is(err, contextd.ErrLockNotAcquired))
	if err := lock.Release(ctx); err != nil {
		return err
	}

	snap, err := store.Load(ctx, "users")
	if err != nil {
		return err
	}
	// Not its revision: how many commits the logins took depends on how
	// many of an instance's concurrent Modify calls were combined.
	fmt.Fprintf(out, "the map store holds %d key, encoded with %s\n", len(snap.Entries), snap.Codec)
	return nil
}
