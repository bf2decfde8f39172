package memory_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
)

// The memory backend can be used directly, in bytes, as contextd uses it.
func Example() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()

	head, err := b.Commit(ctx, "settings", backend.Batch{
		Ops: []backend.Op{
			{Key: "mode", Value: []byte(`"fast"`)},
			{Key: "limit", Value: []byte(`10`)},
		},
		Codec: "json",
	})
	if err != nil {
		fmt.Println("commit:", err)
		return
	}
	fmt.Println("committed revision", head.Revision)

	snap, err := b.Load(ctx, "settings")
	if err != nil {
		fmt.Println("load:", err)
		return
	}
	entry, err := b.Get(ctx, "settings", "mode")
	if err != nil {
		fmt.Println("get:", err)
		return
	}
	fmt.Println("loaded revision", snap.Revision, "with", len(snap.Entries), "entries, codec", snap.Codec)
	fmt.Printf("mode = %s (written at revision %d)\n", entry.Value, entry.Revision)
	// Output:
	// committed revision 1
	// loaded revision 1 with 2 entries, codec json
	// mode = "fast" (written at revision 1)
}

// ListLocks (locker.Lister) shows who holds which lock until when, as
// "contextd locks" prints it.
func ExampleBackend_ListLocks() {
	ctx := context.Background()
	b := memory.New(nil)
	defer b.Close()
	lease, err := b.TryAcquire(ctx, "jobs", "deploy", time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	held, err := b.ListLocks(ctx, "jobs")
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range held {
		fmt.Println(h.Key, h.Token == lease.Token, h.Fence, time.Until(h.Expires) > 59*time.Second)
	}
	// Output:
	// deploy true 1 true
}
