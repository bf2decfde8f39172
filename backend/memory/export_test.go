package memory

// Hooks for the external tests (package memory_test) into internals they
// cannot otherwise observe.

// ReleaseWatchers reports how many armed WatchRelease calls watch the lock
// on key of context name.
func (b *Backend) ReleaseWatchers(name, key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.watchers[lockID{name, key}])
}

// Subscribers reports how many open subscriptions channel has.
func (b *Backend) Subscribers(channel string) int {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	return len(b.subs[channel])
}

// WakePending reports whether s, a Subscription of the Backend, holds a
// wake-up its reader has not taken: whether a Next waiting now would
// return without another message being published.
func WakePending(s interface{ Close() error }) bool {
	sub := s.(*subscription)
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return !sub.closed && len(sub.ready) > 0
}
