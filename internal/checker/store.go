package checker

import (
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"time"
)

// storeIndex finds writes in the store's log.
type storeIndex struct {
	// rev[key][id] is the revision at which write id put key.
	rev map[string]map[ID]uint64
	// dels[key] are the revisions that deleted key, ascending.
	dels map[string][]uint64
	// byID[id] is the (first) revision of write id.
	byID map[ID]uint64
	// vals[key][id] is the value write id put at key.
	vals map[string]map[ID]Value
	// commitKeys[id] are the keys write id put, as the log has them.
	commitKeys map[ID][]string
	// at[key][rev] is the value revision rev put at key.
	at map[string]map[uint64]Value
	// states[key] is every revision that put or deleted key, ascending.
	states map[string][]keyState
	// vanishingDeletes are the keys deleted by operations of unknown
	// outcome or written with a TTL (the store may reap them), where such
	// deletes may have taken effect and vanished (UnknownMayVanish): a
	// read that finds such a key absent may have seen a delete the log
	// does not have.
	vanishingDeletes map[string]bool
}

func (c *checkRun) indexLog() *storeIndex {
	x := &storeIndex{
		rev:        map[string]map[ID]uint64{},
		dels:       map[string][]uint64{},
		byID:       map[ID]uint64{},
		vals:       map[string]map[ID]Value{},
		commitKeys: map[ID][]string{},
		at:         map[string]map[uint64]Value{},
		states:     map[string][]keyState{},
	}
	for _, cm := range c.o.Log {
		for _, k := range slices.Sorted(maps.Keys(cm.Puts)) {
			if x.at[k] == nil {
				x.at[k] = map[uint64]Value{}
			}
			x.at[k][cm.Rev] = cm.Puts[k]
			x.states[k] = append(x.states[k], keyState{rev: cm.Rev, read: Read{Value: cm.Puts[k], Present: true}})
		}
		for _, k := range cm.Deletes {
			x.states[k] = append(x.states[k], keyState{rev: cm.Rev})
		}
		for k, v := range cm.Puts {
			if x.rev[k] == nil {
				x.rev[k] = map[ID]uint64{}
			}
			if _, ok := x.rev[k][v.ID()]; !ok {
				x.rev[k][v.ID()] = cm.Rev
				if x.vals[k] == nil {
					x.vals[k] = map[ID]Value{}
				}
				x.vals[k][v.ID()] = v
			}
			if _, ok := x.byID[v.ID()]; !ok {
				x.byID[v.ID()] = cm.Rev
			}
			x.commitKeys[v.ID()] = append(x.commitKeys[v.ID()], k)
		}
		for _, k := range cm.Deletes {
			x.dels[k] = append(x.dels[k], cm.Rev)
		}
	}
	for _, ks := range x.commitKeys {
		slices.Sort(ks)
	}
	x.vanishingDeletes = map[string]bool{}
	if c.o.Loss != NoLoss {
		for _, op := range c.h {
			if op.Outcome == Unknown {
				for _, k := range op.Deletes {
					x.vanishingDeletes[k] = true
				}
			}
			// The store's own delete of an expired key is a commit of
			// unknown outcome too: the old master may reap a key, its
			// instances see it gone, and the reap vanish in a failover.
			for k, v := range op.Puts {
				if v.X > 0 {
					x.vanishingDeletes[k] = true
				}
			}
		}
	}
	for _, d := range x.dels {
		slices.Sort(d)
	}
	return x
}

// version returns the revision whose state of key a read saw: the revision
// that put the value, or for an absent key the first delete at or after
// least (0 if least is 0). known is false for a value the log does not
// have, and for an absent key that a delete the log lost may explain.
func (x *storeIndex) version(key string, r Read, least uint64) (v uint64, known bool) {
	if r.Present {
		v, known = x.rev[key][r.Value.ID()]
		return v, known
	}
	if least == 0 {
		return 0, true
	}
	if x.vanishingDeletes[key] {
		return 0, false
	}
	d := x.dels[key]
	i := sort.Search(len(d), func(i int) bool { return d[i] >= least })
	if i == len(d) {
		return 0, true // absent, yet it may not be older than least: reported
	}
	return d[i], true
}

