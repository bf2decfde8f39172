package backend

import "errors"

var (
	// ErrNotFound is returned by Store.Get for a key that does not exist.
	ErrNotFound = errors.New("backend: not found")

	// ErrConflict is returned by Commit when a Condition does not hold.
	ErrConflict = errors.New("backend: conflict")

	// ErrLocked is returned by a lock-aware Commit when a key it writes is
	// locked by a holder whose lease the batch does not carry.
	ErrLocked = errors.New("backend: key is locked")

	// ErrCodecMismatch is returned by Commit when the batch's codec differs
	// from the codec recorded with the context.
	ErrCodecMismatch = errors.New("backend: codec mismatch")

	// ErrLogTruncated is returned by ChangeLog.ChangesSince when the log no
	// longer reaches back to the requested revision, or belongs to another
	// epoch: the caller must load a snapshot instead.
	ErrLogTruncated = errors.New("backend: change log does not reach back that far")

	// ErrCorrupt is returned when the stored state of a context is
	// damaged: a revision or counter that does not parse, a value without
	// a revision, a key of the wrong type. The error names the key. Stores
	// report it per entry where they can (an Entry with Revision 0), so
	// other keys stay readable.
	ErrCorrupt = errors.New("backend: stored state is corrupt")

	// ErrInvalidEvent is returned by DecodeEvent for a payload that is not
	// a well-formed event of a known version.
	ErrInvalidEvent = errors.New("backend: invalid event")
)
