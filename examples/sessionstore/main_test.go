package main

import (
	"bytes"
	"testing"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/examples/internal/examplebackend"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const want = `login: alice and bob logged in
api: request with sid:a1 -> alice (valid true)
api: request with sid:a1 -> alice (valid true)
api: request with sid:a1 -> alice (valid true)
api: bob logged out; sid:b2 valid false
api: alice's session expired; sid:a1 valid false (store: false)
`

// TestSessionStore runs the example on the memory backend: sessions
// refreshed by requests stay, a logged-out one goes at once, an idle one
// expires for both pods.
func TestSessionStore(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestSessionStoreRedis runs it on a redis-server of its own, where a
// deadline index in Redis expires the sessions.
func TestSessionStoreRedis(t *testing.T) {
	srv := redistest.Start(t, nil)
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{Redis: srv.Addr()}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
