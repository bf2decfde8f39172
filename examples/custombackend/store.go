package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/contextd-go/contextd/backend"
)

// mapStore is a toy backend.Store: every context is a Go map behind one
// mutex. It keeps what the Store contract asks for (revisions, epochs,
// commit ids, conditions, the codec name) and nothing more: no change log,
// no atomic publishing, no lock-aware commits, so contextd uses its
// generic write path on it (take locks, commit, publish, release).
//
// It lives in one process, so only Contexts in this process share it; a
// real store would keep the same data in a database.
type mapStore struct {
	mu       sync.Mutex
	contexts map[string]*mapContext
}

var _ backend.Store = (*mapStore)(nil)

// mapContext is one context's data. Stored values are never changed in
// place; callers get copies.
type mapContext struct {
	head    backend.Head // epoch, revision, last commit id and its parent
	codec   string
	entries map[string]backend.Entry
}

func newMapStore() *mapStore {
	return &mapStore{contexts: make(map[string]*mapContext)}
}

// Load returns a copy of every entry and the head they belong to.
// A context never written has the zero Head and no entries.
func (s *mapStore) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return backend.Snapshot{}, fmt.Errorf("mapstore: load %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contexts[name]
	if c == nil {
		return backend.Snapshot{}, nil
	}
	snap := backend.Snapshot{Head: c.head, Codec: c.codec, Entries: make([]backend.Entry, 0, len(c.entries))}
	for _, e := range c.entries {
		snap.Entries = append(snap.Entries, copyEntry(e))
	}
	return snap, nil
}

// Get returns a copy of one entry, or an error matching
// backend.ErrNotFound.
func (s *mapStore) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	if err := ctx.Err(); err != nil {
		return backend.Entry{}, fmt.Errorf("mapstore: get %q in %q: %w", key, name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.contexts[name]; c != nil {
		if e, ok := c.entries[key]; ok {
			return copyEntry(e), nil
		}
	}
	return backend.Entry{}, fmt.Errorf("mapstore: get %q in %q: %w", key, name, backend.ErrNotFound)
}

// Revision returns the context's head.
func (s *mapStore) Revision(ctx context.Context, name string) (backend.Head, error) {
	if err := ctx.Err(); err != nil {
		return backend.Head{}, fmt.Errorf("mapstore: revision of %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.contexts[name]; c != nil {
		return c.head, nil
	}
	return backend.Head{}, nil
}

// Commit applies b as one step, under the mutex:
//
//   - refuses a malformed batch (no ops, an empty key, a key written twice);
//   - ErrCodecMismatch if the batch's codec is not the context's;
//   - ErrConflict unless every condition holds: the key's revision equals
//     Condition.Revision (0: the key is absent) and, when Condition.Commit
//     is set, the key was last written by that commit;
//   - otherwise the revision goes up by one, the commit gets a new id whose
//     parent is the previous commit's, every put entry is stamped with
//     both, and deletes drop their keys. The first commit of a context
//     picks a random epoch and records the codec.
//
// Nothing is written unless everything is. Leases are ignored: this store
// does not offer LockAwareCommit.
func (s *mapStore) Commit(ctx context.Context, name string, b backend.Batch) (backend.Head, error) {
	if err := ctx.Err(); err != nil {
		return backend.Head{}, fmt.Errorf("mapstore: commit to %q: %w", name, err)
	}
	if err := validate(b); err != nil {
		return backend.Head{}, fmt.Errorf("mapstore: commit to %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contexts[name]
	if c == nil {
		c = &mapContext{entries: make(map[string]backend.Entry)}
	}
	if c.codec != "" && b.Codec != "" && b.Codec != c.codec {
		return backend.Head{}, fmt.Errorf("mapstore: commit to %q: batch codec %q, context codec %q: %w", name, b.Codec, c.codec, backend.ErrCodecMismatch)
	}
	for _, cond := range b.Conditions {
		e, ok := c.entries[cond.Key]
		switch {
		case !ok && cond.Revision != 0, ok && e.Revision != cond.Revision:
			return backend.Head{}, fmt.Errorf("mapstore: commit to %q: key %q is at revision %d, condition wants %d: %w", name, cond.Key, e.Revision, cond.Revision, backend.ErrConflict)
		case ok && cond.Commit != "" && e.Commit != cond.Commit:
			return backend.Head{}, fmt.Errorf("mapstore: commit to %q: key %q was written by commit %q, condition wants %q: %w", name, cond.Key, e.Commit, cond.Commit, backend.ErrConflict)
		}
	}

	head := backend.Head{Epoch: c.head.Epoch, Revision: c.head.Revision + 1, Commit: newID(), Parent: c.head.Commit}
	if head.Epoch == "" {
		head.Epoch = newID()
	}
	for _, op := range b.Ops {
		if op.Delete {
			delete(c.entries, op.Key)
			continue
		}
		c.entries[op.Key] = backend.Entry{Key: op.Key, Value: clone(op.Value), Revision: head.Revision, Commit: head.Commit}
	}
	c.head = head
	if c.codec == "" {
		c.codec = b.Codec
	}
	s.contexts[name] = c
	return head, nil
}

// validate refuses batches no store could apply.
func validate(b backend.Batch) error {
	if len(b.Ops) == 0 {
		return errors.New("batch has no ops")
	}
	seen := make(map[string]bool, len(b.Ops))
	for _, op := range b.Ops {
		if op.Key == "" {
			return errors.New("batch has an op with an empty key")
		}
		if seen[op.Key] {
			return fmt.Errorf("batch writes key %q twice", op.Key)
		}
		seen[op.Key] = true
		if op.TTL != 0 {
			// Keeping the key for good would lose the caller's intent
			// silently: say this store has no expiry.
			return fmt.Errorf("batch puts key %q with a TTL: mapstore has no expiry: %w", op.Key, errors.ErrUnsupported)
		}
	}
	for _, cond := range b.Conditions {
		if cond.Key == "" {
			return errors.New("batch has a condition with an empty key")
		}
	}
	return nil
}

func copyEntry(e backend.Entry) backend.Entry {
	e.Value = clone(e.Value)
	return e
}

// clone copies b; an empty value stays a value, never nil.
func clone(b []byte) []byte {
	return append(make([]byte, 0, len(b)), b...)
}

// newID returns 16 random hex characters, for epochs and commit ids.
func newID() string {
	var buf [8]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(buf[:])
}
