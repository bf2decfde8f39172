package checker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Hand-made histories: good ones must pass, and each kind of bad one must
// be reported by the check meant to catch it.

func val(w int, s uint64) Value { return Value{W: w, S: s} }

func put(inst int, call, ret int64, o Outcome, kv ...any) Op {
	op := Op{Instance: inst, Kind: Write, Call: call, Return: ret, Outcome: o, Puts: map[string]Value{}}
	for i := 0; i < len(kv); i += 2 {
		op.Puts[kv[i].(string)] = kv[i+1].(Value)
	}
	if o != OK {
		op.Err = errors.New("injected")
	}
	return op
}

func del(inst int, call, ret int64, keys ...string) Op {
	return Op{Instance: inst, Kind: Write, Call: call, Return: ret, Deletes: keys}
}

func read(kind Kind, inst int, call, ret int64, key string, v *Value) Op {
	op := Op{Instance: inst, Kind: kind, Call: call, Return: ret, Key: key}
	if v != nil {
		op.Read = Read{Value: *v, Present: true}
	}
	return op
}

func snap(inst int, call, ret int64, m map[string]Value) Op {
	return Op{Instance: inst, Kind: Snapshot, Call: call, Return: ret, Snap: m}
}

func inc(inst int, call, ret int64, o Outcome, id Value, n int64) Op {
	op := Op{Instance: inst, Kind: Inc, Call: call, Return: ret, Outcome: o, Key: "n", Puts: map[string]Value{"n": id}}
	if o == OK {
		op.Read = Read{Value: Value{W: id.W, S: id.S, N: n}, Present: true}
	}
	return op
}

func commit(rev uint64, kv ...any) Commit {
	c := Commit{Rev: rev, Puts: map[string]Value{}}
	for i := 0; i < len(kv); i += 2 {
		c.Puts[kv[i].(string)] = kv[i+1].(Value)
	}
	return c
}

func ptr(v Value) *Value { return &v }

// wantOnly checks that rep has violations of exactly the given checks
// (each at least once), or none if checks is empty.
func wantOnly(t *testing.T, rep Report, checks ...string) {
	t.Helper()
	got := map[string]bool{}
	for _, v := range rep.Violations {
		got[v.Check] = true
	}
	for _, c := range checks {
		if !got[c] {
			t.Errorf("no %q violation reported; report:\n%v", c, rep)
		}
		delete(got, c)
	}
	for c := range got {
		t.Errorf("unexpected %q violation; report:\n%v", c, rep)
	}
}

var (
	a1 = val(1, 1)
	b2 = val(2, 1)
	c3 = val(3, 1)
	c4 = val(4, 1)
)

func TestGoodHistoryPasses(t *testing.T) {
	t1 := Value{W: 4, S: 1, T: 2}
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		read(StrongRead, 1, 5, 15, "k", ptr(a1)),
		put(1, 20, 30, OK, "k", b2),
		read(CachedRead, 1, 31, 32, "k", ptr(b2)),
		read(CachedRead, 0, 25, 26, "k", ptr(a1)), // concurrent with the write: either is fine
		read(CachedRead, 0, 33, 34, "k", ptr(b2)),
		put(0, 40, 50, OK, "k", t1, "j", t1),
		snap(0, 51, 52, map[string]Value{"k": t1, "j": t1}),
		snap(1, 41, 42, map[string]Value{"k": b2}), // before the transaction
		del(1, 60, 70, "j"),
		read(StrongRead, 0, 71, 72, "j", nil),
		read(CachedRead, 1, 71, 72, "j", nil),
		inc(0, 80, 90, OK, val(1, 5), 1),
		inc(1, 85, 95, OK, val(2, 5), 2),
		read(StrongRead, 0, 96, 97, "n", ptr(Value{W: 2, S: 5, N: 2})),
	}
	log := []Commit{
		commit(1, "k", a1), commit(2, "k", b2), commit(3, "k", t1, "j", t1),
		{Rev: 4, Deletes: []string{"j"}},
		commit(5, "n", Value{W: 1, S: 5, N: 1}), commit(6, "n", Value{W: 2, S: 5, N: 2}),
	}
	final := map[string]Value{"k": t1, "n": {W: 2, S: 5, N: 2}}
	rep := Check(h, Options{CounterKey: "n", Log: log, Final: final})
	wantOnly(t, rep)
	if rep.Porcupine != porcupine.Ok {
		t.Errorf("porcupine = %q", rep.Porcupine)
	}
	if !strings.Contains(rep.Summary(), "6 revisions") {
		t.Errorf("summary %q", rep.Summary())
	}
}

