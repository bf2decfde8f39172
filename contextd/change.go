package contextd

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
	// Err is set when the new value could not be decoded; Value is then
	// the zero value. It matches ErrDecode.
	Err error
	// Reset reports that changes were skipped: the watcher fell behind its
	// buffer, or the instance had to replace its whole copy (the store lost
	// data or went back in time). A watcher that mirrors the context should
	// re-read it with GetContext. Changes after a Reset are fresh again.
	Reset bool
}
