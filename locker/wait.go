package locker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/internal/backoff"
)

// Policy bounds how long a caller waits for locks.
type Policy struct {
	// RetryDelay is the mean pause between attempts. Each pause is drawn
	// uniformly from [RetryDelay/2, 3*RetryDelay/2), so contenders do not
	// retry in lockstep. Zero or less retries at once.
	RetryDelay time.Duration
	// MaxRetries is how many pauses may follow the first attempt; zero or
	// less means one attempt only. The wait is bounded by about
	// MaxRetries*RetryDelay in all, as in the original library: a release
	// notification ends a pause early without using up a retry, but does
	// not extend that bound.
	MaxRetries int
	// Watcher, if not nil, ends a pause early when a lock of interest is
	// released.
	Watcher ReleaseWatcher
	// Queue, if not nil, is the fair locker that queues the caller: Retry
	// then gives every attempt a Waiter, and dequeues it if the wait ends
	// without success.
	Queue FairLocker
	// Leave, if not nil, is called instead of a Dequeue when a queued
	// wait ends without success, so that the caller need not wait for it
	// (the backend may be what failed); it must not block. A waiter that
	// is never dequeued stops blocking others after its Hold.
	Leave func(w Waiter, keys []string)
	// OnWait, if not nil, is called when the first attempt was refused
	// and the caller starts to wait; the ctx it returns is used for the
	// rest of the wait, and done is called when the wait ends, with nil if
	// an attempt went through. For metrics and traces.
	OnWait func(ctx context.Context) (context.Context, func(err error))
	// Contended, with a Queue and a Watcher, says the caller expects to
	// wait (it saw the keys contended a moment ago): the waiter is made
	// and the notification armed before the first attempt, which then
	// already takes a place in the queue. A refused first attempt is
	// followed by the pause, not by the second attempt an unarmed wait
	// makes right after arming — on a busy key that attempt is refused
	// too. Arming costs an uncontended caller little only where joining
	// a watch is cheap (a subscription already open), so set it only for
	// keys seen contended recently.
	Contended bool
	// Queued, with a Queue and a Watcher, is a place the caller holds in
	// the queues of keys already (its previous write took it: see
	// backend.Batch.Requeue). Retry uses it as the waiter, and waits for
	// its turn before the first attempt instead of making one that would
	// be refused and queued. The Watcher must notify Queued's turns from
	// before the place was taken (a TurnWatcher that returns a watch
	// armed then), or a turn handed on meanwhile waits for a pause. A
	// wait that ctx ends before any attempt returns ErrNotAcquired joined
	// with ctx.Err().
	Queued *Waiter
}

// Retry calls try until it returns nil or an error for which retryable is
// false (Retry returns that result), the retries of p are exhausted (Retry
// returns the last error, wrapped), or ctx is done (Retry returns the last
// error joined with ctx.Err(), or ErrNotAcquired joined with it when ctx
// ended before the first attempt of a queued or contended wait).
//
// The first attempt is made before any notification is armed, so an
// uncontended caller pays nothing extra. After a failed first attempt Retry
// arms the release notification for keys and tries again at once: a release
// that happened between the attempt and the arming is not missed, and every
// later release wakes the pause early. With p.Contended (and a queue and
// a watcher) the notification is armed and the waiter made before the
// first attempt instead, and a refused first attempt is followed by the
// pause.
//
// With p.Queue, every attempt after the first gets the same Waiter, which
// the fair locker queues when it refuses it, and a p.Watcher that is a
// TurnWatcher wakes the pause only when it is that waiter's turn (the
// pauses still end after about p.RetryDelay, so a lost notification costs
// latency, never the wait); when Retry returns an error, or try panics,
// the waiter is dequeued from keys (the store dequeues it itself on
// success). Without a queue, w is nil and waiting is jittered polling,
// with no bound on how often one waiter can lose to others.
func Retry(ctx context.Context, name string, keys []string, p Policy, try func(ctx context.Context, w *Waiter) error, retryable func(error) bool) (err error) {
	// The first attempt goes without a waiter: an uncontended caller
	// pays nothing for the queue. The waiter is made for the attempt that
	// follows a refusal, and is queued there. A caller that will not wait
	// (one attempt) takes no place in a queue at all.
	var w *Waiter
	attempts := 0
	// returned is false while a panic in try unwinds Retry: the place is
	// given up then too (a waiter left queued would hold the others up
	// for its Hold), and the panic goes on.
	returned := false
	defer func() {
		switch {
		case (returned && err == nil) || w == nil:
		case p.Leave != nil:
			p.Leave(*w, keys)
		default:
			// Give the place up even if ctx was cancelled: a waiter left
			// queued would hold the others up for its Hold.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = p.Queue.Dequeue(dctx, name, *w, keys...)
			cancel()
		}
	}()
	// The waiter is made when the wait starts — before the release
	// notification is armed, so that a TurnWatcher knows whose turn to
	// watch for — and queued by the attempt that follows.
	waiter := func() *Waiter {
		if w == nil && p.Queue != nil {
			waiter := p.NewWaiter()
			w = &waiter
		}
		return w
	}
	armFirst := (p.Contended || p.Queued != nil) && p.Queue != nil && p.Watcher != nil && p.MaxRetries > 0
	queued := armFirst && p.Queued != nil
	if queued {
		qw := *p.Queued
		w = &qw
	}
	if armFirst {
		waiter()
	}
	err = retry(ctx, name, keys, p, func(ctx context.Context) error {
		if attempts++; attempts == 2 {
			waiter()
		}
		return try(ctx, w)
	}, retryable, waiter, armFirst, queued)
	returned = true
	return err
}