// A strong read that returns an overwritten value.
func TestStaleReadReported(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(1, 20, 30, OK, "k", b2),
		read(StrongRead, 2, 40, 50, "k", ptr(a1)),
	}
	rep := Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "k", b2)}})
	wantOnly(t, rep, "linearizability")
	if rep.Porcupine != porcupine.Illegal {
		t.Errorf("porcupine = %q, want Illegal", rep.Porcupine)
	}
}

// An acknowledged write the store does not have: the log misses it, and a
// final strong read shows the value before it.
func TestLostWriteReported(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(1, 20, 30, OK, "k", b2),
		read(StrongRead, 2, 40, 50, "k", ptr(a1)),
	}
	rep := Check(h, Options{Log: []Commit{commit(1, "k", a1)}, Final: map[string]Value{"k": a1}})
	wantOnly(t, rep, "lost write", "linearizability")

	// Where acknowledged writes may vanish, that is no violation.
	rep = Check(h, Options{Log: []Commit{commit(1, "k", a1)}, Final: map[string]Value{"k": a1}, Loss: AckedMayVanish})
	wantOnly(t, rep)
}

// An instance's cached reads of a key going back to an older revision.
func TestNonMonotonicReadReported(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(0, 20, 30, OK, "k", b2),
		read(CachedRead, 1, 40, 41, "k", ptr(b2)),
		read(CachedRead, 1, 50, 51, "k", ptr(a1)),
		// On another instance the same order is fine the other way round.
		read(CachedRead, 2, 40, 41, "k", ptr(a1)),
		read(CachedRead, 2, 50, 51, "k", ptr(b2)),
	}
	rep := Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "k", b2)}})
	wantOnly(t, rep, "monotonic reads")
	if msg := rep.Violations[0].Msg; !strings.Contains(msg, "instance 1") {
		t.Errorf("violation names the wrong read: %s", msg)
	}
	// Snapshots count as reads of every key, absent ones included.
	h = []Op{
		put(0, 0, 10, OK, "k", a1),
		snap(1, 20, 21, map[string]Value{"k": a1}),
		snap(1, 30, 31, map[string]Value{}),
	}
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1)}}), "monotonic reads")
}

// An instance that does not read its own acknowledged write.
func TestReadYourWritesReported(t *testing.T) {
	h := []Op{
		put(1, 0, 10, OK, "k", a1),
		put(0, 20, 30, OK, "k", b2),
		read(CachedRead, 0, 40, 41, "k", ptr(a1)),
		read(CachedRead, 1, 40, 41, "k", ptr(a1)), // instance 1 need not have b2 yet
	}
	rep := Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "k", b2)}})
	wantOnly(t, rep, "read-your-writes")
	if msg := rep.Violations[0].Msg; !strings.Contains(msg, "instance 0 cached read") {
		t.Errorf("violation names the wrong read: %s", msg)
	}
	// A read concurrent with the write may show the old value.
	h[2].Call = 29
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "k", b2)}}))
}

