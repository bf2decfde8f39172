package memory

import "maps"

// This file holds fault injection for tests: the failures a Redis
// deployment can suffer, so that recovery can be tested without one. None
// of it is meant for production use. After Close these methods do nothing.

// Wipe loses the data of context name as a flushed or restarted Redis
// without persistence would: entries, revision, epoch, codec and change log
// are gone (Load returns an empty Epoch and revision 0, and the next commit
// starts a new random epoch at revision 1). The context's locks and lock
// queues are dropped too, and lock watchers woken, since waiters may now
// acquire. Fencing tokens are not reset: the next lease's Fence is still
// above every earlier one.
//
// Wipe is for tests.
func (b *Backend) Wipe(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	sp := b.spaces[name]
	if sp == nil {
		return
	}
	sp.data = nil
	// Waiters queue again at their next attempt: every one of them is
	// woken, not only the heads of the queues dropped here.
	sp.waiters, sp.queues = nil, nil
	for key := range sp.locks {
		b.notifyRelease(name, key)
	}
	sp.locks = nil
}

// Checkpoint records the data of context name; restore puts it back exactly
// as it was at the checkpoint: the same epoch, the older revision, the
// entries, the codec, and a change log that ends at that revision. It
// simulates a failover to an asynchronous replica that had not received the
// latest writes: the revision goes backwards while the epoch stays. Locks
// are not part of the checkpoint and are left as they are when restoring.
// restore may be called more than once.
//
// Checkpoint is for tests.
func (b *Backend) Checkpoint(name string) (restore func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return func() {}
	}
	var saved *contextData
	if sp := b.spaces[name]; sp != nil {
		saved = sp.data.clone()
	}
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.closed {
			return
		}
		// Clone again, so later commits do not change what a second
		// restore puts back.
		b.space(name).data = saved.clone()
	}
}

// BreakSubscriptions makes every live Subscription lose its unread
// messages and report a loss on its next Next, as after a reconnect.
//
// BreakSubscriptions is for tests.
func (b *Backend) BreakSubscriptions() {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed {
		return
	}
	for _, set := range b.subs {
		for _, s := range set {
			s.mu.Lock()
			if !s.closed {
				s.dropLocked()
			}
			s.mu.Unlock()
		}
	}
}

// clone returns a copy of d that later commits to either do not affect.
// Stored values and logged events are never modified in place, so they
// are shared.
func (d *contextData) clone() *contextData {
	if d == nil {
		return nil
	}
	c := *d
	c.entries = maps.Clone(d.entries)
	c.log = d.log.clone()
	return &c
}
