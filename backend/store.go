package backend

import (
	"context"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// Store keeps the entries of named contexts. Every commit to a context
// increments its revision by one and stamps the entries it writes with the
// new revision.
//
// Implementations must be safe for concurrent use and must not retry.
type Store interface {
	// Load returns a consistent snapshot of context name: its entries
	// exactly as of the returned revision. A context that was never written
	// has an empty Epoch and revision 0.
	Load(ctx context.Context, name string) (Snapshot, error)

	// Get returns one entry, or an error matching ErrNotFound.
	Get(ctx context.Context, name, key string) (Entry, error)

	// Commit applies the batch atomically if every condition holds, and
	// returns the context's new head. It fails with ErrConflict if a
	// condition does not hold and with ErrCodecMismatch if the batch's
	// codec differs from the one recorded with the context; then nothing is
	// written. A lock-aware store (Capabilities.LockAwareCommit) also fails
	// with ErrLocked or locker.ErrNotHeld, see Batch.Leases.
	//
	// The first commit to a context that has no epoch (never written, or
	// its data was lost) creates a new random epoch.
	Commit(ctx context.Context, name string, b Batch) (Head, error)

	// Revision returns the context's current head.
	Revision(ctx context.Context, name string) (Head, error)
}

// Head identifies a state of a context: the epoch (a random id that changes
// when the stored data is lost and recreated, so revisions of different
// epochs are never compared), the revision within that epoch, and the id of
// the commit that made it.
type Head struct {
	Epoch    string
	Revision uint64
	// Commit is the id of the commit that produced this state; empty at
	// revision 0 and for stores that do not track commit ids. Equal epochs
	// and revisions with different commits are different histories: a
	// failover to a replica that missed writes reuses revision numbers.
	Commit string
	// Parent is the id of the commit before Commit, so a receiver of an
	// event can check that the commit continues the history it has.
	Parent string
}

// Entry is one stored key with its value and the revision that last wrote it.
type Entry struct {
	Key   string
	Value []byte
	// Revision is the revision that last wrote the key, at least 1. A
	// store reports an entry it holds without a valid revision (written
	// by another program, or damaged) with Revision 0: contextd then reads
	// it as ErrCorrupt.
	Revision uint64
	// Commit is the id of the commit that last wrote the key (Head.Commit
	// of Revision); empty if the store does not know it.
	Commit string
	// Expires is when the key expires by the store's clock (a put with
	// Op.TTL), the zero time if it does not.
	Expires time.Time
}

// Snapshot is the state of a context at one head.
type Snapshot struct {
	Head
	// Codec is the codec name recorded with the context, empty if none.
	Codec string
	// Entries holds every live key once, in no particular order.
	Entries []Entry
}

// Op is one write of a Batch: a put of Value, or a delete.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	// TTL, on a put to a store with Capabilities.Expiry, makes the key
	// expire TTL after the commit by the store's clock; zero means it does
	// not expire (and clears an earlier expiry). Other stores refuse a
	// batch with a TTL.
	TTL time.Duration
}

// Condition requires a key's revision to equal Revision when the batch
// commits; Revision 0 requires the key to be absent. With Commit set, the
// key must also have been last written by that commit (Entry.Commit).
//
// The commit id is what makes a condition exact across a failover: a new
// master that lost writes hands out their revisions again, so a key can be
// at the revision a reader saw while holding another write's value.
type Condition struct {
	Key      string
	Revision uint64
	Commit   string
}

// Batch is what one Commit writes.
type Batch struct {
	// Ops are applied in order; a key appears at most once.
	Ops []Op
	// Conditions must all hold, or Commit fails with ErrConflict.
	Conditions []Condition
	// Codec is the writer's codec name. The first commit records it with
	// the context; a later batch with another codec fails with
	// ErrCodecMismatch.
	Codec string
	// Origin identifies the writing instance; it is carried in the event.
	Origin string
	// Leases are locks the writer holds. A lock-aware store refuses the
	// whole batch with locker.ErrNotHeld if any of them is no longer held,
	// and with ErrLocked if an op's key is locked by a holder whose lease
	// is not in the batch. Other stores ignore Leases.
	Leases []locker.Lease
	// Waiter is the writer's place in the keys' lock queues, for a store
	// with both LockAwareCommit and FairLocks: such a store refuses the
	// batch with ErrLocked while a key it writes (and no lease of the
	// batch covers) has a live waiter queued before Waiter — any live
	// waiter, when Waiter is nil — so no writer jumps the queue. A batch
	// refused with ErrLocked or ErrConflict queues Waiter on those keys; a
	// committed one dequeues it, and wakes the next waiter (ReleaseNotify).
	// Other stores ignore it.
	Waiter *locker.Waiter
	// Requeue, if not nil, asks a fair, lock-aware store to queue
	// Requeue.Waiter for the batch's keys again once the batch is
	// committed, behind the waiters queued then, if any are: the writer
	// expects to write them again soon, and takes its place without a
	// refused attempt. The store sets Requeue.Queued when it did. A store
	// without fair, lock-aware commits ignores it.
	Requeue *Requeue
	// EventValueLimit bounds the value bytes an event carries: values are
	// included in op order while their running total stays within the
	// limit; the others are marked Omitted, and receivers fetch them.
	// Zero or less carries keys only.
	EventValueLimit int
}

// Requeue is a batch's request to be queued again after its commit
// (Batch.Requeue), and the store's answer.
type Requeue struct {
	Waiter locker.Waiter
	// Queued is set by the store when the waiter was queued: others
	// waited for a key of the batch after the commit.
	Queued bool
}
