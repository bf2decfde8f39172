package contextd

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/contextd-go/contextd/backend"
)

// expiry keeps track of when a key of the copy expires next, so that the
// instance asks the store to expire it then: keys that expire disappear
// through an ordinary revisioned delete made by whichever instance (or the
// store, on its next commit) notices first.
//
// Deadlines are by the store's clock; offset is the store's clock minus
// this machine's, as the last Expire call saw it.
type expiry struct {
	mu     sync.Mutex
	next   int64 // Unix ms by the store's clock; 0 if none known
	offset time.Duration
	wake   chan struct{}
}

func newExpiry() *expiry { return &expiry{wake: make(chan struct{}, 1)} }

// saw notes a key that expires at ms (store clock, Unix milliseconds).
func (x *expiry) saw(ms int64) {
	if ms == 0 {
		return
	}
	x.mu.Lock()
	earlier := x.next == 0 || ms < x.next
	if earlier {
		x.next = ms
	}
	x.mu.Unlock()
	if earlier {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// due returns how long until the next known deadline on this machine's
// clock (at least 0), and whether there is one.
func (x *expiry) due() (time.Duration, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.next == 0 {
		return 0, false
	}
	local := time.UnixMilli(x.next).Add(-x.offset)
	return max(time.Until(local), 0), true
}

// expired records what an Expire call returned: the next deadline and the
// store's clock.
func (x *expiry) expired(next, storeNow time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.next = milliOf(next)
	if !storeNow.IsZero() {
		x.offset = time.Until(storeNow)
	}
}

// expiresAfter estimates when a key written now with ttl expires by the
// store's clock (the store's own figure arrives with the next snapshot), in
// Unix milliseconds; 0 without a ttl.
func (c *Context[T]) expiresAfter(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	c.expiry.mu.Lock()
	offset := c.expiry.offset
	c.expiry.mu.Unlock()
	return time.Now().Add(offset + ttl).UnixMilli()
}

// expireLoop asks the store to expire keys when the next known one is due,
// until ctx ends. It runs in a goroutine of the Context, only when the
// backend expires keys.
func (c *Context[T]) expireLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	arm := func() {
		if d, ok := c.expiry.due(); ok {
			// A little jitter, so that the instances that all know of
			// a key do not all ask at once.
			timer.Reset(d + time.Duration(rand.N(int64(20*time.Millisecond))))
		}
	}
	arm()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.expiry.wake:
			timer.Stop()
			arm()
		case <-timer.C:
			if err := c.expire(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.opts.Logger.Warn("contextd: expiring keys failed", "context", c.name, "error", err)
				timer.Reset(time.Second)
				continue
			}
			arm()
		}
	}
}

// expire asks the store to delete the keys that have expired, applies the
// delete to the copy, and publishes it where the store did not.
func (c *Context[T]) expire(ctx context.Context) error {
	channel := ""
	if c.atomicPub != nil {
		channel = c.opts.Channel
	}
	ev, next, now, err := c.expirer.Expire(ctx, c.name, channel)
	if err != nil {
		return err
	}
	c.expiry.expired(next, now)
	if ev.Revision == 0 {
		return nil
	}
	if c.atomicPub == nil {
		if payload, err := backend.EncodeEvent(ev); err == nil {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err = c.bcast.Publish(pctx, c.opts.Channel, payload)
			cancel()
			if err != nil {
				c.stats.publishErrors.Add(1)
			}
		}
	}
	ups := make([]update[T], len(ev.Changes))
	for i, ch := range ev.Changes {
		ups[i] = update[T]{key: ch.Key, deleted: true}
	}
	c.repairAfter(ctx, c.cache.applyEvent(ev.Head, ev.Origin, ups))
	return nil
}
