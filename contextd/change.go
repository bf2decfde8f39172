package contextd

import "time"

// Change is one change delivered by Watch.
type Change[T any] struct {
	// Key is the changed key; empty for a Reset.
	Key string
	// Value is the new value of a put.
	Value T
	// Deleted reports a delete of Key.
	Deleted bool
	// Revision is the context revision of the commit that made the
	// change. A delete found while catching up from a snapshot carries the
	// snapshot's revision, as the exact one is no longer known.
	Revision uint64
	// Origin is the ID of the instance that wrote the change, or empty if
	// unknown (a change found while catching up from a snapshot).
	Origin string
	// Expires is when a put key expires (WithTTL), by the store's clock;
	// the zero time if it does not or is not known.
	Expires time.Time
	// Err is set when the new value could not be decoded; Value is then
	// the zero value. It matches ErrDecode.
	Err error
	// Reset reports that changes were skipped: the watcher fell behind its
	// buffer, or the instance had to replace its whole copy (the store lost
	// data or went back in time), or the change log could not replay a
	// FromRevision watch. A watcher that mirrors the context should
	// re-read it with GetContext. Changes after a Reset are fresh again.
	Reset bool
	// Initial marks a key of the state a WithInitial watch (or a
	// FromRevision watch the log could not serve) starts with; Revision
	// is the revision that last wrote the key.
	Initial bool
	// UpToDate marks the end of a watch's replay or initial state: the
	// watcher has caught up with revision Revision, and what follows
	// happens live.
	UpToDate bool
}
