// Command sessionstore shows a session store shared by two pods of a web
// service, with per-key expiry. The login pod creates sessions with a TTL;
// the api pod checks them against its local copy on every request, without
// a round trip, and refreshes a session's TTL while it is used (a sliding
// expiry). A session nobody uses expires: both pods see it go as an
// ordinary delete, through Watch, whichever pod or the store noticed first.
// Logging out deletes the session at once.
//
//	go run ./examples/sessionstore
//
// With -redis host:port, -postgres URL or -sqlite FILE the pods share that
// backend instead of the embedded memory one; a backend without expiry
// refuses WithTTL with an error matching errors.ErrUnsupported.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

// Session is what the store keeps per session id.
type Session struct {
	User string `json:"user"`
}

// idle is how long a session lives without requests: short, for the demo,
// but long enough that a slow machine makes a request in time.
const idle = 3 * time.Second

func main() {
	flags := examplebackend.Register(flag.CommandLine)
	flag.Parse()
	if err := run(os.Stdout, *flags); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	backends := examplebackend.New(flags)
	defer backends.Close()
	login, err := examplebackend.OpenContext[Session](ctx, backends, "sessions", nil)
	if err != nil {
		return err
	}
	defer login.Close()
	api, err := examplebackend.OpenContext[Session](ctx, backends, "sessions", nil)
	if err != nil {
		return err
	}
	defer api.Close()

	// The api pod watches sessions end, to drop what it cached per user.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ended := api.Watch(watchCtx, contextd.KeyPrefix("sid:"))

	// Two users log in. Create refuses a session id that exists already.
	for sid, user := range map[string]string{"sid:a1": "alice", "sid:b2": "bob"} {
		if _, err := login.Create(ctx, sid, Session{User: user}, contextd.WithTTL(idle)); err != nil {
			if errors.Is(err, errors.ErrUnsupported) {
				return fmt.Errorf("this backend has no per-key expiry: %w", err)
			}
			return err
		}
	}
	// The api pod's copy gets them by event; Sync makes sure it has them
	// before the demo goes on.
	if err := api.Sync(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "login: alice and bob logged in")

	// Alice uses the api: each request checks her session locally and
	// slides its expiry forward; the write is conditional, so a session
	// that expired or logged out in between is not brought back.
	for range 3 {
		s, ok, err := request(ctx, api, "sid:a1")
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "api: request with sid:a1 -> %s (valid %v)\n", s.User, ok)
	}

	// Bob logs out: his session goes at once, for both pods.
	if err := login.Delete(ctx, "sid:b2"); err != nil {
		return err
	}
	if err := awaitEnd(ctx, ended, "sid:b2"); err != nil {
		return err
	}
	_, ok, _ := api.Get(ctx, "sid:b2")
	fmt.Fprintf(out, "api: bob logged out; sid:b2 valid %v\n", ok)

	// Alice stops making requests: her session expires after idle.
	if err := awaitEnd(ctx, ended, "sid:a1"); err != nil {
		return err
	}
	_, ok, _ = api.Get(ctx, "sid:a1")
	_, seen, err := login.Get(ctx, "sid:a1", contextd.Fresh()) // the store's view, not the copy's
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "api: alice's session expired; sid:a1 valid %v (store: %v)\n", ok, seen)
	return nil
}

// request is one api call carrying session id sid: a local read, then a
// refresh of the TTL that only commits while the session is unchanged.
func request(ctx context.Context, api *contextd.Context[Session], sid string) (Session, bool, error) {
	e, ok, err := api.GetEntry(ctx, sid)
	if err != nil || !ok {
		return Session{}, false, err
	}
	err = api.UpdateContext(ctx, sid, e.Value, contextd.IfRevision(e.Revision), contextd.WithTTL(idle))
	if errors.Is(err, contextd.ErrConflict) {
		return Session{}, false, nil // expired or logged out meanwhile
	}
	return e.Value, err == nil, err
}

// awaitEnd waits until the watch shows session sid deleted.
func awaitEnd(ctx context.Context, changes <-chan contextd.Change[Session], sid string) error {
	for {
		select {
		case ch, ok := <-changes:
			if !ok {
				return fmt.Errorf("watch ended before %s did: %w", sid, ctx.Err())
			}
			if ch.Key == sid && ch.Deleted {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to end: %w", sid, ctx.Err())
		}
	}
}