// A snapshot showing half of a transaction.
func TestHalfTransactionReported(t *testing.T) {
	txn := Value{W: 3, S: 1, T: 2}
	h := []Op{
		put(0, 0, 10, OK, "a", a1, "b", a1),
		put(1, 20, 30, OK, "a", txn, "b", txn),
		snap(2, 40, 41, map[string]Value{"a": txn, "b": a1}),
	}
	log := []Commit{commit(1, "a", a1, "b", a1), commit(2, "a", txn, "b", txn)}
	wantOnly(t, Check(h, Options{Log: log}), "atomicity")

	// A later write of the other key is fine.
	h = append(h[:2], put(0, 35, 36, OK, "b", c4), snap(2, 40, 41, map[string]Value{"a": txn, "b": c4}))
	log = append(log, commit(3, "b", c4))
	wantOnly(t, Check(h, Options{Log: log}))

	// A transaction that took effect in part is a store history violation.
	h = []Op{put(1, 20, 30, OK, "a", txn, "b", txn)}
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "a", txn)}}), "store history")
}

// Increments that lose or double an update.
func TestCounterViolationsReported(t *testing.T) {
	h := []Op{
		inc(0, 0, 10, OK, val(1, 1), 1),
		inc(1, 20, 30, OK, val(2, 1), 1), // after the first returned: must be 2
	}
	log := []Commit{commit(1, "n", Value{W: 1, S: 1, N: 1}), commit(2, "n", Value{W: 2, S: 1, N: 1})}
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}), "linearizability", "store history")

	// An increment of unknown outcome may count, or not.
	h = []Op{
		inc(0, 0, 10, Unknown, val(1, 1), 0),
		inc(1, 20, 30, OK, val(2, 1), 1),
		read(StrongRead, 2, 40, 50, "n", ptr(Value{W: 2, S: 1, N: 1})),
	}
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: []Commit{commit(1, "n", Value{W: 2, S: 1, N: 1})}}))
	h[1].Read.Value.N = 2
	h[2].Read.Value.N = 2
	log = []Commit{commit(1, "n", Value{W: 1, S: 1, N: 1}), commit(2, "n", Value{W: 2, S: 1, N: 2})}
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}))
	// But an acknowledged one must.
	h[0].Outcome = OK
	h[0].Read = Read{Value: Value{W: 1, S: 1, N: 1}, Present: true}
	h[1].Read.Value.N = 1
	h[2].Read.Value.N = 1
	wantOnly(t, Check(h, Options{CounterKey: "n"}), "linearizability")
}

// A write of unknown outcome may take effect after its call returned: here
// after a write that was called later.
func TestUnknownWriteMayTakeEffectLate(t *testing.T) {
	h := []Op{
		put(0, 0, 5, Unknown, "k", a1),
		put(1, 10, 20, OK, "k", b2),
		read(StrongRead, 2, 30, 40, "k", ptr(a1)),
		read(CachedRead, 2, 41, 42, "k", ptr(a1)),
	}
	log := []Commit{commit(1, "k", b2), commit(2, "k", a1)}
	wantOnly(t, Check(h, Options{Log: log, Final: map[string]Value{"k": a1}}))
	// Or never.
	h[2].Read.Value, h[3].Read.Value = b2, b2
	wantOnly(t, Check(h, Options{Log: log[:1], Final: map[string]Value{"k": b2}}))
	// But not be seen and then vanish from the store...
	h[2].Read.Value = a1
	h = append(h, read(StrongRead, 1, 50, 60, "k", ptr(b2)))
	wantOnly(t, Check(h, Options{Log: log[:1], Final: map[string]Value{"k": b2}}), "phantom read", "linearizability")
	// ...unless the store may lose such writes; then its readers are excused.
	h = append(h[:2], read(CachedRead, 2, 30, 31, "k", ptr(a1)))
	wantOnly(t, Check(h, Options{Log: log[:1], Loss: UnknownMayVanish}))
}

