package contextd

import (
	"context"
	"errors"
	"slices"

	"github.com/contextd-go/contextd/backend"
)

// Concurrent Modify calls of one key in one instance are combined: the
// first becomes the leader and writes; calls that arrive while it is under
// way join its group, and each of the leader's attempts applies the
// functions of the group's calls in the order they arrived, each to the
// value the one before it left, and commits the last value once. So N
// goroutines incrementing one counter cost one commit and one turn of the
// key's lock queue per group instead of N (issue 9). The calls are
// linearized at that commit, in arrival order, which is an order they
// could have run in one after the other: each was under way when the
// commit was made.
//
// Calls that arrive after an attempt took its calls wait for the next
// attempt; once the leader's own call is done, the first of them leads.
// A call whose ctx ends while it waits leaves the group at once, also
// while the attempt's functions run (the attempt is then applied again
// without it), unless an attempt carrying it is being committed: then it
// waits for that commit's outcome (one round trip) and reports it, so
// that it never returns an error for a write that was made. A commit
// that fails other than by a refusal (a conflict, a lock) may have been
// made: every call it carried reports its error, none runs again.
//
// A function's error or panic is its call's final outcome, as for a lone
// Modify: the call is not run again when the attempt is.

// modCall is one Modify call. Its fields below fn and ctx are guarded by
// the Context's modMu until the call is finished.
type modCall[T any] struct {
	fn  func(T, bool) (T, error)
	ctx context.Context
	// done is closed when the call is finished or made the leader (a
	// call that joined a group; nil for a leader from the start).
	done chan struct{}
	// taken: an attempt being committed carries the call. withdraw: its
	// ctx ended meanwhile; it is finished when that attempt is.
	// fixed: its function failed or panicked; that is its outcome.
	taken, withdraw bool
	lead            bool
	finished        bool
	fixed           bool

	// The call's outcome in the current attempt (final once finished).
	value    T
	rev      uint64
	err      error
	wrote    bool // its function's value (or delete) is in the attempt
	panicked bool
	panicVal any
}

// modGroup is the calls of one key: the leader's first, then the others
// in arrival order.
type modGroup[T any] struct {
	calls []*modCall[T]
}

// combinable reports whether a Modify with options o may share a commit
// with others: only without options (a condition, a TTL or a lock belongs
// to its own call).
func combinable(o writeOptions) bool {
	return o.locks == nil && !o.ifSet && !o.ttlSet
}

// join makes call the leader of a new group of key, or adds it to the
// group under way; it reports whether call leads.
func (c *Context[T]) join(key string, call *modCall[T]) (*modGroup[T], bool) {
	c.modMu.Lock()
	defer c.modMu.Unlock()
	if g := c.modGroups[key]; g != nil {
		call.done = make(chan struct{})
		g.calls = append(g.calls, call)
		c.stats.modifyJoined.Add(1)
		return g, false
	}
	if c.modGroups == nil {
		c.modGroups = make(map[string]*modGroup[T])
	}
	g := &modGroup[T]{calls: []*modCall[T]{call}}
	c.modGroups[key] = g
	return g, true
}

// await waits until a call that joined a group is finished, or made the
// leader (it reports true then).
func (c *Context[T]) await(g *modGroup[T], call *modCall[T]) bool {
	select {
	case <-call.done:
	case <-call.ctx.Done():
		c.modMu.Lock()
		switch {
		case call.finished || call.lead:
		case call.taken:
			call.withdraw = true
		default:
			g.calls = slices.DeleteFunc(g.calls, func(o *modCall[T]) bool { return o == call })
			call.cancel(call.ctx.Err())
		}
		c.modMu.Unlock()
		<-call.done
	}
	return call.lead && !call.finished
}

// take returns the calls the next attempt may carry: every call of a
// shared group now, or own alone. They are carried once mark has marked
// them, after their functions ran.
func (c *Context[T]) take(g *modGroup[T], shared bool, own *modCall[T], buf []*modCall[T]) []*modCall[T] {
	if !shared {
		return append(buf[:0], own)
	}
	c.modMu.Lock()
	defer c.modMu.Unlock()
	return append(buf[:0], g.calls...)
}

