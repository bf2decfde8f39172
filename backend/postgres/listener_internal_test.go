package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/internal/pgtest"
)

// listening returns the NOTIFY channels the listener has LISTENed to.
func (l *listener) listening() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]bool)
	for name, cs := range l.channels {
		if cs.listening {
			m[name] = true
		}
	}
	return m
}

// TestListenUnlisten: a channel is LISTENed to while it has subscribers
// and UNLISTENed when the last one leaves; subscribing again works.
func TestListenUnlisten(t *testing.T) {
	c := pgtest.Shared(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, c.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b, err := New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a1, _ := b.Subscribe(ctx, "a")
	a2, _ := b.Subscribe(ctx, "a")
	bs, err := b.Subscribe(ctx, "b")
	if err != nil || a1 == nil || a2 == nil {
		t.Fatal(err)
	}
	defer bs.Close()
	chA, chB := pgChannel(DefaultSchema, "a"), pgChannel(DefaultSchema, "b")
	if got := b.lis.listening(); !got[chA] || !got[chB] || len(got) != 2 {
		t.Fatalf("listening to %v; want %s and %s", got, chA, chB)
	}
	a1.Close()
	if got := b.lis.listening(); !got[chA] {
		t.Fatalf("after closing one of two subscriptions of a, listening to %v", got)
	}
	a2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for b.lis.listening()[chA] {
		if time.Now().After(deadline) {
			t.Fatalf("still listening to %s 10 s after its last subscription closed", chA)
		}
		time.Sleep(time.Millisecond) // polling the listener's state, with a deadline
	}
	if !b.lis.listening()[chB] {
		t.Fatal("UNLISTEN of a took b along")
	}
	again, err := b.Subscribe(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := b.Publish(ctx, "a", []byte("back")); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if m, err := again.Next(wctx); err != nil || string(m.Payload) != "back" {
		t.Fatalf("a subscription made after the UNLISTEN got %+v, %v", m, err)
	}
}
