package contextd

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/internal/pmap"
)

// entry is one key of the local copy. It is kept small, since the copy
// holds one per key: what few keys have (a deletion, an expiry, a value
// that did not decode) is in rare, nil for the others.
type entry[T any] struct {
	value T
	// rev is the revision that last wrote the key; for a tombstone, the
	// revision that deleted it. Changes older than rev are ignored, so late
	// or duplicate events never move a key backwards.
	rev uint64
	// commit is the id of the commit at rev, if known: a conditional write
	// (Modify) names it, so a failover that reused rev for another write
	// is caught as a conflict.
	commit string
	rare   *rareFields
}

// rareFields is the part of an entry that most keys do not need. It is
// never changed once made: entries share it (tombstone).
type rareFields struct {
	deleted bool
	// expires is when the key expires by the store's clock, in Unix
	// milliseconds; 0 if it does not.
	expires int64
	// err is set when the stored value did not decode.
	err error
}

// tombstone is the rare part of a plain deletion, shared by all of them.
var tombstone = &rareFields{deleted: true}

// newEntry returns the entry of a key written at rev by commit; the rare
// part is made only if one of deleted, expires and err is set.
func newEntry[T any](value T, rev uint64, commit string, deleted bool, expires int64, err error) entry[T] {
	e := entry[T]{value: value, rev: rev, commit: commit}
	switch {
	case deleted && expires == 0 && err == nil:
		e.rare = tombstone
	case deleted || expires != 0 || err != nil:
		e.rare = &rareFields{deleted: deleted, expires: expires, err: err}
	}
	return e
}

// deleted reports whether the entry is a tombstone.
func (e *entry[T]) deleted() bool { return e.rare != nil && e.rare.deleted }

// expires is when the key expires (Unix milliseconds, store clock), 0 if
// it does not.
func (e *entry[T]) expires() int64 {
	if e.rare == nil {
		return 0
	}
	return e.rare.expires
}

// err is why the stored value did not decode, nil if it did.
func (e *entry[T]) err() error {
	if e.rare == nil {
		return nil
	}
	return e.rare.err
}

// unixMilli is the time of Unix milliseconds ms, the zero time for 0.
func unixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// milliOf is t in Unix milliseconds, 0 for the zero time.
func milliOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// update is one decoded change, prepared outside the cache lock.
type update[T any] struct {
	key     string
	value   T
	deleted bool
	expires int64
	err     error
}

// verdict is what applying an event or commit to the cache found.
type verdict int

const (
	applied   verdict = iota // applied (or held until earlier revisions arrive)
	duplicate                // already reflected; nothing to do
	gap                      // earlier revisions are missing: catch up first
	resync                   // another epoch, or the store went back in time
	diverged                 // the store's history is not the copy's: replace the copy
)

func (v verdict) String() string {
	switch v {
	case applied:
		return "applied"
	case duplicate:
		return "duplicate"
	case gap:
		return "gap"
	case resync:
		return "resync"
	case diverged:
		return "diverged"
	}
	return "unknown"
}

// own is a commit of this instance held until the revisions before it
// arrive.
type own[T any] struct {
	changes        []Change[T]
	commit, parent string
}

// view is one consistent state of the local copy. A view is never changed:
// writers publish a new one (sharing all but what changed, see package
// pmap), so readers load the current view and read or iterate it without
// locks, never waiting for a writer or a copy.
type view[T any] struct {
	entries pmap.Map[entry[T]]
	live    int // entries that are not tombstones
	epoch   string
	applied uint64
}

// errBox holds an error in an atomic.Pointer.
type errBox struct{ err error }