// A refused write must leave no trace.
func TestRefusedWriteMustNotShow(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(1, 20, 30, Refused, "k", b2),
		read(CachedRead, 2, 40, 41, "k", ptr(b2)),
	}
	log := []Commit{commit(1, "k", a1), commit(2, "k", b2)}
	wantOnly(t, Check(h, Options{Log: log}), "store history", "phantom read")
	// The linearizability check leaves refused writes out.
	h[2].Kind = StrongRead
	wantOnly(t, Check(h, Options{}), "linearizability")
}

// Revisions that contradict real time, and holes in the log.
func TestStoreHistoryOrderReported(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(1, 20, 30, OK, "j", b2),
	}
	// Against the log's order the first write cannot have returned when it
	// did, which the linearizability check reports too.
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "j", b2), commit(2, "k", a1)}}), "store history", "linearizability")
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(3, "j", b2)}}), "store history")
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1), commit(2, "j", b2), commit(3, "j", b2)}}), "store history")
}

// The log's order narrows where a write can have taken effect: a read that
// saw a write before the store can have committed it is reported, though
// each key alone would be linearizable (the write to j waits, as for a
// lock, from 0 to 100; the store commits k, called at 50, before it).
func TestReadBeforeLogOrderReported(t *testing.T) {
	h := []Op{
		put(0, 0, 100, OK, "j", b2),
		put(1, 50, 60, OK, "k", a1),
		read(StrongRead, 2, 5, 20, "j", ptr(b2)),
	}
	log := []Commit{commit(1, "k", a1), commit(2, "j", b2)}
	wantOnly(t, Check(h, Options{Log: log}), "linearizability")
	// Without the log, nothing says the write to j came late.
	wantOnly(t, Check(h, Options{}))
	// Read after the store can have committed it: fine.
	h[2] = read(StrongRead, 2, 55, 70, "j", ptr(b2))
	wantOnly(t, Check(h, Options{Log: log}))
}

// Writes under locks must land in fencing-token order, and no one else's
// write may fall between two writes of one holder.
func TestFencingReported(t *testing.T) {
	f := func(w int, s uint64, tok uint64) Value { return Value{W: w, S: s, F: tok} }
	h := []Op{
		put(0, 0, 10, OK, "L", f(1, 1, 5)),
		put(1, 20, 30, OK, "L", f(2, 1, 7)),
		put(0, 40, 50, OK, "L", f(1, 2, 5)),
	}
	log := []Commit{commit(1, "L", f(1, 1, 5)), commit(2, "L", f(2, 1, 7)), commit(3, "L", f(1, 2, 5))}
	wantOnly(t, Check(h, Options{Log: log}), "fencing")

	h[1] = put(1, 20, 30, OK, "L", val(2, 1))
	log[1] = commit(2, "L", val(2, 1))
	wantOnly(t, Check(h, Options{Log: log}), "fencing")

	h[2] = put(0, 40, 50, OK, "L", f(1, 2, 8))
	log[2] = commit(3, "L", f(1, 2, 8))
	wantOnly(t, Check(h, Options{Log: log}))
}

func TestFinalStateAndNotes(t *testing.T) {
	h := []Op{put(0, 0, 10, OK, "k", a1)}
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", a1)}, Final: map[string]Value{}}), "final state")

	r := NewRecorder()
	call := r.Now()
	r.Add(put(0, call, r.Now(), OK, "k", a1))
	r.Fail("lock", "write under a lost lock went through")
	rep := r.Check(Options{Log: []Commit{commit(1, "k", a1)}})
	wantOnly(t, rep, "lock")
	if got := r.History(); len(got) != 1 || got[0].Return < got[0].Call {
		t.Errorf("History() = %v", got)
	}
}

func TestDiff(t *testing.T) {
	if d := Diff(map[string]Value{"a": a1}, map[string]Value{"a": a1}); d != "" {
		t.Errorf("equal maps differ: %s", d)
	}
	d := Diff(map[string]Value{"a": a1, "b": b2}, map[string]Value{"a": b2, "c": c3})
	for _, want := range []string{"a: w2.1, want w1.1", "b: missing", "c: w3.1, want absent"} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff = %q, want it to say %q", d, want)
		}
	}
}

