package contextd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/internal/backoff"
)

var (
	errLoss        = errors.New("subscription reported lost messages")
	errInterrupted = errors.New("subscription interrupted: not receiving changes")
)

// burstSubscription is a Subscription that hands over every message it
// has queued at once (the Redis backend's does): at least one, blocking as
// Next does, at most most.
type burstSubscription interface {
	NextBatch(ctx context.Context, buf []broadcaster.Message, most int) ([]broadcaster.Message, error)
}

// maxBurst bounds the events the read loop applies as one change of the
// copy: each is decoded while the copy is locked, so a writer's own commit
// waits for at most this many decodes.
const maxBurst = 32

// quietSubscription is a Subscription that can queue a payload without
// waking its reader (the Redis backend's): it is read, in order, with the
// next one that does wake it.
type quietSubscription interface {
	SetQuiet(quiet func(payload []byte) bool)
	// Wake has the reader read what is queued quietly now.
	Wake()
}

// hushedSubscription is the quietSubscription a Context hushes its echoes
// on (Context.hushing).
type hushedSubscription struct{ quietSubscription }

// hushEchoes makes sub queue the echo of an own commit without waking the
// read loop when the commit's reply applies it: the copy holds it already
// (the reply came first), or a commit of this instance awaits its reply
// (the echo came first; on Redis most do, as the server writes to the
// subscriber before it answers the writer). The event changes nothing the
// reply does not, and is still classified, in order, with the next event
// that wakes the loop; a wake-up per write cost the writer a fifth to a
// half of a raw HSET (docs/benchmarks.md, "Held echoes"). An echo held
// above the copy may be another commit's than the one awaited — one that
// failed and was made all the same (in doubt, or landing late) — and is
// then the only carrier of its write: every commit, when done, wakes the
// subscription if such an echo still lies above the copy (wakeHeld).
func (c *Context[T]) hushEchoes(sub broadcaster.Subscription) {
	qs, ok := sub.(quietSubscription)
	if !ok {
		c.hushing.Store(nil)
		return
	}
	c.hushing.Store(&hushedSubscription{qs})
	self := backend.AppendWireID(nil, c.id)
	// The wire form of the copy's epoch, made again when it changes; only
	// the quiet function, called by one goroutine at a time, uses them.
	var epoch string
	var epochWire []byte
	qs.SetQuiet(func(p []byte) bool {
		e, rev, origin, ok := backend.PeekEvent(p)
		if !ok || !bytes.Equal(origin, self) {
			return false
		}
		v := c.cache.current()
		if v.applied == 0 {
			return false
		}
		if v.epoch != epoch || epochWire == nil {
			epoch, epochWire = v.epoch, backend.AppendWireID(epochWire[:0], v.epoch)
		}
		if !bytes.Equal(e, epochWire) {
			return false
		}
		if rev <= v.applied {
			return true
		}
		// Recorded before the commits under way are counted: a commit
		// that ends after this count sees the record (wakeHeld), and
		// one that ended before it leaves a count that may be zero.
		c.heldTop.Store(rev)
		return c.ownPending.Load() > 0
	})
}

// wakeHeld has the subscription read the own echoes it holds quietly if
// one lies above the copy (hushEchoes), for commit once a commit of this
// instance is done (applied, or failed) and out of ownPending. A failed
// commit looks always (always): its held echo may be the only carrier of
// its write. A successful one only if its reply waits above a hole, or
// no other commit is under way: an echo above the copy is then another
// commit's, one that failed (a commit still under way ends later and
// looks again, and one that began after the echo was held lands above it,
// so its reply waits above the hole). A steady writer, whose echo its own
// reply applies, wakes nothing; nor do concurrent writes that all succeed.
func (c *Context[T]) wakeHeld(always bool) {
	h := c.hushing.Load()
	if h == nil {
		return
	}
	for {
		top := c.heldTop.Load()
		if top == 0 || top <= c.cache.current().applied {
			return
		}
		if !always && c.ownPending.Load() > 0 {
			return
		}
		// Cleared before the wake-up: a record made after it (even of
		// the same revision) stays, for the commit that ends after it.
		if c.heldTop.CompareAndSwap(top, 0) {
			h.Wake()
			return
		}
	}
}