// keyState is a key's state from one revision of the log on.
type keyState struct {
	rev  uint64
	read Read
}

// stateAt returns key's state after revision rev of the log, and the
// revision that put it (0 if absent).
func (x *storeIndex) stateAt(key string, rev uint64) (Read, uint64) {
	st := x.states[key]
	i := sort.Search(len(st), func(i int) bool { return st[i].rev > rev })
	if i == 0 || !st[i-1].read.Present {
		return Read{}, 0
	}
	return st[i-1].read, st[i-1].rev
}

// value returns the value write id put at key, as the log has it.
func (x *storeIndex) value(key string, id ID) Value { return x.vals[key][id] }

// revOf returns the revision of the log at which write op took effect: by
// the identity of its values, or for an acknowledged write that puts
// nothing, by the revision it returned.
func (c *checkRun) revOf(op Op) (uint64, bool) {
	if c.idx == nil || (op.Kind != Write && op.Kind != Inc) {
		return 0, false
	}
	if id, ok := op.id(); ok {
		r, ok := c.idx.byID[id]
		return r, ok
	}
	if op.Outcome == OK && op.Rev != 0 && op.Rev <= uint64(len(c.o.Log)) {
		return op.Rev, true
	}
	return 0, false
}

// writers maps every write's identity to its operation.
func (c *checkRun) writers() map[ID]int {
	w := map[ID]int{}
	for i, op := range c.h {
		if op.Kind != Write && op.Kind != Inc {
			continue
		}
		if id, ok := op.id(); ok {
			if j, dup := w[id]; dup {
				c.fail("history", "two operations wrote %v: %s and %s", id, c.h[j], op)
				continue
			}
			w[id] = i
		}
	}
	return w
}

// checkStoreHistory checks the log against itself and the history.
func (c *checkRun) checkStoreHistory() {
	const hist = "store history"
	log := c.o.Log
	for i, cm := range log {
		if cm.Rev != uint64(i+1) {
			c.fail(hist, "the log has revision %d at position %d: revisions must run 1, 2, 3, ... without holes", cm.Rev, i+1)
			break
		}
	}
	writers := c.wr
	seen := map[ID]uint64{}
	type landed struct {
		rev uint64
		op  int
	}
	var order []landed
	for _, cm := range log {
		ids := map[ID]map[string]Value{}
		for k, v := range cm.Puts {
			if ids[v.ID()] == nil {
				ids[v.ID()] = map[string]Value{}
			}
			ids[v.ID()][k] = v
		}
		if len(ids) > 1 {
			c.fail(hist, "revision %d holds the values of %d writes: %v", cm.Rev, len(ids), cm.Puts)
		}
		for id, puts := range ids {
			if r, dup := seen[id]; dup {
				c.fail(hist, "write %v took effect twice: at revisions %d and %d", id, r, cm.Rev)
				continue
			}
			seen[id] = cm.Rev
			i, ok := writers[id]
			if !ok {
				c.fail(hist, "revision %d holds %v, which no recorded operation wrote", cm.Rev, puts)
				continue
			}
			op := c.h[i]
			if op.Outcome == Refused {
				c.fail(hist, "revision %d holds the write of a refused operation: %s", cm.Rev, op)
				continue
			}
			if !sameWrite(op, puts) {
				c.fail(hist, "revision %d holds %v, but the operation wrote %v (a transaction must take effect whole)", cm.Rev, puts, op.Puts)
			}
			order = append(order, landed{cm.Rev, i})
		}
	}
	absorbed := c.absorbed
	for id, i := range writers {
		if op := c.h[i]; op.Outcome == OK && !absorbed[i] {
			if _, ok := seen[id]; !ok {
				c.rep.Lost++
				if c.o.Loss != AckedMayVanish {
					c.fail("lost write", "acknowledged, but not in the store's history: %s", op)
				}
			}
		}
	}

	// Revisions in real-time order: a write cannot get a lower revision
	// than one that returned before it was called.
	sort.Slice(order, func(i, j int) bool { return order[i].rev < order[j].rev })
	minEnd, minAt := int64(math.MaxInt64), -1
	for j := len(order) - 1; j >= 0; j-- {
		op := c.h[order[j].op]
		if op.Call > minEnd {
			c.fail(hist, "%s got revision %d, below the revision %d of %s, which returned before it was called",
				op, order[j].rev, order[minAt].rev, c.h[order[minAt].op])
		}
		if e := op.end(); e < minEnd {
			minEnd, minAt = e, j
		}
	}

	c.checkCounter(writers, absorbed)
	c.checkFencing()
}

