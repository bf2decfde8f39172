package checker

import (
	"fmt"
	"maps"
	"slices"
)

// checkWatches checks what each Watch with FromRevision(r) delivered,
// against the store's log (only where the store loses nothing, so the log
// is the one history every instance follows):
//
//   - the replay, up to the UpToDate marker: exactly the log's changes of
//     the revisions after r up to the marker's revision, in revision order,
//     each once, with the log's values — no gap, no duplicate, so a
//     watcher that resumes from the last revision it saw whole misses
//     nothing and sees nothing twice. A watch stopped before the marker
//     must have delivered a prefix of that;
//   - a Reset instead of the replay (the log could not serve it): the
//     Initial changes up to the marker are the log's state at the marker's
//     revision, each key with the revision that put it — except keys the
//     instance itself wrote (or deleted) after it: the copy keeps its own
//     acknowledged commits above the revision it has applied, for
//     read-your-writes, and its state shows them;
//   - live changes (after the marker, and between Resets): revisions never
//     go down and no key comes twice at one revision; a put shows the value
//     the log put at that key and revision, a delete a key the log has
//     absent at that revision (a delete found in a snapshot carries the
//     snapshot's revision).
func (c *checkRun) checkWatches() {
	for _, op := range c.h {
		if op.Kind == Watch && op.Outcome != Refused {
			c.checkWatch(op)
		}
	}
}

// replayState walks a watch's replay through the log.
type replayState struct {
	rev  uint64              // revision being delivered
	left map[string]Read     // its changes not delivered yet
	seen map[string]struct{} // its changes delivered
}

func (c *checkRun) logChanges(rev uint64) map[string]Read {
	m := map[string]Read{}
	if rev == 0 || rev > uint64(len(c.o.Log)) {
		return m
	}
	cm := c.o.Log[rev-1]
	for k, v := range cm.Puts {
		m[k] = Read{Value: v, Present: true}
	}
	for _, k := range cm.Deletes {
		m[k] = Read{}
	}
	return m
}