// echoSkipper is a Subscription that can leave out the events of one
// origin's atomically published commits (the memory backend's, whose
// commits are synchronous: their replies always come).
type echoSkipper interface {
	SkipOwnEchoes(origin string)
}

// skipEchoes has sub leave out the echoes of this instance's commits where
// it can and they are published with the commit (AtomicPublish), and
// reports whether it does: the commit's reply applies it, and an echo
// would only wake the read loop to find it a duplicate, which on the
// memory backend costs a writer most of what publishing costs it. A
// commit that fails in doubt is brought in by a catch-up instead
// (commit).
func (c *Context[T]) skipEchoes(sub broadcaster.Subscription) bool {
	es, ok := sub.(echoSkipper)
	if !ok || c.atomicPub == nil {
		c.noEcho.Store(false)
		return false
	}
	es.SkipOwnEchoes(c.id)
	c.noEcho.Store(true)
	return true
}

// ownEchoes sets how sub treats the echoes of this instance's commits, for
// each subscription the Context makes: left out where it can
// (skipEchoes), else queued quietly where it can (hushEchoes).
func (c *Context[T]) ownEchoes(sub broadcaster.Subscription) {
	if c.skipEchoes(sub) {
		c.hushing.Store(nil)
	} else {
		c.hushEchoes(sub)
	}
}

// readLoop applies the subscription's events until ctx ends. It is the one
// goroutine that reads the subscription.
func (c *Context[T]) readLoop(ctx context.Context) {
	sub := c.sub
	var dec backend.EventDecoder
	var msgs []broadcaster.Message
	for {
		var err error
		msgs, err = nextMessages(ctx, sub, msgs[:0])
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.cache.setDeaf(err)
			c.opts.Logger.Warn("contextd: subscription failed; subscribing again", "context", c.name, "error", err)
			if sub = c.resubscribe(ctx, sub); sub == nil {
				return
			}
			c.cache.setDeaf(nil)
			c.catchUp(ctx, viaLog)
			continue
		}
		c.handleMessages(ctx, msgs, &dec)
		clear(msgs) // the payloads may go
	}
}

// nextMessages appends the subscription's next messages to buf: what it
// has queued, if it can tell (burstSubscription), else the next one.
func nextMessages(ctx context.Context, sub broadcaster.Subscription, buf []broadcaster.Message) ([]broadcaster.Message, error) {
	if bs, ok := sub.(burstSubscription); ok {
		return bs.NextBatch(ctx, buf, maxBurst)
	}
	msg, err := sub.Next(ctx)
	if err != nil {
		return buf, err
	}
	return append(buf, msg), nil
}

// handleMessages handles messages in order: notices one by one, each run
// of events in bursts (applyBurst).
func (c *Context[T]) handleMessages(ctx context.Context, msgs []broadcaster.Message, dec *backend.EventDecoder) {
	for len(msgs) > 0 {
		msg := msgs[0]
		switch {
		case msg.Interrupted:
			c.cache.setDeaf(errInterrupted)
			msgs = msgs[1:]
			continue
		case msg.Loss:
			c.stats.losses.Add(1)
			c.opts.Trace.gap("loss")
			c.cache.setDeaf(nil)
			c.cache.setStale(errLoss)
			c.catchUp(ctx, viaLog)
			msgs = msgs[1:]
			continue
		}
		n := 1
		for n < len(msgs) && !msgs[n].Interrupted && !msgs[n].Loss {
			n++
		}
		run := msgs[:n]
		for len(run) > 0 {
			run = run[c.applyBurst(ctx, run, dec):]
		}
		msgs = msgs[n:]
	}
}

