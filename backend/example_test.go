package backend_test

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// Compose mixes parts of backends. Capabilities that span two parts
// (atomic publishing, lock-aware commits) are offered only when those parts
// are one backend.
func ExampleCompose() {
	store, bus := memory.New(nil), memory.New(nil)
	defer store.Close()
	defer bus.Close()
	b, err := backend.Compose(store, store, bus)
	if err != nil {
		panic(err)
	}
	fmt.Println(backend.CapabilitiesOf(b))

	cx, _ := contextd.New[int](b, "composed", nil)
	defer cx.Close()
	ctx := context.Background()
	if err := cx.Initialize(ctx); err != nil {
		panic(err)
	}
	if err := cx.UpdateContext(ctx, "k", 1); err != nil {
		panic(err)
	}
	v, _, _ := cx.Get(ctx, "k")
	fmt.Println(v)
	// Output:
	// LockAwareCommit+ChangeLog+ReleaseNotify+FairLocks+Expiry
	// 1
}

// A receiver decodes an event's head first and its changes only when it
// needs them: here, an event it already has is skipped.
func ExampleEventDecoder() {
	payload, _ := backend.EncodeEvent(backend.Event{
		Head:    backend.Head{Epoch: "e0e0", Revision: 7, Commit: "c7c7", Parent: "c6c6"},
		Origin:  "a1a1",
		Changes: []backend.Change{{Key: "user", Value: []byte(`{"name":"Jane"}`)}},
	})
	var dec backend.EventDecoder
	applied := uint64(6)
	for range 2 {
		ev, err := dec.DecodeHead(payload)
		if err != nil {
			fmt.Println(err)
			return
		}
		if ev.Revision <= applied {
			fmt.Println("revision", ev.Revision, "already applied")
			continue
		}
		for _, ch := range dec.DecodeChanges() {
			fmt.Printf("revision %d: %s = %s\n", ev.Revision, ch.Key, ch.Value)
		}
		applied = ev.Revision
	}
	// Output:
	// revision 7: user = {"name":"Jane"}
	// revision 7 already applied
}

// PeekEvent tells a receiver's own echo from the head's wire bytes, before
// it decodes anything; what it then uses comes from a full decode.
func ExamplePeekEvent() {
	self := "0123456789abcdef"
	payload, err := backend.EncodeEvent(backend.Event{
		Head:    backend.Head{Epoch: "00aa", Revision: 7, Commit: "01bb"},
		Origin:  self,
		Changes: []backend.Change{{Key: "k", Value: []byte(`1`)}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, rev, origin, ok := backend.PeekEvent(payload)
	mine := ok && string(origin) == string(backend.AppendWireID(nil, self))
	fmt.Println(rev, mine)
	// Output: 7 true
}
