// Command quickstart runs the original library's full example with contextd:
// update "user", then update "user" and "loggedIn" in one transaction, then
// print the whole context.
//
// By default it runs on the embedded memory backend:
//
//	go run ./examples/quickstart
//
// With -redis host:port, -postgres URL or -sqlite FILE it runs the same on
// Redis, PostgreSQL or an SQLite database file:
//
//	go run ./examples/quickstart -sqlite /tmp/quickstart.db
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

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
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
	flags := examplebackend.Register(flag.CommandLine)
	flag.Parse()
	if err := run(os.Stdout, *flags); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The embedded memory backend, unless a flag names Redis, PostgreSQL
	// or an SQLite file.
	backends := examplebackend.New(flags)
	defer backends.Close()
	b, err := backends.Open(ctx)
	if err != nil {
		return err
	}

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