// Porcupine must decide a history of the size the scenarios make, with
// many concurrent writes of unknown outcome, well within its timeout.
func TestLargeHistoryDecided(t *testing.T) {
	var h []Op
	var log []Commit
	rev := uint64(0)
	now := int64(0)
	for i := range 3000 {
		w, s := i%16, uint64(i/16+1)
		v := val(w, s)
		o := OK
		if i%25 == 0 {
			o = Unknown
		}
		h = append(h, put(w, now, now+30, o, "k", v))
		if o == OK || i%50 == 0 {
			rev++
			log = append(log, commit(rev, "k", v))
			h = append(h, read(StrongRead, (w+1)%16, now+31, now+40, "k", ptr(v)))
		}
		now += 41
	}
	start := time.Now()
	rep := Check(h, Options{Log: log, Timeout: 30 * time.Second})
	wantOnly(t, rep)
	t.Logf("%d operations checked in %v", len(h), time.Since(start))
}

// Hundreds of increments of unknown outcome that the store does not hold
// (cut off by a failover, with UnknownMayVanish), each open until the end
// of the history, are decided: they may have had no effect, and the
// history is linearizable that way. (A soak history of this kind, with
// more concurrency than this one, ran porcupine out of time when it had to
// branch on each.)
func TestManyVanishedUnknownsDecided(t *testing.T) {
	var h []Op
	var log []Commit
	n := int64(0)
	now := int64(0)
	for i := range 2000 {
		w, s := i%16, uint64(i/16+1)
		id := val(w, s)
		if i%5 == 0 {
			h = append(h, inc(w, now, now+30, Unknown, id, 0))
		} else {
			n++
			h = append(h, inc(w, now, now+30, OK, id, n))
			log = append(log, commit(uint64(len(log)+1), "n", Value{W: w, S: s, N: n}))
			h = append(h, read(StrongRead, (w+1)%16, now+31, now+40, "n", ptr(Value{W: w, S: s, N: n})))
		}
		now += 41
	}
	start := time.Now()
	rep := Check(h, Options{CounterKey: "n", Log: log, Loss: UnknownMayVanish, Timeout: 20 * time.Second})
	wantOnly(t, rep)
	if rep.Porcupine != porcupine.Ok {
		t.Errorf("porcupine: %q", rep.Porcupine)
	}
	t.Logf("%d operations, 400 of unknown outcome, checked in %v", len(h), time.Since(start))

	// One that a read shows did take effect is still allowed: the search
	// then branches on it.
	h = []Op{
		inc(0, 0, 10, Unknown, val(1, 1), 0),
		read(StrongRead, 1, 20, 30, "n", ptr(Value{W: 1, S: 1, N: 1})),
	}
	wantOnly(t, Check(h, Options{CounterKey: "n", Loss: UnknownMayVanish}))
}

// Where writes of unknown outcome may vanish, a key found absent may have
// been deleted by one that did: its revision is unknown.
func TestVanishedDeleteExcused(t *testing.T) {
	h := []Op{
		put(0, 0, 10, OK, "k", a1),
		put(0, 20, 30, OK, "j", b2),
		{Instance: 1, Kind: Write, Call: 40, Return: 50, Outcome: Unknown, Deletes: []string{"k"}, Err: errors.New("not replicated")},
		{Instance: 0, Kind: Write, Call: 60, Return: 70, Deletes: []string{"k"}},
		read(CachedRead, 2, 35, 36, "k", ptr(a1)),
		read(CachedRead, 2, 80, 81, "k", nil), // the lost delete, or the one at revision 3
		put(0, 90, 100, OK, "k", c3),
		read(CachedRead, 2, 110, 111, "k", ptr(a1)), // back to the store's history (before rev 3)
	}
	log := []Commit{commit(1, "k", a1), commit(2, "j", b2), {Rev: 3, Deletes: []string{"k"}}, commit(4, "k", c3)}
	wantOnly(t, Check(h, Options{Log: log, Loss: UnknownMayVanish}))
	h[2].Outcome = OK
	h[2].Err = nil
	wantOnly(t, Check(h, Options{Log: log, Loss: UnknownMayVanish}), "monotonic reads")
}

