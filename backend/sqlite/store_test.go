package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
)

// TestKeysAreBytes stores keys and context names that are not plain
// ASCII: a NUL byte, bytes that are not UTF-8, and UTF-8 beyond ASCII.
func TestKeysAreBytes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	b1, b2 := openBackend(t, path, nil), openBackend(t, path, nil)
	keys := []string{"a\x00b", "\xff\xfe", "naïve ✓", "a"}
	for _, name := range []string{"ctx\x00\xff", "plain"} {
		var bt backend.Batch
		for i, k := range keys {
			bt.Ops = append(bt.Ops, backend.Op{Key: k, Value: []byte{byte(i), 0, 0xff}})
		}
		h := mustCommit(t, b1, name, bt)
		snap, err := b2.Load(ctx, name)
		if err != nil || snap.Head != h || len(snap.Entries) != len(keys) {
			t.Fatalf("Load(%q) = %+v, %v", name, snap, err)
		}
		for i, k := range keys {
			e, err := b2.Get(ctx, name, k)
			if err != nil || !bytes.Equal(e.Value, []byte{byte(i), 0, 0xff}) || e.Key != k {
				t.Errorf("Get(%q, %q) = %+v, %v", name, k, e, err)
			}
		}
		if _, err := b2.Get(ctx, name, "a\x00"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get of a key that is a prefix of a stored one = %v, want ErrNotFound", err)
		}
	}
}

func TestChangeLogKeepsItsLength(t *testing.T) {
	ctx := context.Background()
	b := openBackend(t, filepath.Join(t.TempDir(), "l.db"), &sqlite.Options{ChangeLogLength: 3})
	var h backend.Head
	for range 70 {
		h = mustCommit(t, b, "c", put("k", "v"))
	}
	events, err := b.ChangesSince(ctx, "c", h.Epoch, h.Revision-3)
	if err != nil || len(events) != 3 || events[0].Revision != h.Revision-2 {
		t.Fatalf("ChangesSince(head-3) = %d events, %v; want the last 3", len(events), err)
	}
	for _, after := range []uint64{0, 10, h.Revision - 4} {
		if _, err := b.ChangesSince(ctx, "c", h.Epoch, after); !errors.Is(err, backend.ErrLogTruncated) {
			t.Errorf("ChangesSince(%d) with a log of 3 at revision %d = %v, want ErrLogTruncated", after, h.Revision, err)
		}
	}
}

// TestWaitsForTheWriteLock holds the file's write lock from another
// connection: a commit waits for it, and gives up with ErrBusy after
// BusyTimeout or with ctx's error when ctx ends first.
func TestWaitsForTheWriteLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.db")
	b := openBackend(t, path, &sqlite.Options{BusyTimeout: 100 * time.Millisecond})
	patient := openBackend(t, path, nil)
	mustCommit(t, b, "c", put("k", "0"))

	tx, err := rawDB(t, path).Begin() // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(context.Background(), "c", put("k", "1")); !errors.Is(err, sqlite.ErrBusy) {
		t.Errorf("Commit while another connection holds the write lock, BusyTimeout 100ms = %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = patient.Commit(ctx, "c", put("k", "2"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Commit whose ctx ends while it waits for the write lock = %v, want context.DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := patient.Commit(context.Background(), "c", put("k", "3"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Commit returned (%v) while another connection held the write lock", err)
	default:
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Commit after the write lock was released: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Commit still waiting after the write lock was released")
	}
	e, err := b.Get(context.Background(), "c", "k")
	if err != nil || string(e.Value) != "3" || e.Revision != 2 {
		t.Fatalf("k = %+v, %v; want only the last commit applied, at revision 2", e, err)
	}
}

// TestWaitingWritersAreSeen checks the signal a holder of the write lock
// steps back for: while a Backend's commit waits for the lock another
// connection holds, other Backends see it waiting, and once it committed,
// they do not.
func TestWaitingWritersAreSeen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gate.db")
	holder, waiter := openBackend(t, path, nil), openBackend(t, path, nil)
	if sqlite.OthersWaiting(holder) {
		t.Fatal("a writer is seen waiting before anyone waits")
	}
	tx, err := rawDB(t, path).Begin() // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := waiter.Commit(context.Background(), "c", put("k", "v"))
		done <- err
	}()
	deadline := time.Now().Add(waitLimit)
	for !sqlite.OthersWaiting(holder) {
		if time.Now().After(deadline) {
			t.Fatal("a commit waiting for the write lock is not seen waiting")
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sqlite.OthersWaiting(holder) {
		t.Fatal("the writer is still seen waiting after its commit")
	}
}
