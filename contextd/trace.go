package contextd

import "context"

// Trace holds hooks that a Context calls as it works, for metrics and
// traces (package otelcontextd turns them into OpenTelemetry), as
// net/http/httptrace.ClientTrace does for HTTP requests. A nil hook is
// skipped. Hooks are called from the goroutines doing the work, so they
// must be fast and safe for concurrent use, and must not call the Context.
// No hook is given a value of the context; keys are, where said.
type Trace struct {
	// WriteStart is called as a write begins (UpdateContext,
	// TransactionalUpdate, Delete, Modify), with the caller's ctx and the
	// number of keys; the ctx it returns is used for the write, so a span
	// started here parents the backend's calls. The returned done is
	// called once when the write ends, with the revision it committed
	// (0 if none) and its error.
	WriteStart func(ctx context.Context, keys int) (context.Context, func(rev uint64, err error))

	// LockWaitStart is called when a lock acquisition or a write has to
	// wait for a lock held by another (its first attempt was refused),
	// with the key (the first key, for a write of several); done is called
	// when the wait ends: err is nil when the lock or write went through.
	// The ctx it returns is the wait's: it should be ctx or derive from
	// it without ending sooner (a span's ctx), since a wait it ends counts
	// as given up, for the calls combined with it too.
	LockWaitStart func(ctx context.Context, key string) (context.Context, func(err error))

	// SnapshotStart is called before a snapshot is loaded (Initialize,
	// Sync, a catch-up the change log could not serve); done is called
	// with the number of entries loaded and the error.
	SnapshotStart func(ctx context.Context) (context.Context, func(entries int, err error))

	// EventApplied is called for each change event applied to the copy
	// from another instance (received or fetched from the change log),
	// with its revision and the revisions the copy is known to be behind
	// after it (Lag).
	EventApplied func(rev uint64, lag uint64)

	// Gap is called when events were missed: a revision gap, a loss
	// reported by the subscription, or a history that does not continue
	// the copy's; reason says which.
	Gap func(reason string)

	// CatchUp is called after each catch-up, with how it went ("log",
	// "snapshot") and its error.
	CatchUp func(how string, err error)

	// WatchReset is called when a Watch reader fell behind its buffer and
	// is sent a Reset.
	WatchReset func()
}

// writeStart calls the WriteStart hook, if any.
func (t *Trace) writeStart(ctx context.Context, keys int) (context.Context, func(uint64, error)) {
	if t == nil || t.WriteStart == nil {
		return ctx, nil
	}
	return t.WriteStart(ctx, keys)
}

func (t *Trace) snapshotStart(ctx context.Context) (context.Context, func(int, error)) {
	if t == nil || t.SnapshotStart == nil {
		return ctx, nil
	}
	return t.SnapshotStart(ctx)
}

func (t *Trace) eventApplied(rev, lag uint64) {
	if t != nil && t.EventApplied != nil {
		t.EventApplied(rev, lag)
	}
}

func (t *Trace) gap(reason string) {
	if t != nil && t.Gap != nil {
		t.Gap(reason)
	}
}

func (t *Trace) catchUp(how string, err error) {
	if t != nil && t.CatchUp != nil {
		t.CatchUp(how, err)
	}
}

func (t *Trace) watchReset() {
	if t != nil && t.WatchReset != nil {
		t.WatchReset()
	}
}

// lockWait returns the hooks a locker.Policy calls when a wait begins, or
// nil without a LockWaitStart hook.
func (t *Trace) lockWait(key string) func(ctx context.Context) (context.Context, func(error)) {
	if t == nil || t.LockWaitStart == nil {
		return nil
	}
	return func(ctx context.Context) (context.Context, func(error)) { return t.LockWaitStart(ctx, key) }
}