// mark makes the calls of an attempt whose functions ran carried by it,
// with the outcomes apply gave them (outs, by index); it reports false,
// marking nothing, if one of them left while the functions ran: the
// attempt is then applied again without it.
func (c *Context[T]) mark(shared bool, taken []*modCall[T], outs []modOutcome[T]) bool {
	if !shared {
		outs[0].to(taken[0])
		return true
	}
	c.modMu.Lock()
	defer c.modMu.Unlock()
	for _, call := range taken {
		if call.finished {
			// A function's error or panic stays its call's outcome
			// when the attempt is applied again.
			for i, call := range taken {
				if !call.finished && outs[i].fixed {
					outs[i].to(call)
				}
			}
			return false
		}
	}
	for i, call := range taken {
		call.taken = true
		outs[i].to(call)
	}
	return true
}

// untake ends an attempt that a refusal proves was not committed: its
// calls may join the next, except those withdrawn meanwhile, which are
// finished, and those whose function failed (but own's, which ends with
// the group's work).
func (c *Context[T]) untake(g *modGroup[T], shared bool, own *modCall[T], taken []*modCall[T]) {
	if !shared {
		return
	}
	c.modMu.Lock()
	defer c.modMu.Unlock()
	for _, call := range taken {
		call.taken = false
		switch {
		case call.finished || call == own:
		case call.fixed:
			call.close()
		case call.withdraw:
			call.cancel(call.ctx.Err())
		}
	}
	g.calls = slices.DeleteFunc(g.calls, func(o *modCall[T]) bool { return o.finished })
}

// modOutcome is a call's outcome in one attempt, kept by the leader
// until mark hands it to the call: the call may leave meanwhile.
type modOutcome[T any] struct {
	keep     bool // the call's outcome is fixed already
	value    T
	err      error
	fixed    bool // err or the panic is the function's
	wrote    bool
	panicked bool
	panicVal any
}

// to gives call its outcome o.
func (o *modOutcome[T]) to(call *modCall[T]) {
	if o.keep {
		return
	}
	call.value, call.err, call.fixed, call.wrote, call.panicked, call.panicVal = o.value, o.err, o.fixed, o.wrote, o.panicked, o.panicVal
}

// apply runs the functions of calls in order, each on the value the one
// before it left, starting from the key's current value (cur, ok, curErr
// as Modify reads it), and returns the op and update that write the last
// value, with each call's outcome in outs (by index); write is false if
// no function produced one. A function's error (but DeleteKey) or panic,
// or a value that does not encode, is its call's outcome, and the next
// function gets the value from before it. A call whose outcome is fixed
// is not run again.
func (c *Context[T]) apply(key string, calls []*modCall[T], cur T, ok bool, curErr error, o writeOptions, outs []modOutcome[T]) (op backend.Op, up update[T], write bool, _ []modOutcome[T]) {
	outs = slices.Grow(outs[:0], len(calls))[:len(calls)]
	for i, call := range calls {
		out := &outs[i]
		*out = modOutcome[T]{keep: call.fixed}
		if call.fixed {
			continue
		}
		if curErr != nil {
			out.err = curErr
			continue
		}
		var b []byte
		var lv T
		var lerr error
		_, panicked, pv, err := runModifyFunc(func(cur T, ok bool) (T, error) {
			next, err := call.fn(cur, ok)
			if err != nil {
				return next, err
			}
			// The codec runs on this call's value: its panic is this call's.
			if b, err = c.encode(key, next); err != nil {
				return next, errEncode{err}
			}
			lv, lerr = c.local(key, next, b)
			return next, nil
		}, cur, ok)
		var zero T
		var ee errEncode
		switch {
		case panicked:
			out.panicked, out.panicVal, out.fixed = true, pv, true
			continue
		case errors.As(err, &ee):
			out.err, out.fixed = ee.err, true
			continue
		case errors.Is(err, DeleteKey):
			op, up = backend.Op{Key: key, Delete: true}, update[T]{key: key, deleted: true}
			cur, ok = zero, false
		case err != nil:
			out.err, out.fixed = err, true
			continue
		default:
			op = backend.Op{Key: key, TTL: o.ttl, Value: b}
			up = update[T]{key: key, expires: c.expiresAfter(o.ttl)}
			up.value, up.err = lv, lerr
			// The next function gets what the copy will hold, as it
			// would from a Modify of its own after this one.
			cur, ok, curErr = up.value, true, up.err
			out.value = up.value
		}
		out.wrote, write = true, true
	}
	return op, up, write, outs
}

