package postgres_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/contextd"
)

// Open a Backend on a PostgreSQL database and share a context through it.
// It needs a server, so it has no checked output: set CONTEXTD_POSTGRES_URL
// (for example postgres://user:pass@localhost:5432/app) to run it.
func Example() {
	url := os.Getenv("CONTEXTD_POSTGRES_URL")
	if url == "" {
		return
	}
	ctx := context.Background()
	b, err := postgres.Open(ctx, url, nil) // nil: schema "contextd", all capabilities
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	flags, err := contextd.New[bool](b, "feature-flags", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer flags.Close()
	if err := flags.Initialize(ctx); err != nil {
		log.Fatal(err)
	}
	if err := flags.UpdateContext(ctx, "new-checkout", true); err != nil {
		log.Fatal(err)
	}
	on, _, _ := flags.Get(ctx, "new-checkout")
	fmt.Println("new-checkout:", on)
}

// Use a pool the application already has; the Backend never closes it.
// Options.Schema keeps tenants of one database apart.
func ExampleNew() {
	url := os.Getenv("CONTEXTD_POSTGRES_URL")
	if url == "" {
		return
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	b, err := postgres.New(pool, &postgres.Options{Schema: "tenant_a"})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	head, err := b.Revision(ctx, "feature-flags")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("revision:", head.Revision)
}