// applyBurst applies events from the front of run, in order, as one change
// of the copy (one new view, one hand-over to watchers), until one needs
// work that must not hold the copy locked: a catch-up (an invalid event, a
// gap, another epoch or history) or a fetch of values the event left out.
// It does that work after publishing what it applied, and returns how
// many events it consumed: at least one, or none when the first event
// found a hole below it that own commits' replies have filled meanwhile
// (awaitOwnBelow), so that it is handled again.
//
// Each event is classified by its head first, as it would be alone: an
// event the copy already has (the echo of an own commit whose reply came
// first) is dropped without decoding its changes, and the echo of a commit
// still awaiting its reply takes the commit's decoded values. Every other
// value is decoded once.
func (c *Context[T]) applyBurst(ctx context.Context, run []broadcaster.Message, dec *backend.EventDecoder) int {
	var (
		n      int
		badErr error // the event at n-1 does not decode
		// slow is the event at n-1 if it needs a fetch (isSlow): a copy,
		// not a pointer to ev, which would move every event decoded here
		// to the heap.
		slow    backend.Event
		isSlow  bool
		repair  = applied    // what the event at n-1 calls for
		traced  []uint64     // revisions of other instances applied, for Trace
		touched bool         // an event was applied (or tried to be)
		expires int64        // the earliest deadline applied, for the expiry tracker
		gapAt   backend.Head // the head of the event that found a gap below it
		gapLast uint64       // the copy's lastEvent before that event was read
	)
	wantTrace := c.opts.Trace != nil && c.opts.Trace.EventApplied != nil
	c.cache.lock()
	for n < len(run) {
		ev, err := dec.DecodeHead(run[n].Payload)
		n++
		if err != nil {
			badErr = err
			break
		}
		lastEvent := c.cache.lastEvent
		v := c.cache.classifyLocked(ev.Head, c.caps.AtomicPublish)
		if v == applied {
			ev.Changes = dec.DecodeChanges()
			var ups []update[T]
			own := false
			if ev.Origin == c.id {
				// The echo of an own commit: while the commit awaits its
				// reply its decoded values are at hand; once the reply has
				// applied it, the event is a duplicate (nothing to repair).
				if ups, own = c.ownUpdates(ev); !own && c.cache.holdsLocked(ev.Head) {
					continue
				}
			}
			if !own {
				if omits(ev) {
					slow, isSlow = ev, true
					break
				}
				ups = c.updatesOf(ev, nil)
			}
			v = c.cache.applyEventLocked(ev.Head, ev.Origin, ups)
			touched = true
			if c.expirer != nil {
				expires = earliestExpiry(ups, expires)
			}
			if v == applied && ev.Origin != c.id && wantTrace {
				traced = append(traced, ev.Revision)
			}
		}
		if v != applied && v != duplicate {
			if v == gap {
				gapAt, gapLast = ev.Head, lastEvent
			}
			c.logNotApplied("event", ev, v)
			repair = v
			break
		}
	}
	if touched {
		c.cache.unlock()
	} else {
		// Only duplicates (own echoes): the view stays as it is.
		c.cache.unlockUnchanged()
	}
	if expires != 0 {
		c.expiry.saw(expires)
	}
	for _, rev := range traced {
		c.opts.Trace.eventApplied(rev, c.cache.lag())
	}
	switch {
	case badErr != nil:
		c.stats.invalidEvents.Add(1)
		c.opts.Logger.Warn("contextd: ignoring an invalid event; catching up", "context", c.name, "error", badErr)
		c.catchUp(ctx, viaLog)
	case isSlow:
		c.applyFetched(ctx, slow)
	case repair == gap && c.noEcho.Load() && c.awaitOwnBelow(ctx, gapAt):
		// The hole was own commits whose replies came after the event:
		// handle the event again, now in order, as not read yet.
		c.cache.unreadEvent(gapAt.Revision, gapLast)
		return n - 1
	default:
		c.repairAfter(ctx, repair)
	}
	return n
}

// ownReplyWait bounds how long the read loop waits for the replies of own
// commits below an event (awaitOwnBelow) before it takes the hole for a
// loss and repairs it.
const ownReplyWait = time.Second