// runModifyFunc calls fn, catching a panic: the function may be another
// goroutine's, and its panic belongs there.
func runModifyFunc[T any](fn func(T, bool) (T, error), cur T, ok bool) (next T, panicked bool, pv any, err error) {
	defer func() {
		if r := recover(); r != nil || panicked {
			panicked, pv = true, r
		}
	}()
	panicked = true // still true if fn panics, even with panic(nil)
	next, err = fn(cur, ok)
	panicked = false
	return next, false, nil, err
}

// errEncode carries an encode error out of the protected run of a call's
// function, to tell it from the function's own error.
type errEncode struct{ err error }

func (e errEncode) Error() string { return e.err.Error() }

// errNothingToWrite ends an attempt in which no function produced a
// value: every call has its outcome. It is an error so that a queued
// waiter gives its place up.
var errNothingToWrite = errors.New("nothing to write")

// end finishes the leader's work on a group: the calls carried by its
// last attempt get their outcomes (the commit at rev, or err: that commit
// succeeded, or failed other than by a refusal, so it may have been
// made, or had nothing to write), and the leader's own call always.
// Calls the last attempt did not carry (a refusal handed them back, or
// the leader's ctx ended while it waited) keep waiting, except when the
// leader's lock wait was spent: those that waited through it give up with
// it. The first call still waiting, if any, then leads.
func (c *Context[T]) end(key string, g *modGroup[T], shared bool, own *modCall[T], taken []*modCall[T], rev uint64, err error) {
	if !shared {
		own.settle(rev, err)
		own.finished = true
		return
	}
	c.modMu.Lock()
	defer c.modMu.Unlock()
	// A lock wait that the leader's ctx ended (its error is joined to
	// ErrLockNotAcquired then) was not spent: the others' wait goes on
	// under the next leader.
	exhausted := errors.Is(err, ErrLockNotAcquired) && !endedBy(own.ctx, err)
	for _, call := range taken {
		if call == own || call.finished {
			continue
		}
		switch {
		case call.taken:
			call.taken = false
			call.settle(rev, err)
			call.close()
		case exhausted:
			call.cancel(err)
		}
	}
	if !own.finished {
		own.settle(rev, err)
		own.close()
	}
	for _, call := range g.calls {
		if !call.finished && (call.withdraw || call.ctx.Err() != nil) {
			call.cancel(call.ctx.Err())
		}
	}
	g.calls = slices.DeleteFunc(g.calls, func(o *modCall[T]) bool { return o.finished })
	if len(g.calls) == 0 {
		if c.modGroups[key] == g {
			delete(c.modGroups, key)
		}
		return
	}
	next := g.calls[0]
	next.lead = true
	close(next.done)
}

// endedBy reports whether err is (or carries) the error of ctx, which
// has ended.
func endedBy(ctx context.Context, err error) bool {
	cerr := ctx.Err()
	return cerr != nil && errors.Is(err, cerr)
}

// settle sets the call's outcome from its attempt's: its function's
// panic or error if it had one, else the commit at rev, or err if the
// write failed.
func (call *modCall[T]) settle(rev uint64, err error) {
	switch {
	case call.panicked || call.err != nil:
	case err != nil:
		call.err = err
	default:
		call.rev = rev
	}
}

// cancel finishes a call that leaves without an outcome of an attempt.
func (call *modCall[T]) cancel(err error) {
	call.err, call.panicked, call.rev = err, false, 0
	call.close()
}

// close marks the call finished and wakes it.
func (call *modCall[T]) close() {
	call.finished = true
	if call.done != nil && !call.lead {
		close(call.done)
	}
}

// outcome returns the call's result, or repanics with its function's
// panic in the caller's goroutine.
func (call *modCall[T]) outcome() (T, uint64, error) {
	if call.panicked {
		panic(call.panicVal)
	}
	return call.value, call.rev, call.err
}