// combinedIncs finds the acknowledged increments that are in the log
// only as part of a later one's commit: contextd combines concurrent
// Modify calls of one key in one instance into one commit, which writes
// the last call's value, so a commit may add k to the counter, the k-1
// calls before the last returning the values in between. Such a call is
// absorbed by the commit if it is of the same instance as the commit's
// writer, was acknowledged with one of those values, and its own write is
// in no revision; for a value no such call returned, a call of unknown
// outcome of that instance whose write is in no revision stands in (it
// failed with the commit's reply). checkCounter then requires every value in between to be
// accounted for so.
func (c *checkRun) combinedIncs() {
	writers := c.wr
	absorbed := map[int]bool{}
	c.absorbed, c.absorbedAt = absorbed, map[int]absorbedInc{}
	if c.o.CounterKey == "" || c.idx == nil {
		return
	}
	// Acknowledged increments not in the log, by instance and value.
	type slot struct {
		instance int
		n        int64
	}
	loose := map[slot][]int{}
	// Increments of unknown outcome not in the log, by instance: one
	// may be in a combined commit with the others of its attempt, which
	// failed with it (a connection lost on the way back).
	unknown := map[int][]int{}
	for id, i := range writers {
		op := c.h[i]
		if _, in := c.idx.byID[id]; in || op.Kind != Inc {
			continue
		}
		switch op.Outcome {
		case OK:
			s := slot{op.Instance, op.Read.Value.N}
			loose[s] = append(loose[s], i)
		case Unknown:
			unknown[op.Instance] = append(unknown[op.Instance], i)
		}
	}
	for _, ops := range unknown {
		slices.Sort(ops) // deterministic: in the order of the history
	}
	for cm, n := range c.counterWrites() {
		v := cm.Puts[c.o.CounterKey]
		if i, ok := writers[v.ID()]; ok && v.N > n+1 {
			inst := c.h[i].Instance
			for m := n + 1; m < v.N; m++ {
				s := slot{inst, m}
				if ops := loose[s]; len(ops) > 0 {
					absorbed[ops[0]] = true
					loose[s] = ops[1:]
				} else if ops := unknown[inst]; len(ops) > 0 {
					absorbed[ops[0]] = true
					unknown[inst] = ops[1:]
					c.absorbedAt[ops[0]] = absorbedInc{n: m, rev: cm.Rev}
				}
			}
		}
	}
}

// counterWrites yields the log's commits that put the counter key, each
// with the counter before it (a delete of the key sets it back to 0).
func (c *checkRun) counterWrites() iter.Seq2[Commit, int64] {
	return func(yield func(Commit, int64) bool) {
		var n int64
		for _, cm := range c.o.Log {
			v, ok := cm.Puts[c.o.CounterKey]
			if !ok {
				if slices.Contains(cm.Deletes, c.o.CounterKey) {
					n = 0
				}
				continue
			}
			if !yield(cm, n) {
				return
			}
			n = v.N
		}
	}
}

// absorbedInc is an increment of unknown outcome taken to be in the
// combined commit at rev, where it set the counter to n.
type absorbedInc struct {
	n   int64
	rev uint64
}

// sameWrite reports whether puts are exactly what op wrote (for an
// increment: the same key and write, whatever count).
func sameWrite(op Op, puts map[string]Value) bool {
	if len(puts) != len(op.Puts) {
		return false
	}
	for k, v := range puts {
		w, ok := op.Puts[k]
		if !ok || w.ID() != v.ID() {
			return false
		}
		if op.Kind == Write && w != v {
			return false
		}
	}
	return true
}