// awaitOwnBelow reports whether the copy reaches the revision before h,
// waiting for it while own commits are under way. Without own echoes
// (skipEchoes), on a subscription that delivers in order and reports
// losses, a revision missing below an event is no lost event: it is an own
// commit whose reply its writer has not applied yet (another instance's
// event can overtake it: the store publishes before it replies), or one
// whose reply was lost, which the catch-up its writer starts brings in.
// Taking the hole for a gap would repair what needs no repair and, where
// the repair is a snapshot (no change log), hide revisions from watchers.
func (c *Context[T]) awaitOwnBelow(ctx context.Context, h backend.Head) bool {
	bound := ownReplyWait
	if c.ownPending.Load() == 0 {
		bound = 0 // no reply to come: look once
	} else if c.awaitingOwn != nil {
		c.awaitingOwn()
	}
	// A copy that left the event's epoch meanwhile (a catch-up after a
	// wipe or failover) has no hole to fill: stop waiting, or the read
	// loop stalls for the whole bound.
	moved := false
	reached := c.cache.await(ctx, bound, func(v *view[T]) bool {
		moved = v.epoch != h.Epoch
		return moved || v.applied+1 >= h.Revision
	})
	return reached && !moved
}

// omits reports whether an event leaves values out.
func omits(ev backend.Event) bool {
	for _, ch := range ev.Changes {
		if ch.Omitted {
			return true
		}
	}
	return false
}

// applyFetched applies an event that leaves values out, fetching them
// first (prepare), with the copy unlocked meanwhile: the event is checked
// again when it is applied.
func (c *Context[T]) applyFetched(ctx context.Context, ev backend.Event) {
	ups, err := c.prepare(ctx, ev)
	if err != nil {
		c.cache.setStale(err)
		c.catchUp(ctx, viaSnapshot)
		return
	}
	v := c.cache.applyEvent(ev.Head, ev.Origin, ups)
	c.sawExpiries(ups)
	if v == applied && ev.Origin != c.id {
		c.opts.Trace.eventApplied(ev.Revision, c.cache.lagIf(c.opts.Trace != nil))
	}
	if v != applied && v != duplicate {
		c.logNotApplied("event", ev, v)
	}
	c.repairAfter(ctx, v)
}

// resubscribe replaces a failed subscription, retrying with jittered
// backoff until it succeeds or ctx ends (then it returns nil). The jitter
// keeps a fleet that lost its subscriptions at once (a Redis restart) from
// resubscribing and reloading in lockstep.
func (c *Context[T]) resubscribe(ctx context.Context, old broadcaster.Subscription) broadcaster.Subscription {
	_ = old.Close()
	pause := backoff.New(50*time.Millisecond, 2*time.Second)
	for {
		sub, err := c.bcast.Subscribe(ctx, c.opts.Channel)
		if err == nil {
			c.lifeMu.Lock()
			defer c.lifeMu.Unlock()
			if c.closed.Load() {
				_ = sub.Close()
				return nil
			}
			c.sub = sub
			c.ownEchoes(sub)
			return sub
		}
		c.cache.setDeaf(err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause.Next()):
		}
	}
}

// repairAfter catches up as a verdict requires.
func (c *Context[T]) repairAfter(ctx context.Context, v verdict) {
	if v != applied && v != duplicate {
		c.opts.Logger.Debug("contextd: catching up", "context", c.name, "verdict", v.String())
	}
	switch v {
	case gap:
		c.stats.gaps.Add(1)
		c.opts.Trace.gap("gap")
		c.catchUp(ctx, viaLog)
	case resync:
		c.catchUp(ctx, viaSnapshot)
	case diverged:
		c.opts.Trace.gap("diverged")
		c.catchUp(ctx, replaceAll)
	}
}

// prepare decodes an event's values, fetching those the event omitted, in
// one bulk read where the store offers one (backend.MultiGetter). A value
// that was overwritten again before the fetch is left out: a later event
// carries it.
func (c *Context[T]) prepare(ctx context.Context, ev backend.Event) ([]update[T], error) {
	fetched, err := c.fetchOmitted(ctx, ev)
	if err != nil {
		return nil, err
	}
	return c.updatesOf(ev, fetched), nil
}

