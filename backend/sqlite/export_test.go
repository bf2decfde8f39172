package sqlite

// PollCursor returns the id of the message log up to which b's poller has
// dispatched messages to its Subscriptions.
func PollCursor(b *Backend) int64 {
	b.poll.mu.Lock()
	defer b.poll.mu.Unlock()
	return b.poll.cursor
}

// PausePoller holds b's poller at the start of its next turn until resume
// is called, as a process that is not scheduled would be. Meanwhile the
// caller must not Subscribe, Close a Subscription, watch releases or close
// b through b.
func PausePoller(b *Backend) (resume func()) {
	b.poll.mu.Lock()
	return b.poll.mu.Unlock
}

// OthersWaiting reports whether b sees writers of other connections
// announce that they wait for the write lock.
func OthersWaiting(b *Backend) bool { return b.gate.othersWaiting() }

// LayoutV1 is the statements that make the tables as releases before key
// expiry made them (version 1 without expiryDDL).
var LayoutV1 = schemaDDL