// checkCounter checks that each increment in the log adds one — or k,
// when k-1 acknowledged increments of the same instance were combined
// into it (combinedIncs) — and that acknowledged increments returned what
// they wrote.
func (c *checkRun) checkCounter(writers map[ID]int, absorbed map[int]bool) {
	if c.o.CounterKey == "" {
		return
	}
	for cm, n := range c.counterWrites() {
		v := cm.Puts[c.o.CounterKey]
		if v.N != n+1 && !c.combined(writers, absorbed, v, n) {
			c.fail("store history", "revision %d sets the counter to %d after %d: an increment was lost or doubled", cm.Rev, v.N, n)
		}
		if i, ok := writers[v.ID()]; ok {
			if op := c.h[i]; op.Kind == Inc && op.Outcome == OK && op.Read.Value.N != v.N {
				c.fail("store history", "%s returned %d, but wrote %d at revision %d", op, op.Read.Value.N, v.N, cm.Rev)
			}
		}
	}
}

// checkFencing checks the writes made under locks: per key, fencing tokens
// never go down, and no other write falls between two writes of one lock
// holder (the holder held the lock throughout).
func (c *checkRun) checkFencing() {
	type state struct {
		max     uint64 // highest token written
		last    uint64 // token of the last write (0: unfenced or delete)
		lastRev uint64
	}
	per := map[string]*state{}
	get := func(k string) *state {
		if per[k] == nil {
			per[k] = &state{}
		}
		return per[k]
	}
	for _, cm := range c.o.Log {
		for _, k := range slices.Sorted(maps.Keys(cm.Puts)) {
			v, s := cm.Puts[k], get(k)
			if v.F > 0 {
				switch {
				case v.F < s.max:
					c.fail("fencing", "revision %d writes %s under lock token %d after token %d wrote it", cm.Rev, k, v.F, s.max)
				case v.F == s.max && s.last != v.F:
					c.fail("fencing", "revision %d writes %s under lock token %d, but revision %d wrote it in between without that lock", cm.Rev, k, v.F, s.lastRev)
				}
				s.max = max(s.max, v.F)
			}
			s.last, s.lastRev = v.F, cm.Rev
		}
		for _, k := range cm.Deletes {
			s := get(k)
			s.last, s.lastRev = 0, cm.Rev
		}
	}
}

// checkReadsCommitted checks that every value read was written by an
// operation that was not refused and, unless the store may lose it, is in
// the store's history.
func (c *checkRun) checkReadsCommitted() {
	writers := c.wr
	reported := map[ID]bool{}
	check := func(op Op, key string, v Value) {
		id := v.ID()
		if reported[id] {
			return
		}
		i, ok := writers[id]
		switch {
		case !ok:
			reported[id] = true
			c.fail("phantom read", "%s saw %s = %v, which no recorded operation wrote", op, key, v)
			return
		case c.h[i].Outcome == Refused:
			reported[id] = true
			c.fail("phantom read", "%s saw %s = %v, written by a refused operation: %s", op, key, v, c.h[i])
			return
		}
		if _, ok := c.idx.rev[key][id]; ok {
			return
		}
		switch c.o.Loss {
		case AckedMayVanish:
			return
		case UnknownMayVanish:
			if c.h[i].Outcome == Unknown {
				return
			}
		}
		reported[id] = true
		c.fail("phantom read", "%s saw %s = %v, which the store's history does not hold (written by %s)", op, key, v, c.h[i])
	}
	for _, op := range c.h {
		if op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case StrongRead, CachedRead:
			if op.Read.Present {
				check(op, op.Key, op.Read.Value)
			}
		case Snapshot:
			for _, k := range slices.Sorted(maps.Keys(op.Snap)) {
				check(op, k, op.Snap[k])
			}
		}
	}
}

// replay returns the state the log leads to.
func (c *checkRun) replay() map[string]Value {
	m := map[string]Value{}
	for _, cm := range c.o.Log {
		maps.Copy(m, cm.Puts)
		for _, k := range cm.Deletes {
			delete(m, k)
		}
	}
	return m
}

