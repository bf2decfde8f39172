package backend

import (
	"errors"
	"fmt"
)

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

// ConflictError is the ErrConflict of a store that tells, in the same
// reply, what the key whose condition failed holds now, so a writer can
// retry without reading it again (contextd's Modify does). It matches
// ErrConflict with errors.Is and is found with errors.As. Returning it is
// optional: a caller that gets a plain ErrConflict reads the key itself.
type ConflictError struct {
	// Key is the key whose condition did not hold.
	Key string
	// Current is the key's entry as the store saw it when it refused the
	// condition; when Exists is false only its Key is set.
	Current Entry
	// Exists reports whether the key existed.
	Exists bool
}

func (e *ConflictError) Error() string {
	if !e.Exists {
		return fmt.Sprintf("%v: key %q does not exist", ErrConflict, e.Key)
	}
	return fmt.Sprintf("%v: key %q is at revision %d", ErrConflict, e.Key, e.Current.Revision)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