// updatesOf decodes an event's values, taking those it omitted from
// fetched (nil when it omits none).
func (c *Context[T]) updatesOf(ev backend.Event, fetched map[string]backend.Entry) []update[T] {
	ups := make([]update[T], 0, len(ev.Changes))
	for _, ch := range ev.Changes {
		u := update[T]{key: ch.Key, deleted: ch.Deleted, expires: milliOf(ch.Expires)}
		if u.expires == 0 && ch.TTL > 0 && !ch.Deleted {
			// The store framed the event before reading its clock: the
			// deadline is about TTL from now (a little late, never early;
			// the store judges, and the next snapshot brings its figure).
			u.expires = c.expiresAfter(ch.TTL)
		}
		switch {
		case ch.Deleted:
		case ch.Omitted:
			e, ok := fetched[ch.Key]
			if !ok || e.Revision != ev.Revision {
				continue
			}
			u.value, u.err = c.decode(ch.Key, e.Value)
		default:
			u.value, u.err = c.decode(ch.Key, ch.Value)
		}
		ups = append(ups, u)
	}
	return ups
}

// fetchOmitted reads the keys whose values ev omitted: the entries found,
// by key. A damaged entry fails the fetch, as Store.Get does.
func (c *Context[T]) fetchOmitted(ctx context.Context, ev backend.Event) (map[string]backend.Entry, error) {
	var keys []string
	for _, ch := range ev.Changes {
		if ch.Omitted {
			keys = append(keys, ch.Key)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	fetched := make(map[string]backend.Entry, len(keys))
	if mg, ok := c.store.(backend.MultiGetter); ok && len(keys) > 1 {
		es, err := mg.GetMany(ctx, c.name, keys)
		if err != nil {
			return nil, fmt.Errorf("fetch %d keys: %w", len(keys), err)
		}
		for _, e := range es {
			if e.Revision == 0 {
				return nil, damaged(e.Key)
			}
			fetched[e.Key] = e
		}
		return fetched, nil
	}
	for _, k := range keys {
		e, err := c.store.Get(ctx, c.name, k)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fetch %q: %w", k, err)
		}
		fetched[k] = e
	}
	return fetched, nil
}

// catchMode says how a catch-up may proceed.
type catchMode int

const (
	// viaLog fetches the missed events from the change log when the
	// backend has one, else loads a snapshot.
	viaLog catchMode = iota
	// viaSnapshot loads a snapshot and merges it with the copy.
	viaSnapshot
	// replaceAll loads a snapshot and replaces the copy with it: the
	// store's history turned out not to be the copy's.
	replaceAll
)

// catchUp brings the copy up to the store as mode says; the change log
// falls back to a snapshot when it does not reach back, and a log that
// shows another history leads to a replacement. Failures are recorded as
// staleness and logged, and the maintenance goroutine retries.
func (c *Context[T]) catchUp(ctx context.Context, mode catchMode) error {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	epoch, before := c.cache.head()
	if mode == viaLog && c.changeLog != nil && epoch != "" {
		v, err := c.catchUpFromLog(ctx, epoch, before)
		switch {
		case err != nil:
			c.cache.setStale(err)
			c.opts.Trace.catchUp("log", err)
			c.opts.Logger.Warn("contextd: catching up from the change log failed", "context", c.name, "error", err)
			c.requestRepair()
			return err
		case v == applied:
			c.stats.logCatchUps.Add(1)
			c.cache.setStale(nil)
			c.opts.Trace.catchUp("log", nil)
			return nil
		case v == diverged:
			mode = replaceAll
		}
	}
	err := c.load(ctx, epoch, before, mode == replaceAll)
	c.opts.Trace.catchUp("snapshot", err)
	if err != nil {
		c.cache.setStale(err)
		c.opts.Logger.Warn("contextd: loading a snapshot failed", "context", c.name, "error", err)
		c.requestRepair()
		return err
	}
	c.cache.setStale(nil)
	return nil
}

// requestRepair asks the maintenance goroutine to retry catching up, with
// backoff, until it succeeds.
func (c *Context[T]) requestRepair() {
	select {
	case c.repair <- struct{}{}:
	default:
	}
}

// catchUpFromLog applies the logged events after revision before. It
// reports applied when the copy is contiguous again, diverged when the log
// shows another history, and resync when the log cannot help and a
// snapshot is needed.
func (c *Context[T]) catchUpFromLog(ctx context.Context, epoch string, before uint64) (verdict, error) {
	evs, err := c.changeLog.ChangesSince(ctx, c.name, epoch, before)
	if errors.Is(err, backend.ErrLogTruncated) || errors.Is(err, backend.ErrInvalidEvent) {
		return resync, nil // a snapshot still works
	}
	if err != nil {
		return resync, err
	}
	for _, ev := range evs {
		ups, err := c.prepare(ctx, ev)
		if err != nil {
			return resync, err
		}
		v := c.cache.applyEvent(ev.Head, ev.Origin, ups)
		c.sawExpiries(ups)
		switch v {
		case applied:
			c.opts.Trace.eventApplied(ev.Revision, c.cache.lagIf(c.opts.Trace != nil))
		case gap, resync, diverged:
			c.logNotApplied("logged event", ev, v)
			return v, nil
		}
	}
	return applied, nil
}

// load applies a fresh snapshot; epoch and before are the copy's epoch and
// applied revision when the catch-up started, and replace replaces the
// copy whatever it holds.
func (c *Context[T]) load(ctx context.Context, epoch string, before uint64, replace bool) (err error) {
	ctx, done := c.opts.Trace.snapshotStart(ctx)
	var loaded int
	if done != nil {
		defer func() { done(loaded, err) }()
	}
	snap, err := c.store.Load(ctx, c.name)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if snap.Codec != "" && snap.Codec != c.opts.Codec.Name() {
		return fmt.Errorf("context is encoded with %q, this instance uses %q: %w", snap.Codec, c.opts.Codec.Name(), ErrCodecMismatch)
	}
	ents := make([]snapshotEntry[T], len(snap.Entries))
	c.decodeAll(snap.Entries, ents)
	loaded = len(ents)
	if c.expirer != nil {
		for i := range ents {
			c.expiry.saw(ents[i].expires)
		}
	}
	outcome := c.cache.applySnapshot(snap.Head, epoch, before, ents, replace)
	c.stats.snapshots.Add(1)
	c.opts.Logger.Debug("contextd: snapshot loaded", "context", c.name, "epoch", snap.Epoch, "revision", snap.Revision,
		"commit", snap.Commit, "entries", len(ents), "copy_revision_before", before, "outcome", string(outcome))
	return nil
}

// logNotApplied logs, at debug level, an event (what) that the copy did
// not apply as it is, and why (v).
func (c *Context[T]) logNotApplied(what string, ev backend.Event, v verdict) {
	c.opts.Logger.Debug("contextd: "+what+" does not apply", "context", c.name, "epoch", ev.Epoch, "revision", ev.Revision,
		"commit", ev.Commit, "parent", ev.Parent, "origin", ev.Origin, "verdict", v.String())
}

// sawExpiries tells the expiry tracker about keys that expire.
func (c *Context[T]) sawExpiries(ups []update[T]) {
	if c.expirer != nil {
		c.expiry.saw(earliestExpiry(ups, 0))
	}
}

// earliestExpiry returns the earliest deadline of ups and earliest (0: none).
func earliestExpiry[T any](ups []update[T], earliest int64) int64 {
	for i := range ups {
		if e := ups[i].expires; e != 0 && (earliest == 0 || e < earliest) {
			earliest = e
		}
	}
	return earliest
}

// decodeAll decodes a snapshot's entries into ents, on several cores when
// there are many (decoding is most of the client's work of a large load).
func (c *Context[T]) decodeAll(entries []backend.Entry, ents []snapshotEntry[T]) {
	decode := func(from, to int) {
		var ids commitIDs
		for i := from; i < to; i++ {
			e := entries[i]
			se := &ents[i]
			se.key, se.rev, se.commit, se.expires = e.Key, e.Revision, ids.intern(e.Commit), milliOf(e.Expires)
			if e.Revision == 0 {
				se.err = damaged(e.Key)
				continue
			}
			se.value, se.err = c.decode(e.Key, e.Value)
		}
	}
	const perWorker = 2048
	workers := min(runtime.GOMAXPROCS(0), len(entries)/perWorker)
	if workers < 2 {
		decode(0, len(entries))
		return
	}
	var wg sync.WaitGroup
	chunk := (len(entries) + workers - 1) / workers
	for from := 0; from < len(entries); from += chunk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decode(from, min(from+chunk, len(entries)))
		}()
	}
	wg.Wait()
}

