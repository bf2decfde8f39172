package main

import (
	"bytes"
	"testing"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/conformance"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const want = `capabilities: ReleaseNotify+FairLocks
second instance sees alice: Alice <alice@example.com>
after 10 concurrent logins through both instances: 10 logins
a write while alice is locked: refused=true
the map store holds 1 key, encoded with json
`

func TestCustomBackend(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestCustomBackendRedisParts(t *testing.T) {
	srv := redistest.Start(t, nil)
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{Redis: srv.Addr()}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// composed is exactly what the store offers with a locker that notifies
// releases and queues waiters fairly: the store is neither the locker nor
// the broadcaster, and has no change log.
var composed = backend.Capabilities{ReleaseNotify: true, FairLocks: true}

// TestConformance proves mapStore with the suite every backend passes,
// composed with the memory backend's locker and broadcaster. Every
// NewBackend call shares the one store and the one memory backend, as
// processes share one database.
func TestConformance(t *testing.T) {
	const buffer = 1024
	store := newMapStore()
	mem := memory.New(&memory.Options{SubscriberBuffer: buffer})
	t.Cleanup(func() { _ = mem.Close() })
	conformance.Run(t, conformance.Harness{
		Capabilities: composed,
		NewBackend: func(t *testing.T) backend.Backend {
			b, err := backend.Compose(store, mem, mem)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		BreakSubscriptions: func(*testing.T) { mem.BreakSubscriptions() },
		OverflowAfter:      buffer + 1,
	})
}
