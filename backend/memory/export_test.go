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