// commitIDs shares the strings of equal commit ids among a snapshot's
// entries: the keys a transaction wrote carry the same id, and a store may
// hand out each entry's id as part of a larger string (Redis: the revision
// field, "<revision> <id>"), which the copy would otherwise keep alive per
// key. The zero value is ready to use.
type commitIDs struct{ seen map[string]string }

// maxInterned bounds the ids a load remembers: a context whose keys were
// written one commit each gains nothing from sharing.
const maxInterned = 4096

// intern returns id, as a string of its own shared with every equal id
// interned before.
func (c *commitIDs) intern(id string) string {
	if id == "" {
		return ""
	}
	if s, ok := c.seen[id]; ok {
		return s
	}
	if c.seen == nil {
		c.seen = make(map[string]string)
	}
	if len(c.seen) >= maxInterned {
		return id
	}
	s := strings.Clone(id)
	c.seen[s] = s
	return s
}

// maintain repairs the copy after failed catch-ups, retrying with backoff
// until one succeeds, and, every ResyncInterval (unless turned off),
// compares the copy with the store, to catch losses no signal reported (an
// event never published because its writer died between commit and
// publish), a store that went back in time or lost its data.
func (c *Context[T]) maintain(ctx context.Context) {
	var tick <-chan time.Time
	if c.opts.ResyncInterval > 0 {
		ticker := time.NewTicker(c.opts.ResyncInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	pause := backoff.New(50*time.Millisecond, 5*time.Second)
	var retry <-chan time.Time
	var behindAt uint64 // store revision seen ahead of the copy last time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			behindAt = c.check(ctx, behindAt)
		case <-c.repair:
			if retry == nil {
				retry = time.After(pause.Next())
			}
		case <-retry:
			retry = nil
			if c.catchUp(ctx, viaLog) == nil {
				pause.Reset()
			} // else catchUp asked again, and the next pause is longer
		}
	}
}