// cache is the local copy of a context and the bookkeeping that keeps it
// exact: it knows the last revision up to which it has every change
// (applied), holds this instance's own commits that got ahead of that point,
// and feeds watchers in revision order.
//
// Writers hold mu (lock), change the entries through edit, and publish a
// new view when they unlock; readers use current and never lock.
type cache[T any] struct {
	mu sync.Mutex
	// cur is the view readers see.
	cur atomic.Pointer[view[T]]
	// edit holds the entries being changed while mu is held.
	edit *pmap.Builder[entry[T]]
	// builder is what edit points to, kept so that a change does not
	// allocate a Builder.
	builder pmap.Builder[entry[T]]

	epoch string
	// applied is the revision up to which every change is reflected.
	applied uint64
	// commit is the id of the commit that made revision applied, when the
	// store tracks commit ids: the next commit must name it as its parent,
	// or it belongs to another history (a failover reused revisions).
	commit string
	// ahead holds this instance's own commits, applied to entries for
	// read-your-writes but not yet contiguous with applied; their changes
	// are delivered to watchers once the revisions before them arrive.
	ahead map[uint64]own[T]
	// echoed holds revisions of this instance's commits whose events were
	// applied before the commit returned, with the commit ids of those
	// events: an echo stands only for the commit that made it.
	echoed map[uint64]string
	// history holds the commit ids of the last revisions applied, by
	// revision modulo its length, so a snapshot at a revision the copy
	// has passed can still be checked against the copy's history. It
	// grows to historyLength as revisions are applied (see setApplied):
	// a Context that has applied few since its load holds a few slots,
	// not 24 KiB.
	history []historySlot
	// self is this instance's ID, the origin of its events.
	self string
	// known is the newest revision heard of, for Lag.
	known uint64
	// lastEvent is the revision of the last event read from an ordered
	// subscription; a later event at or below it means the store went back
	// in time.
	lastEvent uint64

	live int // entries that are not tombstones

	// stale is nil while the copy is believed current, else why not: the
	// last catch-up failed, or is due.
	stale atomic.Pointer[errBox]
	// deaf is set while the subscription reports it is not receiving
	// (Interrupted until the next Loss): catching up does not clear it.
	deaf atomic.Pointer[errBox]

	watchers []*watcher[T]
	// pending and pendingReset are what watchers get once the view being
	// changed is published (emit, resetWatchers).
	pending      []Change[T]
	pendingReset bool

	// published is closed when the next view is published, for callers
	// that wait for the copy to get somewhere (await); nil while nobody
	// waits. sigMu guards it, and is taken after mu, never before.
	sigMu     sync.Mutex
	published chan struct{}
	// waiting is set, under sigMu, while published is not nil, so that
	// publishing a view skips sigMu when nobody waits (most of the time):
	// await sets it before it reads the view again, and unlock reads it
	// after storing the new view, so either unlock sees it or await sees
	// the new view.
	waiting atomic.Bool
}

func newCache[T any](self string) *cache[T] {
	c := &cache[T]{
		self:   self,
		ahead:  make(map[uint64]own[T]),
		echoed: make(map[uint64]string),
	}
	c.cur.Store(&view[T]{})
	return c
}

// current returns the view readers see.
func (c *cache[T]) current() *view[T] { return c.cur.Load() }