func (c *checkRun) checkWatch(op Op) {
	const check = "watch"
	bad := func(i int, format string, args ...any) {
		c.fail(check, "%s, change %d (%v): %s", op, i, op.Changes[i], fmt.Sprintf(format, args...))
	}
	chs := op.Changes
	i := 0
	// The backfill.
	switch {
	case len(chs) > 0 && chs[0].Reset:
		// The log could not replay: the state at the marker.
		i = 1
		got := map[string]Change{}
		for ; i < len(chs) && chs[i].Initial; i++ {
			if _, dup := got[chs[i].Key]; dup {
				bad(i, "a key twice in the initial state")
			}
			got[chs[i].Key] = chs[i]
		}
		if i < len(chs) && chs[i].UpToDate {
			u := chs[i].Rev
			for _, k := range c.keys {
				want, at := c.idx.stateAt(k, u)
				g, ok := got[k]
				switch {
				case ok && g.Rev > u && c.ownPut(op.Instance, k, g.Value, g.Rev):
					// The copy keeps its own acknowledged commits above the
					// revision it has applied (read-your-writes), and its
					// state shows them.
				case !ok && want.Present && c.deletedAfter(k, u):
					// Likewise an own delete (which carries no identity).
				case !want.Present && ok:
					bad(i, "the initial state has %s = %v, absent at revision %d", k, g.Value, u)
				case want.Present && !ok:
					bad(i, "the initial state lacks %s = %v of revision %d", k, want.Value, at)
				case want.Present && (g.Value != want.Value || g.Rev != at):
					bad(i, "the initial state has %s = %v@%d, the log %v@%d", k, g.Value, g.Rev, want.Value, at)
				}
			}
			i++
		}
	default:
		st := replayState{rev: op.Rev, left: map[string]Read{}, seen: map[string]struct{}{}}
		for ; i < len(chs); i++ {
			ch := chs[i]
			if ch.Reset || ch.Initial {
				bad(i, "a %s in the replay", map[bool]string{true: "reset", false: "initial change"}[ch.Reset])
				i = len(chs)
				break
			}
			if ch.UpToDate {
				if len(st.left) > 0 || c.hasChangesIn(st.rev, ch.Rev) {
					bad(i, "the replay is up to date at revision %d but ends at revision %d without %v: a gap", ch.Rev, st.rev, slices.Sorted(maps.Keys(st.left)))
				}
				if st.rev > max(ch.Rev, op.Rev) { // (st.rev starts at op.Rev)
					bad(i, "the replay delivered revision %d before the marker of revision %d", st.rev, ch.Rev)
				}
				i++
				break
			}
			switch {
			case ch.Rev <= op.Rev:
				bad(i, "revision %d is not after the watch's FromRevision %d: a duplicate", ch.Rev, op.Rev)
				continue
			case ch.Rev < st.rev:
				bad(i, "revision %d after revision %d: out of order", ch.Rev, st.rev)
				continue
			case ch.Rev > st.rev:
				if len(st.left) > 0 {
					bad(i, "revision %d before the rest of revision %d (%v): a gap", ch.Rev, st.rev, slices.Sorted(maps.Keys(st.left)))
				}
				if c.hasChangesIn(st.rev, ch.Rev-1) {
					bad(i, "revision %d after revision %d, but the log has changes in between: a gap", ch.Rev, st.rev)
				}
				st.rev, st.left, st.seen = ch.Rev, c.logChanges(ch.Rev), map[string]struct{}{}
			}
			if _, dup := st.seen[ch.Key]; dup {
				bad(i, "%s twice at revision %d: a duplicate", ch.Key, ch.Rev)
				continue
			}
			want, ok := st.left[ch.Key]
			switch {
			case !ok:
				bad(i, "revision %d of the log does not change %s", ch.Rev, ch.Key)
			case want.Present == ch.Deleted || want.Present && want.Value != ch.Value:
				bad(i, "revision %d of the log has %s = %v", ch.Rev, ch.Key, want)
			}
			delete(st.left, ch.Key)
			st.seen[ch.Key] = struct{}{}
		}
	}
	// Live changes, in segments between Resets; the first follows what the
	// backfill covered.
	var last, floor uint64
	if i > 0 && chs[i-1].UpToDate {
		floor = chs[i-1].Rev
	}
	seen := map[string]uint64{}
	for ; i < len(chs); i++ {
		ch := chs[i]
		switch {
		case ch.Reset:
			last, floor, seen = 0, 0, map[string]uint64{}
			continue
		case ch.Rev <= floor && !ch.Deleted:
			bad(i, "revision %d, which the backfill up to revision %d covered: a duplicate", ch.Rev, floor)
		case ch.UpToDate || ch.Initial:
			bad(i, "a marker among live changes")
			continue
		case ch.Rev < last:
			bad(i, "revision %d after revision %d: out of order", ch.Rev, last)
		}
		if r, dup := seen[ch.Key]; dup && r == ch.Rev {
			bad(i, "%s twice at revision %d: a duplicate", ch.Key, ch.Rev)
		}
		last, seen[ch.Key] = max(last, ch.Rev), ch.Rev
		if ch.Deleted {
			if cur, _ := c.idx.stateAt(ch.Key, ch.Rev); cur.Present {
				bad(i, "a delete of %s, which the log has = %v at revision %d", ch.Key, cur.Value, ch.Rev)
			}
			continue
		}
		if v, ok := c.idx.at[ch.Key][ch.Rev]; !ok || v != ch.Value {
			bad(i, "revision %d of the log does not put %s = %v", ch.Rev, ch.Key, ch.Value)
		}
	}
}

// ownPut reports whether the log put v at key at revision rev, written by
// an operation of instance inst.
func (c *checkRun) ownPut(inst int, key string, v Value, rev uint64) bool {
	w, ok := c.idx.at[key][rev]
	if !ok || w != v {
		return false
	}
	i, ok := c.wr[v.ID()]
	return ok && c.h[i].Instance == inst
}

// deletedAfter reports whether the log deletes key after revision rev.
func (c *checkRun) deletedAfter(key string, rev uint64) bool {
	d := c.idx.dels[key]
	return len(d) > 0 && d[len(d)-1] > rev
}

// hasChangesIn reports whether the log has a revision in (from, to].
func (c *checkRun) hasChangesIn(from, to uint64) bool {
	return to > from && from < uint64(len(c.o.Log))
}
