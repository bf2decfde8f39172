package checker

import (
	"testing"
)

// Hand-made histories of conditional writes, transactions with revisions,
// entry reads, watches and expiries: each good one passes, and each bad
// one is reported by the check meant for it (and by no other, where the
// others cannot see it), so each test fails if its check is removed.

// cond makes op conditional on key being at rev, for each key, rev pair.
func cond(op Op, kv ...any) Op {
	op.Conds = map[string]uint64{}
	for i := 0; i < len(kv); i += 2 {
		op.Conds[kv[i].(string)] = uint64(kv[i+1].(int))
	}
	return op
}

// conflict marks a refused op as refused with ErrConflict.
func conflict(op Op) Op {
	op.Conflict = true
	return op
}

// withRev sets the revision a write returned.
func withRev(op Op, rev uint64) Op {
	op.Rev = rev
	return op
}

func entry(kind Kind, inst int, call, ret int64, key string, v *Value, rev uint64) Op {
	op := read(kind, inst, call, ret, key, v)
	op.Entry, op.Rev = true, rev
	return op
}

func TestConditionalWrites(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		entry(CachedRead, 1, 11, 12, "k", ptr(a1), 1),
		cond(put(1, 20, 30, OK, "k", b2), "k", 1),
		conflict(cond(put(2, 40, 50, Refused, "k", c3), "k", 1)), // k is at 2 now
		withRev(cond(put(0, 60, 70, OK, "j", c4), "j", 0), 3),    // Create
		conflict(cond(put(1, 80, 90, Refused, "j", val(5, 1)), "j", 0)),
		// Of unknown outcome, with a condition that cannot hold: it must
		// not have happened, and the log does not have it.
		cond(put(2, 100, 110, Unknown, "k", val(6, 1)), "k", 1),
		read(StrongRead, 0, 120, 130, "k", ptr(b2)),
	}
	log := []Commit{commit(1, "k", a1), commit(2, "k", b2), commit(3, "j", c4)}
	wantOnly(t, Check(h, Options{Log: log, Final: map[string]Value{"k": b2, "j": c4}}))

	// One of unknown outcome whose condition held may have happened.
	h = []Op{
		put(0, 0, 10, OK, "k", a1),
		cond(put(1, 20, 30, Unknown, "k", b2), "k", 1),
		read(StrongRead, 2, 40, 50, "k", ptr(b2)),
	}
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "k", b2)}}))
	h[2].Read.Value = a1
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1)}}))
	// But not where its condition failed.
	h = []Op{
		put(0, 0, 10, OK, "k", a1),
		put(0, 20, 30, OK, "k", b2),
		cond(put(1, 40, 50, Unknown, "k", c3), "k", 1),
	}
	log = []Commit{commit(1, "k", a1), commit(2, "k", b2), commit(3, "k", c3)}
	wantOnly(t, Check(h, Options{Log: log}), "conditional write", "linearizability")
	// The log check alone, where linearizability is not checked.
	wantOnly(t, Check(h, Options{Log: log, Loss: AckedMayVanish}), "conditional write")
}

// A conflict is an observation: the condition failed at some point of the
// call. One refused while the key certainly was at the revision asked for
// is a linearizability violation.
func TestConflictWhileConditionHeldReported(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		conflict(cond(put(1, 20, 30, Refused, "k", b2), "k", 1)),
	}
	log := []Commit{commit(1, "k", a1)}
	wantOnly(t, Check(h, Options{Log: log}), "linearizability")
	// Concurrent with a write that moved k on, it is fine.
	h = append(h, put(2, 15, 25, OK, "k", c3))
	wantOnly(t, Check(h, Options{Log: append(log, commit(2, "k", c3))}))
	// With several conditions, the key the error names is the one checked.
	h = []Op{
		put(0, 0, 10, OK, "k", a1, "j", a1),
		conflict(cond(put(1, 20, 30, Refused, "x", b2), "k", 1, "j", 1)),
	}
	h[1].ConflictKey = "j"
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1, "j", a1)}}), "linearizability")
}