// await returns true once reached holds for the current view, or false
// when bound has passed or ctx is done first. It never holds mu.
func (c *cache[T]) await(ctx context.Context, bound time.Duration, reached func(*view[T]) bool) bool {
	if reached(c.current()) {
		return true
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		// Armed before the view is read again: a view published after
		// that read closes this channel.
		c.sigMu.Lock()
		if c.published == nil {
			c.published = make(chan struct{})
			c.waiting.Store(true)
		}
		published := c.published
		c.sigMu.Unlock()
		if reached(c.current()) {
			return true
		}
		select {
		case <-published:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// lock takes mu for a change of the copy.
func (c *cache[T]) lock() {
	c.mu.Lock()
	c.builder.Reset(c.cur.Load().entries)
	c.edit = &c.builder
}

// unlock publishes the changed copy as the new view, then hands watchers
// what changed, and releases mu.
func (c *cache[T]) unlock() {
	c.cur.Store(&view[T]{entries: c.edit.Map(), live: c.live, epoch: c.epoch, applied: c.applied})
	c.edit = nil
	if c.waiting.Load() {
		c.sigMu.Lock()
		if c.published != nil {
			close(c.published)
			c.published = nil
			c.waiting.Store(false)
		}
		c.sigMu.Unlock()
	}
	if c.pendingReset {
		for _, w := range c.watchers {
			w.reset()
		}
		c.pendingReset = false
	}
	if len(c.pending) > 0 {
		for _, w := range c.watchers {
			w.push(c.pending)
		}
		clear(c.pending)
		c.pending = c.pending[:0]
	}
	c.mu.Unlock()
}

// unlockUnchanged releases mu after a change that changed nothing the
// view holds (only bookkeeping, such as classifying duplicates): no new
// view is published, and nobody waiting for one is woken.
func (c *cache[T]) unlockUnchanged() {
	c.edit = nil
	c.mu.Unlock()
}

// entry returns a key's entry in the copy being changed. Callers hold mu.
func (c *cache[T]) entry(key string) (entry[T], bool) { return c.edit.Get(key) }

// adoptable reports whether the cache has never seen data, so a first epoch
// can be taken without a resync. Callers hold mu.
func (c *cache[T]) adoptable() bool {
	n := c.current().entries.Len()
	if c.edit != nil {
		n = c.edit.Len()
	}
	return c.epoch == "" && c.applied == 0 && len(c.ahead) == 0 && n == 0
}

// unreadEvent sets lastEvent back to last if the event at rev was the
// last read: that event is handled again (awaitOwnBelow), and must not
// look like the store going back in time.
func (c *cache[T]) unreadEvent(rev, last uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastEvent == rev {
		c.lastEvent = last
	}
}

// adopt reports whether a change of epoch can be applied to the cache: it
// is the cache's epoch, or the cache has seen no data and takes it.
// Callers hold mu.
func (c *cache[T]) adopt(epoch string) bool {
	if epoch == c.epoch {
		return true
	}
	if !c.adoptable() {
		return false
	}
	c.epoch = epoch
	return true
}

// follows reports whether a commit with parent continues the copy's
// history: the commit ids are unknown on either side, or they match.
// Callers hold mu.
func (c *cache[T]) follows(parent string) bool {
	return parent == "" || c.commit == "" || parent == c.commit
}

// applyEvent applies a change event received from the broadcast or the
// change log.
func (c *cache[T]) applyEvent(h backend.Head, origin string, ups []update[T]) verdict {
	c.lock()
	defer c.unlock()
	return c.applyEventLocked(h, origin, ups)
}

// applyEventLocked is applyEvent inside a change the caller holds (lock):
// the read loop applies a burst of events as one change.
func (c *cache[T]) applyEventLocked(h backend.Head, origin string, ups []update[T]) verdict {
	if !c.adopt(h.Epoch) {
		return resync
	}
	c.known = max(c.known, h.Revision)
	if _, ok := c.ahead[h.Revision]; ok || h.Revision <= c.applied {
		return duplicate
	}
	if h.Revision != c.applied+1 {
		return gap
	}
	if !c.follows(h.Parent) {
		return diverged
	}
	c.emit(c.set(h.Revision, h.Commit, origin, ups, false))
	c.setApplied(h.Revision, h.Commit)
	if origin == c.self {
		c.noteEcho(h.Revision, h.Commit)
	}
	return c.advance()
}

// holdsLocked reports whether an event at h would apply as a duplicate:
// the copy, in h's epoch, already reflects h's revision. Callers hold mu.
func (c *cache[T]) holdsLocked(h backend.Head) bool {
	if h.Epoch != c.epoch {
		return false
	}
	_, ok := c.ahead[h.Revision]
	return ok || h.Revision <= c.applied
}

// noteEcho remembers that this instance's own commit at rev arrived as an
// event before the commit's reply, so applyOwn can tell it from a reused
// revision. Entries whose reply never came (the caller gave up) are pruned.
// Callers hold mu.
func (c *cache[T]) noteEcho(rev uint64, commit string) {
	const keep = 1024
	if len(c.echoed) >= keep {
		for r := range c.echoed {
			if r+keep < c.applied {
				delete(c.echoed, r)
			}
		}
	}
	c.echoed[rev] = commit
}

// applyOwn applies a commit this instance made, at once, for
// read-your-writes, even if earlier revisions have not arrived yet.
func (c *cache[T]) applyOwn(h backend.Head, origin string, ups []update[T]) verdict {
	c.lock()
	epoch, applied := c.epoch, c.applied
	v, changed := c.applyOwnLocked(h, origin, ups)
	if changed || c.epoch != epoch || c.applied != applied {
		c.unlock()
	} else {
		// Most often the commit's echo was applied first (a duplicate):
		// the view stays, and nothing waiting for one is woken.
		c.unlockUnchanged()
	}
	return v
}

// applyOwnLocked is applyOwn inside a change the caller holds; changed
// reports whether it changed the entries.
func (c *cache[T]) applyOwnLocked(h backend.Head, origin string, ups []update[T]) (v verdict, changed bool) {
	if !c.adopt(h.Epoch) {
		return resync, false
	}
	rev := h.Revision
	c.known = max(c.known, rev)
	if _, ok := c.ahead[rev]; ok || rev <= c.applied {
		// Normally its event was faster than the commit's reply. If not,
		// a catch-up covered it, or this revision was applied from another
		// writer's history, which the store has since lost (it went back in
		// time): a snapshot tells, and if the histories differ the next
		// commit's parent shows it.
		if commit, ok := c.echoed[rev]; ok {
			delete(c.echoed, rev)
			if commit == h.Commit || commit == "" || h.Commit == "" {
				return duplicate, false
			}
			// The echo of another commit of this instance at rev, one whose
			// reply never came (in doubt), which the store has since lost
			// and whose revision it handed out again: not this commit's.
		}
		if !c.passed(rev, h.Commit) {
			// The copy applied another commit at this revision: a history
			// the store lost. Only a replacement brings this write in.
			return diverged, false
		}
		return resync, false
	}
	if rev == c.applied+1 && !c.follows(h.Parent) {
		return diverged, false
	}
	// An own commit held until the revisions before it arrive keeps its
	// changes: watchers get them then, and a replacement re-applies them.
	changes := c.set(rev, h.Commit, origin, ups, rev != c.applied+1)
	if rev != c.applied+1 {
		c.ahead[rev] = own[T]{changes: changes, commit: h.Commit, parent: h.Parent}
		return applied, true
	}
	c.emit(changes)
	c.setApplied(rev, h.Commit)
	return c.advance(), true
}

// set writes ups at rev into entries where they are newer, and returns the
// changes for watchers: all of them, since watchers follow the history, not
// the cache. With keep unset and no watchers it returns none, sparing the
// allocation on the common path. Callers hold mu.
func (c *cache[T]) set(rev uint64, commit, origin string, ups []update[T], keep bool) []Change[T] {
	var changes []Change[T]
	if keep || len(c.watchers) > 0 {
		changes = make([]Change[T], 0, len(ups))
	}
	for _, u := range ups {
		if changes != nil {
			changes = append(changes, Change[T]{Key: u.key, Value: u.value, Deleted: u.deleted, Revision: rev, Origin: origin, Expires: unixMilli(u.expires), Err: u.err})
		}
		c.putNewer(u.key, newEntry(u.value, rev, commit, u.deleted, u.expires, u.err))
	}
	return changes
}

// putNewer puts e unless the key holds a revision at least as new, and
// reports whether it did. Callers hold mu.
func (c *cache[T]) putNewer(key string, e entry[T]) bool {
	cur, ok := c.entry(key)
	if ok && cur.rev >= e.rev {
		return false
	}
	c.put(key, e, cur, ok)
	return true
}

// put replaces a key's entry and keeps live counted. Callers hold mu.
func (c *cache[T]) put(key string, e entry[T], old entry[T], existed bool) {
	if existed && !old.deleted() {
		c.live--
	}
	if !e.deleted() {
		c.live++
	}
	c.edit.Set(key, e)
}

// advance moves applied over own commits that are now contiguous; it
// reports diverged if one of them does not follow the copy's history.
// Callers hold mu.
func (c *cache[T]) advance() verdict {
	for {
		next, ok := c.ahead[c.applied+1]
		if !ok {
			return applied
		}
		if !c.follows(next.parent) {
			return diverged
		}
		delete(c.ahead, c.applied+1)
		c.setApplied(c.applied+1, next.commit)
		c.emit(next.changes)
	}
}

// snapshotEntry is one decoded entry of a snapshot.
type snapshotEntry[T any] struct {
	update[T]
	rev    uint64
	commit string
}

// applySnapshot brings the cache to a snapshot taken at (epoch, rev) by a
// load that started when the cache had applied appliedBefore. It merges when
// the snapshot continues the cache's history, and replaces the cache when
// the epoch changed or the store went back in time (rev below what the
// store had already acknowledged before the load).
//
// With replace set it replaces the cache whatever it holds: the caller has
// found that the store's history is not the copy's, which the revisions
// alone cannot show.
//
// epochBefore is the cache's epoch when the load started. A snapshot of a
// context that did not exist yet (no epoch), loaded while the cache knew no
// epoch either, is only older than what the cache learned meanwhile (the
// context's first commits, the instance's own among them): it is dropped,
// not taken for a store that lost its data.
func (c *cache[T]) applySnapshot(h backend.Head, epochBefore string, appliedBefore uint64, ents []snapshotEntry[T], replace bool) snapshotOutcome {
	c.lock()
	defer c.unlock()
	if !replace && h.Epoch == "" && epochBefore == "" && c.epoch != "" {
		return snapshotDropped
	}
	rev := h.Revision
	switch {
	case replace && c.appliedCommit(h.Epoch, rev, h.Commit):
		// The copy has this very commit at rev and has gone on along its
		// chain while the load was in flight (the events raced ahead of
		// the load's reply): it already holds the snapshot's history and
		// more. Replacing would move reads back to rev, losing writes the
		// copy had shown, its own acknowledged ones among them.
		return snapshotCovered
	case replace:
		c.replace(h, ents)
		return replacedAsAsked
	case !c.adopt(h.Epoch):
		c.replace(h, ents)
		return replacedEpoch
	case rev < appliedBefore:
		c.replace(h, ents)
		return replacedBackwards
	case !c.passed(rev, h.Commit):
		c.replace(h, ents)
		return replacedOtherCommit
	}
	c.known = max(c.known, rev)
	c.markDamaged(rev, ents)
	if rev <= c.applied {
		// Events applied meanwhile cover it — if the copy agrees with it.
		// A copy that kept a write the store lost (an own write
		// acknowledged before an asynchronous failover, a key the new
		// history never wrote again) can reach the store's revision and
		// commit id and still hold it: only the contents show it. At
		// exactly the copy's revision the two must be equal, and a
		// replacement moves nothing back.
		if rev == c.applied && c.contradicts(rev, ents) {
			c.replace(h, ents)
			return replacedContradicted
		}
		return snapshotCovered
	}
	if c.divergesFrom(rev, ents) {
		c.replace(h, ents)
		return replacedMissingWrite
	}
	// Changes are collected for watchers only: with none, a large
	// snapshot skips building and sorting them.
	watched := len(c.watchers) > 0
	var changes []Change[T]
	inSnapshot := make(map[string]struct{}, len(ents))
	for _, se := range ents {
		inSnapshot[se.key] = struct{}{}
		if se.rev == 0 {
			continue // markDamaged took it
		}
		if !c.putNewer(se.key, newEntry(se.value, se.rev, se.commit, false, se.expires, se.err)) {
			continue
		}
		if watched && se.rev > c.applied {
			changes = append(changes, Change[T]{Key: se.key, Value: se.value, Revision: se.rev, Err: se.err})
		}
	}
	var gone []string
	for key, cur := range c.current().entries.All() {
		if _, ok := inSnapshot[key]; !ok && cur.rev <= rev {
			gone = append(gone, key)
		}
	}
	for _, key := range gone {
		// Gone from the store at or before rev (unless this instance
		// wrote it meanwhile): a tombstone that the snapshot now covers,
		// or a delete this instance missed.
		cur, ok := c.entry(key)
		if !ok || cur.rev > rev {
			continue
		}
		c.edit.Delete(key)
		if !cur.deleted() {
			c.live--
			if watched {
				changes = append(changes, Change[T]{Key: key, Deleted: true, Revision: rev})
			}
		}
	}
	for r, mine := range c.ahead {
		if r <= rev {
			if watched {
				changes = append(changes, mine.changes...)
			}
			delete(c.ahead, r)
		}
	}
	if watched {
		slices.SortStableFunc(changes, func(a, b Change[T]) int {
			switch {
			case a.Revision < b.Revision:
				return -1
			case a.Revision > b.Revision:
				return 1
			}
			return 0
		})
		c.emit(changes)
	}
	c.setApplied(rev, h.Commit)
	if c.advance() == diverged {
		// An own commit made on another history than the snapshot's
		// (possible only while a failover settles): the snapshot is the
		// store's truth.
		c.replace(h, ents)
		return replacedOwnDiverged
	}
	return snapshotMerged
}

// snapshotOutcome says what applySnapshot did, for the debug log.
type snapshotOutcome string

const (
	snapshotMerged       snapshotOutcome = "merged"
	snapshotCovered      snapshotOutcome = "covered by events applied meanwhile"
	snapshotDropped      snapshotOutcome = "dropped: taken before the context existed"
	replacedAsAsked      snapshotOutcome = "replaced the copy: another history"
	replacedEpoch        snapshotOutcome = "replaced the copy: another epoch"
	replacedBackwards    snapshotOutcome = "replaced the copy: the store went back in time"
	replacedOtherCommit  snapshotOutcome = "replaced the copy: another commit at a revision the copy applied"
	replacedMissingWrite snapshotOutcome = "replaced the copy: the snapshot lacks a write the copy holds"
	replacedOwnDiverged  snapshotOutcome = "replaced the copy: an own commit does not follow the snapshot"
	replacedContradicted snapshotOutcome = "replaced the copy: it holds other writes than the snapshot up to its revision"
)

// contradicts reports whether the copy's state up to rev differs from a
// snapshot at rev: a key the copy holds from a write at or below rev must
// be in the snapshot with that same write, and a key of the snapshot must
// be in the copy (deleted later, or written later, is fine). Callers hold
// mu.
//
// The second half counts instead of collecting the snapshot's keys in a
// set: the copy holds no key the snapshot lacks if as many of its keys
// are held (live, valid, written at or below rev) as the snapshot has
// keys the copy holds that way (snapshot keys are distinct). On a 100k-key
// Sync the set was a tenth of the time.
func (c *cache[T]) contradicts(rev uint64, ents []snapshotEntry[T]) bool {
	held := func(e *entry[T]) bool { return !e.deleted() && e.rev <= rev && e.err() == nil }
	inBoth := 0
	for _, se := range ents {
		cur, ok := c.entry(se.key)
		if se.rev == 0 {
			// Damaged: markDamaged took it; the copy may still hold it.
			if ok && held(&cur) {
				inBoth++
			}
			continue
		}
		switch {
		case !ok:
			return true // the copy never had a key the store had at rev
		case cur.rev > rev:
			continue // written (or deleted) after rev
		case cur.rev != se.rev || cur.deleted():
			return true
		case cur.commit != "" && se.commit != "" && cur.commit != se.commit:
			return true
		}
		if held(&cur) {
			inBoth++
		}
	}
	n := 0
	for _, cur := range c.edit.Map().All() {
		if held(&cur) {
			n++
		}
	}
	return n != inBoth // the copy holds a key the store did not have at rev
}

// markDamaged marks the keys a snapshot at rev holds without a valid
// revision (another program wrote into the store's keys; contextd owns
// them) as damaged, so reads of them fail with ErrCorrupt, unless the copy
// has a change of the key newer than the snapshot. Such a write bumps no
// revision, so this is done even for a snapshot the copy has passed.
// Callers hold mu.
func (c *cache[T]) markDamaged(rev uint64, ents []snapshotEntry[T]) {
	for _, se := range ents {
		if se.rev != 0 {
			continue
		}
		cur, ok := c.entry(se.key)
		if ok && (cur.rev > rev || cur.err() != nil && !cur.deleted()) {
			continue
		}
		// Keep the key's revision, so any later change replaces this.
		c.put(se.key, newEntry(*new(T), cur.rev, "", false, 0, se.err), cur, ok)
	}
}

// divergesFrom reports whether a snapshot at rev contradicts what the copy
// holds of the history up to rev: a key the copy has from a write at or
// below rev must show that same write in the snapshot (an older one means
// the store does not have the copy's write). Revision numbers alone would
// let a copy that applied writes a failover lost keep them, since the new
// master hands out their revisions again. Callers hold mu.
func (c *cache[T]) divergesFrom(rev uint64, ents []snapshotEntry[T]) bool {
	for _, se := range ents {
		cur, ok := c.entry(se.key)
		if !ok || cur.rev > rev {
			continue
		}
		if cur.rev > se.rev || cur.rev == se.rev && cur.commit != "" && se.commit != "" && cur.commit != se.commit {
			return true
		}
	}
	return false
}

// historyLength is how many recent revisions' commit ids the copy keeps.
const historyLength = 1024

// historySlot is a revision the copy applied and the commit that made it.
type historySlot struct {
	rev    uint64
	commit string
}

// setApplied records that every change up to rev, made by commit, is
// applied. Callers hold mu.
func (c *cache[T]) setApplied(rev uint64, commit string) {
	c.applied, c.commit = rev, commit
	// Grow (doubling) rather than overwrite a revision that a ring of
	// historyLength slots would keep (one not a multiple of historyLength
	// older: with revisions skipped, an older one may still be there):
	// the history remembers what one of historyLength slots would. Revisions in distinct slots stay distinct in a ring
	// twice as long.
	for n := len(c.history); n < historyLength; n = len(c.history) {
		if old := c.historyAt(rev); n > 0 && (old.rev == 0 || (rev-old.rev)%historyLength == 0) {
			break
		}
		grown := make([]historySlot, min(historyLength, max(16, 2*n)))
		for _, h := range c.history {
			if h.rev != 0 {
				grown[h.rev%uint64(len(grown))] = h
			}
		}
		c.history = grown
	}
	c.history[rev%uint64(len(c.history))] = historySlot{rev, commit}
}

// historyAt returns the slot of the history where rev is or would be
// (zero if the history is empty). Callers hold mu.
func (c *cache[T]) historyAt(rev uint64) historySlot {
	if len(c.history) == 0 {
		return historySlot{}
	}
	return c.history[rev%uint64(len(c.history))]
}

// passed reports whether a snapshot at rev made by commit can be part of
// the copy's history: false if the copy applied another commit at rev
// (the store's history is not the copy's: a failover lost writes the copy
// had applied, and the new master reused their revisions). Unknown ids, or
// revisions too old to remember, pass. Callers hold mu.
func (c *cache[T]) passed(rev uint64, commit string) bool {
	if rev > c.applied || commit == "" {
		return true
	}
	slot := c.historyAt(rev)
	return slot.rev != rev || slot.commit == "" || slot.commit == commit
}

// appliedCommit reports whether the copy, in epoch, has applied revision
// rev made by commit (a known id): then every revision it applied after
// rev continued that commit's chain. Callers hold mu.
func (c *cache[T]) appliedCommit(epoch string, rev uint64, commit string) bool {
	if epoch != c.epoch || commit == "" || rev > c.applied {
		return false
	}
	slot := c.historyAt(rev)
	return slot.rev == rev && slot.commit == commit
}

// replace discards the cache for a snapshot of another history. Callers
// hold mu.
//
// This instance's own commits above the snapshot, in the same epoch, stay
// for read-your-writes: the store acknowledged them after the snapshot was
// taken, so they belong to its history (if not, the commit chain shows it
// when they become contiguous, and brings another replacement).
func (c *cache[T]) replace(h backend.Head, ents []snapshotEntry[T]) {
	sameEpoch := h.Epoch != "" && h.Epoch == c.epoch
	c.epoch = h.Epoch
	c.history = nil
	c.setApplied(h.Revision, h.Commit)
	c.known = h.Revision
	c.lastEvent = 0
	for r := range c.ahead {
		if r <= h.Revision || !sameEpoch {
			delete(c.ahead, r)
		}
	}
	clear(c.echoed)
	c.builder.Reset(pmap.Map[entry[T]]{})
	c.edit = &c.builder
	c.live = 0
	for _, se := range ents {
		c.put(se.key, newEntry(se.value, se.rev, se.commit, false, se.expires, se.err), entry[T]{}, false)
	}
	for r, mine := range c.ahead {
		for _, ch := range mine.changes {
			c.putNewer(ch.Key, newEntry(ch.Value, r, mine.commit, ch.Deleted, milliOf(ch.Expires), ch.Err))
		}
	}
	c.resetWatchers()
}

// emit queues changes for every watcher; unlock hands them over once the
// view that holds them is published, so a watcher that reads after a
// change sees it. Callers hold mu, which is what keeps each watcher's
// changes in revision order.
func (c *cache[T]) emit(changes []Change[T]) {
	if len(changes) == 0 || len(c.watchers) == 0 {
		return
	}
	c.pending = append(c.pending, changes...)
}

// resetWatchers owes every watcher a Reset (the copy was replaced), sent
// when the new view is published; changes queued before it are moot.
// Callers hold mu.
func (c *cache[T]) resetWatchers() {
	c.pendingReset = len(c.watchers) > 0
	c.pending = c.pending[:0]
}

// head reports the epoch and applied revision of the current view.
func (c *cache[T]) head() (string, uint64) {
	v := c.current()
	return v.epoch, v.applied
}

// staleness returns why reads may be out of date, or nil.
func (c *cache[T]) staleness() error {
	if b := c.deaf.Load(); b != nil {
		return b.err
	}
	if b := c.stale.Load(); b != nil {
		return b.err
	}
	return nil
}

// setDeaf records whether the subscription is receiving (nil: it is).
func (c *cache[T]) setDeaf(err error) { c.deaf.Store(box(err)) }

// setStale records why the copy may be out of date (nil: it is current).
func (c *cache[T]) setStale(err error) { c.stale.Store(box(err)) }

// staleErr returns what setStale recorded last.
func (c *cache[T]) staleErr() error {
	if b := c.stale.Load(); b != nil {
		return b.err
	}
	return nil
}

func box(err error) *errBox {
	if err == nil {
		return nil
	}
	return &errBox{err}
}

// heard records a revision seen in the store, for Lag.
func (c *cache[T]) heard(rev uint64) {
	c.mu.Lock()
	c.known = max(c.known, rev)
	c.mu.Unlock()
}

// lagIf returns lag() if want, else 0 (sparing the lock).
func (c *cache[T]) lagIf(want bool) uint64 {
	if !want {
		return 0
	}
	return c.lag()
}

// lag returns how far the store is known to be ahead of the copy.
func (c *cache[T]) lag() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known < c.applied {
		return 0
	}
	return c.known - c.applied
}

// classifyLocked tells what an event from the subscription would do, before its
// values are decoded, so duplicates (such as the echo of this instance's own
// commits) cost nothing. ordered says the subscription delivers in revision
// order: then a revision at or below the last one means the store went back
// in time. A gap advances nothing: the catch-up it causes finds out what the
// store really holds, so one bogus revision cannot poison the bookkeeping.
//
// Callers hold mu (the read loop does, inside a change: lock).
func (c *cache[T]) classifyLocked(h backend.Head, ordered bool) verdict {
	same := h.Epoch == c.epoch
	if !same && !c.adoptable() {
		return resync
	}
	if ordered && same && h.Revision <= c.lastEvent {
		return resync
	}
	_, mine := c.ahead[h.Revision]
	switch {
	case mine && ordered && h.Revision > c.applied+1:
		// The echo of an own commit held for earlier revisions: an ordered
		// subscription would have delivered those first, so they are lost.
		c.lastEvent = h.Revision
		return gap
	case mine || same && h.Revision <= c.applied:
		if ordered && same {
			c.lastEvent = h.Revision
		}
		return duplicate
	case same && h.Revision != c.applied+1:
		return gap
	case same && !c.follows(h.Parent):
		return diverged
	}
	if ordered {
		c.lastEvent = h.Revision
	}
	c.known = max(c.known, h.Revision)
	return applied
}