func retry(ctx context.Context, name string, keys []string, p Policy, try func(context.Context) error, retryable func(error) bool, waiter func() *Waiter, armFirst, queued bool) (err error) {
	var notify <-chan struct{}
	if armFirst {
		ch, stop, werr := watch(ctx, name, keys, p, waiter)
		switch {
		case werr == nil:
			defer stop()
			notify = ch
		case ctx.Err() != nil:
			// No attempt made: the lock was not acquired, as a wait that
			// ctx ends after attempts reports it (through their refusal).
			return errors.Join(ErrNotAcquired, werr, ctx.Err())
		}
		// Without a notification the pauses below still bound the wait.
	}
	// A caller queued already waits for its turn first: an attempt now
	// would be refused (others are queued before it).
	if !queued {
		err = try(ctx)
		if err == nil || !retryable(err) || p.MaxRetries <= 0 {
			return wrapExhausted(err, retryable, 0)
		}
	}
	if p.OnWait != nil {
		var done func(error)
		ctx, done = p.OnWait(ctx)
		defer func() { done(err) }()
	}
	if p.Watcher != nil && !armFirst {
		ch, stop, werr := watch(ctx, name, keys, p, waiter)
		if werr == nil {
			defer stop()
			notify = ch
			if err = try(ctx); err == nil || !retryable(err) {
				return err
			}
		} else if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		// Without a notification the pauses below still bound the wait.
	}
	start := time.Now()
	budget := time.Duration(p.MaxRetries) * p.RetryDelay
	timer := time.NewTimer(backoff.Jitter(p.RetryDelay))
	defer timer.Stop()
	for pauses := 0; pauses < p.MaxRetries; {
		select {
		case <-ctx.Done():
			if err == nil { // queued, and no attempt made yet
				return errors.Join(ErrNotAcquired, ctx.Err())
			}
			return errors.Join(err, ctx.Err())
		case <-timer.C:
			pauses++
			timer.Reset(backoff.Jitter(p.RetryDelay))
		case <-notify:
			if time.Since(start) >= budget {
				pauses = p.MaxRetries
			}
		}
		if err = try(ctx); err == nil || !retryable(err) {
			return err
		}
	}
	return wrapExhausted(err, retryable, p.MaxRetries)
}

// watch arms the release notification of a wait: for the waiter's turn
// only when the watcher is a TurnWatcher and the wait is queued, else for
// every release of keys.
func watch(ctx context.Context, name string, keys []string, p Policy, waiter func() *Waiter) (<-chan struct{}, func(), error) {
	if tw, ok := p.Watcher.(TurnWatcher); ok && waiter != nil {
		if w := waiter(); w != nil {
			ch, stop, err := tw.WatchTurn(ctx, name, *w, keys...)
			if !errors.Is(err, errors.ErrUnsupported) {
				return ch, stop, err
			}
		}
	}
	return p.Watcher.WatchRelease(ctx, name, keys...)
}

func wrapExhausted(err error, retryable func(error) bool, retries int) error {
	if err == nil || !retryable(err) {
		return err
	}
	return fmt.Errorf("gave up after %d retries: %w", retries, err)
}

// Acquire takes the lock on key of context name, waiting as p allows (in
// the queue of p.Queue, if set, which must be l's). It returns an error
// matching ErrNotAcquired when the retries are exhausted, also joined with
// ctx.Err() when ctx ended the wait.
func Acquire(ctx context.Context, l Locker, name, key string, ttl time.Duration, p Policy) (Lease, error) {
	var lease Lease
	err := Retry(ctx, name, []string{key}, p, func(ctx context.Context, w *Waiter) error {
		var err error
		if w != nil {
			lease, err = p.Queue.TryAcquireQueued(ctx, name, key, ttl, *w)
		} else {
			lease, err = l.TryAcquire(ctx, name, key, ttl)
		}
		return err
	}, func(err error) bool { return errors.Is(err, ErrNotAcquired) })
	if err != nil {
		return Lease{}, err
	}
	return lease, nil
}