// Transactions with puts, deletes and conditions, which return their
// revision.
func TestTxnRevisions(t *testing.T) {
	tv := Value{W: 7, S: 1, T: 2}
	good := func() []Op {
		return []Op{
			put(0, 0, 10, OK, "c", a1),
			withRev(cond(Op{Instance: 1, Kind: Write, Call: 20, Return: 30, Puts: map[string]Value{"a": tv, "b": tv}, Deletes: []string{"c"}}, "c", 1, "d", 0), 2),
			read(CachedRead, 1, 31, 32, "c", nil),
			snap(1, 33, 34, map[string]Value{"a": tv, "b": tv}),
			withRev(del(0, 40, 50, "a"), 3),
			read(CachedRead, 0, 51, 52, "a", nil),
		}
	}
	log := []Commit{
		commit(1, "c", a1),
		{Rev: 2, Puts: map[string]Value{"a": tv, "b": tv}, Deletes: []string{"c"}},
		{Rev: 3, Deletes: []string{"a"}},
	}
	wantOnly(t, Check(good(), Options{Log: log, Final: map[string]Value{"b": tv}}))

	// A revision the log does not have, or has other contents at.
	h := good()
	h[4].Rev = 4
	wantOnly(t, Check(h, Options{Log: log}), "store history")
	h = good()
	h[1].Rev = 3
	h[4].Rev = 0
	wantOnly(t, Check(h, Options{Log: log}), "store history")

	// The instance's own delete, whose revision is known, bounds its reads.
	h = good()
	h[5].Read = Read{Value: tv, Present: true}
	wantOnly(t, Check(h, Options{Log: log}), "read-your-writes")

	// A condition on a key the transaction does not write.
	h = []Op{
		put(0, 0, 10, OK, "d", c3),
		withRev(cond(put(1, 20, 30, OK, "a", b2), "d", 0), 2),
	}
	log = []Commit{commit(1, "d", c3), commit(2, "a", b2)}
	wantOnly(t, Check(h, Options{Log: log}), "conditional write", "linearizability")
	wantOnly(t, Check(h, Options{Log: log, Loss: AckedMayVanish}), "conditional write")
}

// GetEntry's revision is the one the log put its value at.
func TestEntryRevisions(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(0, 20, 30, OK, "k", b2),
		entry(CachedRead, 1, 11, 12, "k", ptr(a1), 1),
		entry(StrongRead, 1, 31, 32, "k", ptr(b2), 2),
		entry(CachedRead, 1, 33, 34, "j", nil, 0),
	}
	log := []Commit{commit(1, "k", a1), commit(2, "k", b2)}
	wantOnly(t, Check(h, Options{Log: log}))
	h[2].Rev = 2
	wantOnly(t, Check(h, Options{Log: log}), "entry revision")
	h[2].Rev = 1
	h[4].Rev = 5
	wantOnly(t, Check(h, Options{Log: log}), "entry revision")
}