// With the store's log, a write of unknown outcome that the log has took
// effect in the log's order: before an acknowledged write with a later
// revision returned.
func TestUnknownWriteResolvedByLog(t *testing.T) {
	h := []Op{
		put(0, 0, 5, Unknown, "k", a1),
		put(1, 10, 20, OK, "k", b2),
		read(StrongRead, 2, 30, 40, "k", ptr(a1)),
	}
	// a1 after b2: the late read of a1 is fine.
	wantOnly(t, Check(h, Options{Log: []Commit{commit(1, "k", b2), commit(2, "k", a1)}}))
	// a1 before c3, which returned before b2 was called: it is not.
	h = append(h, put(3, 6, 8, OK, "j", c3))
	log := []Commit{commit(1, "k", a1), commit(2, "j", c3), commit(3, "k", b2)}
	wantOnly(t, Check(h, Options{Log: log}), "linearizability")
	// Without the log, a1 may have taken effect any time.
	wantOnly(t, Check(h, Options{}))
}

// Where writes of unknown outcome may vanish, so may the store's delete of
// an expired key (the old master reaps it, an instance sees it gone, the
// new master never did): a key written with a TTL found absent is excused,
// one written without a TTL is not.
func TestVanishedReapExcused(t *testing.T) {
	withTTL := Value{W: 1, S: 1, X: 50}
	h := []Op{
		put(0, 0, 10, OK, "k", withTTL),
		put(0, 20, 30, OK, "j", b2),
		read(CachedRead, 2, 35, 36, "k", ptr(withTTL)),
		read(CachedRead, 2, 80, 81, "k", nil), // a reap that vanished
		read(CachedRead, 2, 110, 111, "k", ptr(withTTL)),
	}
	log := []Commit{commit(1, "k", withTTL), commit(2, "j", b2)}
	wantOnly(t, Check(h, Options{Log: log, Loss: UnknownMayVanish}))

	noTTL := val(1, 1)
	h[0].Puts["k"], h[2].Read.Value, h[4].Read.Value = noTTL, noTTL, noTTL
	log[0] = commit(1, "k", noTTL)
	wantOnly(t, Check(h, Options{Log: log, Loss: UnknownMayVanish}), "monotonic reads")
}

// TestCombinedIncrements: contextd commits concurrent increments of one
// instance together, writing the last one's value; the commit adds their
// number, and the ones before the last are in no revision. That passes
// only when every value in between was returned by an acknowledged
// increment of the writer's instance, or stands for one of unknown
// outcome of that instance.
func TestCombinedIncrements(t *testing.T) {
	h := []Op{
		inc(0, 0, 30, OK, val(1, 1), 1),
		inc(0, 5, 30, OK, val(1, 2), 2),
		inc(0, 6, 30, OK, val(1, 3), 3),
		read(StrongRead, 1, 40, 50, "n", ptr(Value{W: 1, S: 3, N: 3})),
	}
	log := []Commit{commit(1, "n", Value{W: 1, S: 3, N: 3})}
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}))
	// One in between from another instance: not combined with it.
	h[1].Instance = 1
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}), "store history", "lost write")
	// An increment of unknown outcome of that instance (the commit's
	// reply was lost to all of its calls) stands for a value in between.
	h[1].Instance = 0
	h[1].Outcome, h[1].Read = Unknown, Read{}
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}))
	// A value in between that no increment accounts for: one was lost,
	// or doubled.
	h = append(h[:1], h[2:]...)
	wantOnly(t, Check(h, Options{CounterKey: "n", Log: log}), "store history", "linearizability")
}
