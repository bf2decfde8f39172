// Command quickstart runs the original library's full example with contextd:
// update "user", then update "user" and "loggedIn" in one transaction, then
// print the whole context.
//
// By default it runs on the embedded memory backend:
//
//	go run ./examples/quickstart
//
// With -redis host:port (or REDIS_ADDR) it runs the same on Redis.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/exampleredis"
)

// Value is what this context's keys hold. The original stored an untyped
// object under "user" and a boolean under "loggedIn"; one Go type covers
// both, with the field that applies set.
type Value struct {
	User     *User `json:"user,omitempty"`
	LoggedIn *bool `json:"loggedIn,omitempty"`
}

func (v Value) String() string {
	switch {
	case v.User != nil:
		return fmt.Sprintf("%s <%s>", v.User.Name, v.User.Email)
	case v.LoggedIn != nil:
		return fmt.Sprint(*v.LoggedIn)
	}
	return "(empty)"
}

// User is the original example's user object.
type User struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func main() {
	redisAddr := flag.String("redis", os.Getenv("REDIS_ADDR"), "run on Redis at host:port instead of the embedded memory backend")
	flag.Parse()
	if err := run(os.Stdout, *redisAddr); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, redisAddr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b, closeBackend, err := openBackend(redisAddr)
	if err != nil {
		return err
	}
	defer closeBackend()

	// Create and initialize the context.
	cxtd, err := contextd.New[Value](b, "my_cxtd", nil)
	if err != nil {
		return err
	}
	defer cxtd.Close()
	if err := cxtd.Initialize(ctx); err != nil {
		return err
	}

	// Update context.
	if err := cxtd.UpdateContext(ctx, "user", Value{User: &User{Name: "John Doe", Email: "john@example.com"}}); err != nil {
		return err
	}

	// Perform transactional updates.
	loggedIn := true
	if err := cxtd.TransactionalUpdate(ctx, map[string]Value{
		"user":     {User: &User{Name: "Jane Doe", Email: "jane@example.com"}},
		"loggedIn": {LoggedIn: &loggedIn},
	}); err != nil {
		return err
	}

	// Retrieve the current context.
	current, err := cxtd.GetContext(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Current Context (revision %d):\n", cxtd.Revision())
	for _, key := range slices.Sorted(maps.Keys(current)) {
		fmt.Fprintf(out, "  %-9s %v\n", key+":", current[key])
	}
	return nil
}

func openBackend(redisAddr string) (backend.Backend, func(), error) {
	if redisAddr == "" {
		b := memory.New(nil)
		return b, func() { _ = b.Close() }, nil
	}
	b, closeRedis, err := exampleredis.Open(redisAddr)
	if err != nil {
		return nil, nil, err
	}
	return b, closeRedis, nil
}