// Watches from a revision: the replay has every change after it exactly
// once, in order; live changes go on in order.
func TestWatchResume(t *testing.T) {
	tv := Value{W: 7, S: 1, T: 2}
	h := []Op{
		put(0, 0, 10, OK, "a", a1),
		put(0, 20, 30, OK, "a", tv, "b", tv),
		withRev(del(0, 40, 50, "a"), 3),
		put(0, 60, 70, OK, "b", c3),
	}
	log := []Commit{
		commit(1, "a", a1), commit(2, "a", tv, "b", tv),
		{Rev: 3, Deletes: []string{"a"}}, commit(4, "b", c3),
	}
	ch := func(k string, v Value, rev uint64) Change { return Change{Key: k, Value: v, Rev: rev} }
	dl := func(k string, rev uint64) Change { return Change{Key: k, Deleted: true, Rev: rev} }
	upTo := func(rev uint64) Change { return Change{UpToDate: true, Rev: rev} }
	watch := func(from uint64, chs ...Change) Op {
		return Op{Instance: 1, Kind: Watch, Call: 0, Return: 100, Rev: from, Changes: chs}
	}
	check := func(w Op, checks ...string) {
		t.Helper()
		wantOnly(t, Check(append(h[:4:4], w), Options{Log: log}), checks...)
	}
	// Good: a replay then live changes; a resume; a replay stopped early;
	// a log that could not replay (the state instead); a live reset.
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), dl("a", 3), upTo(3), ch("b", c3, 4)))
	check(watch(2, dl("a", 3), upTo(3), ch("b", c3, 4)))
	check(watch(0, ch("a", a1, 1), ch("b", tv, 2)))
	check(watch(3, upTo(2), ch("b", c3, 4)))
	check(watch(1, Change{Reset: true}, Change{Key: "b", Value: tv, Rev: 2, Initial: true}, upTo(3), ch("b", c3, 4)))
	// The instance's own write above the marker (instance 0 wrote c3).
	w := watch(1, Change{Reset: true}, Change{Key: "b", Value: c3, Rev: 4, Initial: true}, upTo(3))
	w.Instance = 0
	check(w)
	check(watch(3, upTo(3), Change{Reset: true}, ch("b", c3, 4)))

	// Bad: a change of a revision missing; a whole revision missing; a
	// duplicate; a resume that delivers its FromRevision again; live
	// changes out of order; a wrong value; a marker before the replay is
	// whole; a live put the log does not have; a wrong initial state.
	check(watch(1, ch("b", tv, 2), dl("a", 3), upTo(3)), "watch")
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), upTo(4)), "watch")
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), ch("b", tv, 2)), "watch")
	check(watch(2, ch("b", tv, 2), dl("a", 3), upTo(3)), "watch")
	check(watch(2, dl("a", 3), upTo(3), ch("b", c3, 4), dl("a", 3)), "watch")
	check(watch(3, upTo(3), ch("b", c3, 4), ch("b", c3, 4)), "watch")
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), upTo(2), ch("b", tv, 2)), "watch")
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), ch("b", c3, 4), upTo(4)), "watch")
	check(watch(1, ch("a", a1, 2)), "watch")
	check(watch(1, ch("a", tv, 2), upTo(2)), "watch")
	check(watch(3, upTo(3), ch("b", tv, 4)), "watch")
	check(watch(1, Change{Reset: true}, Change{Key: "a", Value: tv, Rev: 2, Initial: true}, upTo(3)), "watch")
	check(watch(1, Change{Reset: true}, Change{Key: "b", Value: c3, Rev: 4, Initial: true}, upTo(3)), "watch") // not instance 1's
	check(watch(1, ch("a", tv, 2), ch("b", tv, 2), dl("a", 3), dl("b", 3)), "watch")
}

// Expiries: deletes made by the store, of keys whose last write had a TTL,
// not before it ran out.
func TestExpiries(t *testing.T) {
	const ms = int64(1e6)
	ttl := Value{W: 1, S: 1, X: 10}
	h := []Op{
		put(0, 0, 1*ms, OK, "k", ttl),
		read(StrongRead, 1, 9*ms, 10*ms, "k", nil), // (within the slack)
		read(CachedRead, 0, 11*ms, 12*ms, "k", nil),
	}
	log := []Commit{commit(1, "k", ttl), {Rev: 2, Deletes: []string{"k"}, Expiry: true}}
	wantOnly(t, Check(h, Options{Log: log, Final: map[string]Value{}, ExpiryRealTime: true}))

	// Seen absent before the TTL ran out (only the linearizability check
	// can tell: an absent key names no revision).
	h[1].Call, h[1].Return = 2*ms, 3*ms
	wantOnly(t, Check(h, Options{Log: log, ExpiryRealTime: true}), "linearizability")
	// (With a test's fake clock, that is fine.)
	wantOnly(t, Check(h, Options{Log: log}))
	// A later revision seen before the TTL ran out.
	h = []Op{
		put(0, 0, 1*ms, OK, "k", ttl),
		put(1, 1*ms, 2*ms, OK, "j", b2),
		read(StrongRead, 2, 2*ms, 3*ms, "j", ptr(b2)),
	}
	log = []Commit{commit(1, "k", ttl), {Rev: 2, Deletes: []string{"k"}, Expiry: true}, commit(3, "j", b2)}
	wantOnly(t, Check(h, Options{Log: log, ExpiryRealTime: true}), "expiry")
	wantOnly(t, Check(h, Options{Log: log}))

	// A rewrite without TTL keeps the key.
	h = []Op{
		put(0, 0, 1*ms, OK, "k", ttl),
		put(0, 2*ms, 3*ms, OK, "k", b2),
		read(StrongRead, 1, 10*ms, 11*ms, "k", nil),
	}
	log = []Commit{commit(1, "k", ttl), commit(2, "k", b2), {Rev: 3, Deletes: []string{"k"}, Expiry: true}}
	wantOnly(t, Check(h, Options{Log: log}), "expiry")
	// An expiry of an absent key.
	log = []Commit{commit(1, "k", ttl), {Rev: 2, Deletes: []string{"j"}, Expiry: true}}
	wantOnly(t, Check(h[:1], Options{Log: log}), "expiry")
}
