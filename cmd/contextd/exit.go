package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"syscall"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
)

// Exit codes, documented in docs/cli.md and in the usage text.
const (
	exitOK          = 0
	exitNotFound    = 1  // get: no such key
	exitUsage       = 2  // bad flags or arguments (as package flag does)
	exitBadURL      = 3  // a URL that names no usable backend
	exitUnreachable = 4  // the backend did not answer in time
	exitCodec       = 5  // the context was written with another codec
	exitConflict    = 6  // --if-revision or --create did not hold
	exitNotAcquired = 7  // a lock (or a locked key) was not obtained in time
	exitBadValue    = 8  // a value that is not JSON, an import line that does not parse
	exitLockLost    = 9  // lock: the lock was lost while the command ran
	exitOther       = 10 // anything else
	exitUnsupported = 11 // the backend cannot do it (--ttl without expiry, locks without a Lister)
)

// exitError carries an exit code chosen where the failure is known.
type exitError struct {
	code  int
	err   error
	quiet bool // print nothing: the command already said why
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// flagErr is the error of a flag.FlagSet.Parse, which has printed it
// already.
func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &exitError{code: exitUsage, err: err, quiet: true}
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.Is(err, redis.ErrBadURL):
		return exitBadURL
	case errors.Is(err, contextd.ErrCodecMismatch):
		return exitCodec
	case errors.Is(err, contextd.ErrConflict):
		return exitConflict
	case errors.Is(err, contextd.ErrLockNotAcquired), errors.Is(err, backend.ErrLocked):
		return exitNotAcquired
	case errors.Is(err, contextd.ErrLockLost):
		return exitLockLost
	case errors.Is(err, errors.ErrUnsupported):
		return exitUnsupported
	case errors.Is(err, contextd.ErrInvalid):
		return exitBadValue
	case errors.As(err, &op), errors.As(err, &dns), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, context.DeadlineExceeded):
		return exitUnreachable
	}
	return exitOther
}