// checkRevisions checks what the log says against the revisions
// operations saw: an acknowledged write that returned its revision (Create,
// Txn.Commit) is exactly that revision of the log; a conditional write
// took effect only where each of its conditions held just before its
// revision; an entry read (GetEntry) shows the revision the log put its
// value at.
func (c *checkRun) checkRevisions() {
	for _, op := range c.h {
		switch op.Kind {
		case Write:
			if op.Outcome == OK && op.Rev != 0 {
				c.checkReturnedRevision(op)
			}
			if len(op.Conds) == 0 || op.Outcome == Refused {
				continue
			}
			rev, ok := c.revOf(op)
			if !ok {
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(op.Conds)) {
				want := op.Conds[k]
				if _, have := c.idx.stateAt(k, rev-1); have != want {
					c.fail("conditional write", "%s took effect at revision %d, but %s was at revision %d then, not %d", op, rev, k, have, want)
				}
			}
		case StrongRead, CachedRead:
			if !op.Entry || op.Outcome != OK {
				continue
			}
			if !op.Read.Present {
				if op.Rev != 0 {
					c.fail("entry revision", "%s: an absent key with revision %d", op, op.Rev)
				}
				continue
			}
			if r, ok := c.idx.rev[op.Key][op.Read.Value.ID()]; ok && r != op.Rev {
				c.fail("entry revision", "%s: the log put %v at revision %d", op, op.Read.Value, r)
			}
		}
	}
}

// checkReturnedRevision checks that revision op.Rev of the log is op's
// write, exactly.
func (c *checkRun) checkReturnedRevision(op Op) {
	if op.Rev > uint64(len(c.o.Log)) {
		if c.o.Loss != AckedMayVanish {
			c.fail("store history", "%s returned revision %d, which the log (%d revisions) does not have", op, op.Rev, len(c.o.Log))
		}
		return
	}
	cm := c.o.Log[op.Rev-1]
	same := len(cm.Puts) == len(op.Puts) && sameWrite(op, cm.Puts)
	same = same && slices.Equal(slices.Sorted(slices.Values(cm.Deletes)), slices.Sorted(slices.Values(op.Deletes)))
	if !same && c.o.Loss != AckedMayVanish {
		c.fail("store history", "%s returned revision %d, but the log has puts %v and deletes %v there", op, op.Rev, cm.Puts, cm.Deletes)
	}
}

// checkExpiries checks the store's deletes of expired keys: each deletes
// only keys whose last write carried a TTL (a rewrite without one keeps
// the key), and, where the store's clock runs with real time and
// revisions never go back, none comes before the call of that write plus
// its TTL.
func (c *checkRun) checkExpiries() {
	landedBy := c.landedBefore()
	for _, cm := range c.o.Log {
		if !cm.Expiry {
			continue
		}
		if len(cm.Puts) > 0 {
			c.fail("expiry", "revision %d, an expiry, puts %v", cm.Rev, cm.Puts)
		}
		for _, k := range cm.Deletes {
			cur, at := c.idx.stateAt(k, cm.Rev-1)
			switch {
			case !cur.Present:
				c.fail("expiry", "revision %d expires %s, which was absent", cm.Rev, k)
			case cur.Value.X <= 0:
				c.fail("expiry", "revision %d expires %s, whose last write (%v at revision %d) had no TTL", cm.Rev, k, cur.Value, at)
			case c.o.Loss == AckedMayVanish:
				// The revision can go back: when a revision number was
				// first seen says nothing of this history's commit at it
				// (a lost one of the old master may have been seen first).
			default:
				if due, seen := c.expiryDue(k, cm.Rev), landedBy(cm.Rev); seen < due {
					c.fail("expiry", "revision %d expires %s = %v, written with a TTL of %dms, and was seen at %v, before %v",
						cm.Rev, k, cur.Value, cur.Value.X, time.Duration(seen), time.Duration(due))
				}
			}
		}
	}
}

// combined reports whether a commit that sets the counter to v after n
// carries, besides its writer's increment, one absorbed increment of the
// writer's instance for each value in between.
func (c *checkRun) combined(writers map[ID]int, absorbed map[int]bool, v Value, n int64) bool {
	i, ok := writers[v.ID()]
	if !ok || v.N <= n+1 {
		return false
	}
	inst := c.h[i].Instance
	have := map[int64]bool{}
	for j := range absorbed {
		m := c.h[j].Read.Value.N
		if at, ok := c.absorbedAt[j]; ok {
			m = at.n // of unknown outcome: the value it stands for
		}
		if c.h[j].Instance == inst && m > n && m < v.N {
			have[m] = true
		}
	}
	return int64(len(have)) == v.N-n-1
}