// check runs one comparison; it returns the store revision to look for at
// the next check, if the copy is behind it now.
func (c *Context[T]) check(ctx context.Context, behindAt uint64) uint64 {
	c.cache.mu.Lock()
	epoch, before, commit := c.cache.epoch, c.cache.applied, c.cache.commit
	c.cache.mu.Unlock()
	stale := c.cache.staleErr()
	h, err := c.store.Revision(ctx, c.name)
	if err != nil {
		if ctx.Err() == nil {
			c.cache.setStale(err)
		}
		return 0
	}
	switch {
	case h.Epoch != epoch || h.Revision < before:
		// Data lost or rolled back: only a snapshot tells what is left.
		c.catchUp(ctx, viaSnapshot)
		return 0
	case h.Revision == before && h.Commit != "" && commit != "" && h.Commit != commit:
		// Same revision, another commit: a failover reused the number.
		c.catchUp(ctx, replaceAll)
		return 0
	case stale != nil:
		c.catchUp(ctx, viaLog)
		return 0
	case h.Revision > before:
		c.cache.heard(h.Revision)
		// Events are normally in flight; only if the copy is still behind
		// what the store had a whole interval ago is something lost.
		if behindAt != 0 && before < behindAt {
			c.catchUp(ctx, viaLog)
			return 0
		}
		return h.Revision
	}
	return 0
}
