package redis_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestModifyContendedReservations has several instances increment one key
// together (contended commits take the place of the next call: a
// reservation, backend.Batch.Requeue), then stops all but one, which
// goes on alone: the places the others' last commits took are given up
// without a call to claim them, so the lone writer does not wait for
// them (its ctx would end). No increment is lost, and once every
// instance is closed no waiter is left queued.
func TestModifyContendedReservations(t *testing.T) {
	srv := redistest.Start(t, nil)
	const instances, each, alone = 4, 150, 40
	cs := make([]*contextd.Context[int], instances)
	for i := range cs {
		c, err := contextd.New[int](newBackend(t, srv, nil), "reserve", &contextd.Options{ResyncInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Initialize(context.Background()); err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, instances)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := c.Modify(ctx, "counter", inc); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var last int
	for range alone {
		// Each alone on a key others may still hold places in: a place
		// nobody claims must not hold it up until the ctx ends.
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		v, err := cs[0].Modify(actx, "counter", inc)
		acancel()
		if err != nil {
			t.Fatal(err)
		}
		last = v
	}
	if want := instances*each + alone; last != want {
		t.Fatalf("counter is %d, want %d", last, want)
	}
	for _, c := range cs {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"{contextd:reserve}:queue:counter", "{contextd:reserve}:waiters"} {
		n, err := srv.Do(context.Background(), "EXISTS", k)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(0) {
			q, _ := srv.Do(context.Background(), "ZRANGE", k, "0", "-1", "WITHSCORES")
			t.Errorf("%s is left after every instance closed: %v", k, q)
		}
	}
}
