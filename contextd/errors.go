package contextd

import (
	"errors"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// Errors returned by a Context, matched with errors.Is. Every error a
// Context returns names the context and, where there is one, the key.
var (
	// ErrNotInitialized is returned by operations called before Initialize.
	ErrNotInitialized = errors.New("contextd: not initialized")

	// ErrClosed is returned by operations called after Close.
	ErrClosed = errors.New("contextd: closed")

	// ErrLockNotAcquired is returned when a lock could not be taken within
	// its retries, by AcquireLock and by writes that wait for another
	// holder's lock. It is locker.ErrNotAcquired.
	ErrLockNotAcquired = locker.ErrNotAcquired

	// ErrLockLost is returned by a write made WithLock a lock that is no
	// longer held (expired, taken over, or released), and by Lock.Extend
	// and Lock.Release on such a lock. It is locker.ErrNotHeld.
	ErrLockLost = locker.ErrNotHeld

	// ErrNotHeld is another name of ErrLockLost, the one package locker
	// uses.
	ErrNotHeld = locker.ErrNotHeld

	// ErrConflict is returned by a write whose condition no longer held.
	// Modify retries on it by itself, so users rarely see it. It is
	// backend.ErrConflict.
	ErrConflict = backend.ErrConflict

	// ErrCodecMismatch is returned by Initialize and by writes when the
	// context was written with another codec than this instance's. It is
	// backend.ErrCodecMismatch.
	ErrCodecMismatch = backend.ErrCodecMismatch

	// ErrStale is returned by reads of a Context with Options.FailClosed
	// while it knows its copy may be out of date: it lost messages and has
	// not caught up yet, or the backend was unreachable at the last check.
	ErrStale = errors.New("contextd: local copy may be stale")

	// ErrDecode is matched by the error of a read of a value that the
	// codec could not decode (written by another program, say). Other keys
	// stay readable.
	ErrDecode = errors.New("contextd: value does not decode")

	// ErrAlreadyHeld is returned by AcquireLock for a key this Context
	// already holds a lock on. Locks are held by a Context, not by a
	// goroutine, and are not reentrant: goroutines of one process that
	// share a Context coordinate with a sync.Mutex (or use a Context
	// each), and a holder passes its Lock around (WithLock).
	ErrAlreadyHeld = errors.New("contextd: lock already held by this Context")

	// ErrInvalid is matched by the error of a call with bad arguments: an
	// empty key or context name, a nil function, WithLock(nil) or a lock of
	// another Context, a value the codec cannot encode, a negative
	// duration, a nil *Context or *Lock. Such a call writes nothing.
	ErrInvalid = errors.New("contextd: invalid argument")

	// ErrCorrupt is matched by the error of an operation that found
	// contextd's own stored state damaged: a revision that does not parse,
	// a value stored without a revision (written by another program into
	// contextd's keys), a key of the wrong type. The error names the key.
	// Other keys stay usable; a plain write (UpdateContext, Delete) of the
	// damaged key replaces it. It is backend.ErrCorrupt.
	ErrCorrupt = backend.ErrCorrupt
)
