package checker

import (
	"fmt"
	"maps"
	"slices"
	"sort"
)

// bound is the least revision a read of a key must show on an instance,
// and why.
type bound struct {
	rev uint64
	own bool // set by the instance's own write (else by an earlier read)
	by  int  // the operation that set it
}

// checkSessions checks read-your-writes and monotonic reads of the local
// copies: on each instance, a read of a key shows the revision of the
// instance's last acknowledged write of it that returned before the read
// was called, or a later one, and never a revision older than what a read
// that returned before it was called showed. Revisions come from the
// store's log; values it does not have are left out (reported as phantom
// reads where that is wrong). An acknowledged delete sets a bound only
// where it returned its revision (Txn.Commit): otherwise which revision
// was its own is not known.
func (c *checkRun) checkSessions() {
	per := map[int][]int{}
	for i, op := range c.h {
		if op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case Write, Inc, CachedRead, Snapshot:
			per[op.Instance] = append(per[op.Instance], i)
		}
	}
	for _, inst := range slices.Sorted(maps.Keys(per)) {
		c.checkSession(per[inst])
	}
}

type sessionEvent struct {
	t    int64
	call bool
	op   int
}

func (c *checkRun) checkSession(ops []int) {
	var evs []sessionEvent
	for _, i := range ops {
		op := c.h[i]
		if op.Kind == CachedRead || op.Kind == Snapshot {
			evs = append(evs, sessionEvent{op.Call, true, i})
		}
		evs = append(evs, sessionEvent{op.Return, false, i})
	}
	// Operations whose intervals touch are concurrent: calls first.
	sort.SliceStable(evs, func(a, b int) bool {
		if evs[a].t != evs[b].t {
			return evs[a].t < evs[b].t
		}
		return evs[a].call && !evs[b].call
	})
	floor := map[string]bound{}
	need := map[int]map[string]bound{}
	for _, ev := range evs {
		op := c.h[ev.op]
		if ev.call {
			need[ev.op] = maps.Clone(floor)
			continue
		}
		switch op.Kind {
		case Write, Inc:
			for k, v := range op.Puts {
				if r, ok := c.idx.rev[k][v.ID()]; ok && r > floor[k].rev {
					floor[k] = bound{rev: r, own: true, by: ev.op}
				}
			}
			if r, ok := c.revOf(op); ok && op.Rev != 0 {
				for _, k := range op.Deletes {
					if r > floor[k].rev {
						floor[k] = bound{rev: r, own: true, by: ev.op}
					}
				}
			}
		case CachedRead:
			c.observe(ev.op, op.Key, op.Read, need[ev.op], floor)
			delete(need, ev.op)
		case Snapshot:
			for _, k := range c.keys {
				v, ok := op.Snap[k]
				c.observe(ev.op, k, Read{Value: v, Present: ok}, need[ev.op], floor)
			}
			delete(need, ev.op)
		}
	}
}

// observe checks what read i saw of key against the bound at its call, and
// raises the instance's bound.
func (c *checkRun) observe(i int, key string, r Read, need map[string]bound, floor map[string]bound) {
	b := need[key]
	v, known := c.idx.version(key, r, b.rev)
	if !known {
		return
	}
	if v < b.rev {
		check, why := "monotonic reads", "an earlier read"
		if b.own {
			check, why = "read-your-writes", "its own acknowledged write"
		}
		seen := fmt.Sprintf("%v (revision %d)", r, v)
		if !r.Present {
			seen = "absent (no delete at or after that revision)"
		}
		c.fail(check, "%s: key %s shows %s, older than revision %d of %s: %s",
			c.h[i], key, seen, b.rev, why, c.h[b.by])
		return
	}
	if v > floor[key].rev {
		floor[key] = bound{rev: v, by: i}
	}
}

// checkAtomicity checks that no snapshot shows part of a transaction: if a
// snapshot shows one key of a transaction, each other key it wrote shows
// that transaction's value or a later revision's.
func (c *checkRun) checkAtomicity() {
	txnKeys := map[ID][]string{}
	for _, op := range c.h {
		if op.Kind == Write && len(op.Puts) > 1 {
			if id, ok := op.id(); ok {
				txnKeys[id] = slices.Sorted(maps.Keys(op.Puts))
			}
		}
	}
	for _, op := range c.h {
		if op.Kind != Snapshot || op.Outcome != OK {
			continue
		}
		done := map[ID]bool{}
		for _, k := range slices.Sorted(maps.Keys(op.Snap)) {
			v := op.Snap[k]
			id := v.ID()
			if v.T == 0 || done[id] {
				continue
			}
			done[id] = true
			revT, ok := c.idx.byID[id]
			if !ok {
				continue // vanished with a lost history: nothing to compare with
			}
			for _, k2 := range txnKeys[id] {
				if k2 == k {
					continue
				}
				w, present := op.Snap[k2]
				if present && w.ID() == id {
					continue
				}
				r, known := c.idx.version(k2, Read{Value: w, Present: present}, revT+1)
				if !known || r > revT {
					continue
				}
				seen := fmt.Sprintf("%v (revision %d)", w, r)
				if !present {
					seen = "absent"
				}
				c.fail("atomicity", "%s shows %s = %v of the transaction at revision %d, but %s = %s: half a transaction",
					op, k, v, revT, k2, seen)
			}
		}
	}
}
