package checker

import (
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput is one operation on one key's register: a write (a put, or a
// delete when put is absent), possibly conditional on the register
// holding cond; a condition alone (a transaction's condition on a key it
// does not write, or a condition refused with ErrConflict); or a read.
type regInput struct {
	write   bool
	put     Read
	unknown bool
	// hasCond: the operation requires the register to hold cond; with
	// conflict, it saw the register not hold it.
	hasCond  bool
	cond     Read
	conflict bool
}

// registerModel is a register per key: strong reads return the last value
// written. A write of unknown outcome may or may not take effect; a
// conditional one only where its condition holds, and one refused with a
// conflict only where it does not.
var registerModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{Read{}} },
	Step: func(state, input, output any) []any {
		st, in := state.(Read), input.(regInput)
		switch {
		case in.conflict:
			if st != in.cond {
				return []any{st}
			}
			return nil
		case in.hasCond && st != in.cond:
			if in.unknown {
				return []any{st} // it cannot have taken effect
			}
			return nil
		case in.hasCond && !in.write:
			return []any{st}
		case in.write && in.unknown:
			return []any{st, in.put}
		case in.write:
			return []any{in.put}
		case output.(Read) == st:
			return []any{st}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(Read) == b.(Read) },
	Hash: func(state any) uint64 {
		return maphash.Comparable(hashSeed, state.(Read))
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		s := ""
		switch {
		case in.conflict:
			return fmt.Sprintf("if(%v) -> conflict", in.cond)
		case in.hasCond:
			s = fmt.Sprintf("if(%v) ", in.cond)
		}
		if in.write {
			s += fmt.Sprintf("put(%v)", in.put)
			if in.unknown {
				s += "?"
			}
			return s
		}
		if in.hasCond {
			return s + "ok"
		}
		return fmt.Sprintf("read() -> %v", output)
	},
}

var hashSeed = maphash.MakeSeed()

// ctrInput is one operation on the counter.
type ctrInput struct {
	inc     bool
	unknown bool
}

// counterModel is a counter from 0: an increment returns the new value, a
// read the current one. An increment of unknown outcome may or may not
// count.
var counterModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		st, in := state.(int64), input.(ctrInput)
		switch {
		case in.inc && in.unknown:
			return []any{st, st + 1}
		case in.inc && output.(int64) == st+1:
			return []any{st + 1}
		case !in.inc && output.(int64) == st:
			return []any{st}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(int64) == b.(int64) },
	Hash:  func(state any) uint64 { return uint64(state.(int64)) },
	DescribeOperation: func(input, output any) string {
		in := input.(ctrInput)
		switch {
		case in.inc && in.unknown:
			return "inc()?"
		case in.inc:
			return fmt.Sprintf("inc() -> %v", output)
		}
		return fmt.Sprintf("read() -> %v", output)
	},
}

// linearOps turns the history into porcupine operations per key: writes
// and increments that may have taken effect, and strong reads. A
// transaction becomes one write per key, with the same times.
//
// Given the store's log, writes of unknown outcome are resolved where that
// is sound, which spares porcupine a search that grows with each of them:
// one the log does not have never took effect (unless the store may lose
// such writes); one it has took effect, before any acknowledged operation
// that wrote or read its revision or a later one returned. A log that lies
// about either shows as reads no linearization explains, or in the store
// history checks.
//
// The log also narrows each logged write to where it can have taken
// effect, since the store commits in revision order: not before the call
// of any write of a lower or equal revision, and not after the return of
// any operation that saw its revision or a later one. This keeps
// porcupine's search small when writes wait long (for a lock, say) and so
// overlap many others; it checks linearizability in the store's own commit
// order, which is what the store promises. An interval that comes out
// empty contradicts the log and is a violation.
//
// Operations whose outcome stays unknown are returned apart, in optional.
func (c *checkRun) linearOps() (per, optional map[string][]porcupine.Operation) {
	per, optional = map[string][]porcupine.Operation{}, map[string][]porcupine.Operation{}
	add := func(key string, op Op, in, out any) {
		to := per
		if op.Outcome == Unknown {
			to = optional
		}
		to[key] = append(to[key], porcupine.Operation{
			ClientId: op.Instance, Input: in, Output: out, Call: op.Call, Return: op.end(), Metadata: op.String(),
		})
	}
	landedBy := c.landedBefore()
	calledBy := c.calledBefore()
	for i, op := range c.h {
		if op.Outcome == Refused {
			if key, cond, ok := c.conflictOn(op); ok {
				add(key, op, regInput{hasCond: true, cond: cond, conflict: true}, nil)
			}
			continue
		}
		unknown := op.Outcome == Unknown
		if _, ok := op.id(); (ok || op.Rev != 0) && c.idx != nil {
			rev, landed := c.revOf(op)
			if at, ok := c.absorbedAt[i]; ok {
				// In a combined commit, under another call's value.
				rev, landed = at.rev, true
				if unknown {
					unknown = false
					op.Outcome, op.Return = OK, max(landedBy(rev), op.Call)
					id, _ := op.id()
					op.Read = Read{Value: Value{W: id.W, S: id.S, N: at.n}, Present: true}
				}
			}
			switch {
			case landed:
				if unknown {
					unknown = false
					// (A return before the call is a store history
					// violation, reported there.)
					op.Outcome, op.Return = OK, max(landedBy(rev), op.Call)
					if id, _ := op.id(); op.Kind == Inc {
						op.Read = Read{Value: c.idx.value(op.Key, id), Present: true}
					}
				}
				from, to := max(op.Call, calledBy(rev)), min(op.Return, landedBy(rev))
				if from > to {
					c.fail("linearizability", "%s took effect at revision %d, which the log puts after a write called at %d, but an operation that saw revision %d or later returned at %d",
						op, rev, from, rev, to)
				} else {
					op.Call, op.Return = from, to
				}
			case unknown && c.o.Loss == NoLoss:
				continue
			}
		}
		switch op.Kind {
		case Write:
			conds := c.condReads(op)
			with := func(k string, in regInput) regInput {
				if cond, ok := conds[k]; ok {
					in.hasCond, in.cond = true, cond
				}
				return in
			}
			for k, v := range op.Puts {
				add(k, op, with(k, regInput{write: true, put: Read{Value: v, Present: true}, unknown: unknown}), nil)
			}
			for _, k := range op.Deletes {
				add(k, op, with(k, regInput{write: true, unknown: unknown}), nil)
			}
			for k, cond := range conds {
				_, put := op.Puts[k]
				if !put && !slices.Contains(op.Deletes, k) && !unknown {
					add(k, op, regInput{hasCond: true, cond: cond}, nil)
				}
			}
		case Inc:
			var out any
			if !unknown {
				out = op.Read.Value.N
			}
			add(op.Key, op, ctrInput{inc: true, unknown: unknown}, out)
		case StrongRead:
			if unknown {
				continue // a read that failed saw nothing
			}
			if op.Key == c.o.CounterKey {
				add(op.Key, op, ctrInput{}, op.Read.Value.N)
			} else {
				add(op.Key, op, regInput{}, op.Read)
			}
		}
	}
	// The store's expiries are deletes by no one, within the interval
	// the log allows.
	for _, cm := range c.o.Log {
		if !cm.Expiry {
			continue
		}
		for _, k := range cm.Deletes {
			from, to := max(calledBy(cm.Rev), c.expiryDue(k, cm.Rev)), landedBy(cm.Rev)
			if from > to {
				continue // reported as an early expiry
			}
			per[k] = append(per[k], porcupine.Operation{
				ClientId: -1, Input: regInput{write: true}, Call: from, Return: to,
				Metadata: fmt.Sprintf("expiry of %s at revision %d", k, cm.Rev),
			})
		}
	}
	return per, optional
}

// expiryDue returns the earliest time the expiry of key at revision rev
// can take effect by the TTL of the write it expires, where the store's
// clock runs with real time (else MinInt64).
func (c *checkRun) expiryDue(key string, rev uint64) int64 {
	if !c.o.ExpiryRealTime {
		return math.MinInt64
	}
	cur, _ := c.idx.stateAt(key, rev-1)
	i, ok := c.wr[cur.Value.ID()]
	if !cur.Present || cur.Value.X <= 0 || !ok {
		return math.MinInt64
	}
	return c.h[i].Call + cur.Value.X*int64(time.Millisecond) - int64(ttlSlack)
}

// ttlSlack is how much earlier than its TTL allows an expiry may be seen:
// stores count expiry times in whole milliseconds of a wall clock, the
// recorder in nanoseconds of a monotonic one.
const ttlSlack = 2 * time.Millisecond

// condReads returns what a write's conditions require of each key's
// register: the value the log put at the required revision, absent for 0,
// or a value no one wrote if the log has no put of the key at that
// revision (the key can never have been there). Without the log, or on
// the counter, there are none.
func (c *checkRun) condReads(op Op) map[string]Read {
	if c.idx == nil || len(op.Conds) == 0 {
		return nil
	}
	m := make(map[string]Read, len(op.Conds))
	for k, rev := range op.Conds {
		switch v, ok := c.idx.at[k][rev]; {
		case k == c.o.CounterKey:
		case rev == 0:
			m[k] = Read{}
		case ok:
			m[k] = Read{Value: v, Present: true}
		default:
			m[k] = Read{Value: Value{W: -1, S: rev}, Present: true}
		}
	}
	return m
}

// conflictOn returns the key whose condition a write refused with
// ErrConflict saw fail, and what the condition required, if known.
func (c *checkRun) conflictOn(op Op) (string, Read, bool) {
	if op.Kind != Write || !op.Conflict {
		return "", Read{}, false
	}
	key := op.ConflictKey
	if key == "" && len(op.Conds) == 1 {
		for k := range op.Conds {
			key = k
		}
	}
	cond, ok := c.condReads(op)[key]
	return key, cond, ok
}

// landedBefore returns, for a revision of the log, the earliest time by
// which it had certainly taken effect: the earliest return of an
// acknowledged operation that wrote or read that revision or a later one.
func (c *checkRun) landedBefore() func(rev uint64) int64 {
	if c.idx == nil {
		return func(uint64) int64 { return math.MaxInt64 }
	}
	evidence := make([]int64, len(c.o.Log)+2)
	for i := range evidence {
		evidence[i] = math.MaxInt64
	}
	saw := func(key string, v Value, at int64) {
		if r, ok := c.idx.rev[key][v.ID()]; ok && r < uint64(len(evidence)) {
			evidence[r] = min(evidence[r], at)
		}
	}
	for _, op := range c.h {
		if op.Outcome != OK {
			continue
		}
		switch op.Kind {
		case Write, Inc:
			for k, v := range op.Puts {
				saw(k, v, op.Return)
			}
			if op.Rev != 0 && op.Rev < uint64(len(evidence)) {
				evidence[op.Rev] = min(evidence[op.Rev], op.Return)
			}
		case StrongRead, CachedRead:
			if op.Read.Present {
				saw(op.Key, op.Read.Value, op.Return)
			}
		case Snapshot:
			for k, v := range op.Snap {
				saw(k, v, op.Return)
			}
		}
	}
	for r := len(evidence) - 2; r >= 0; r-- {
		evidence[r] = min(evidence[r], evidence[r+1])
	}
	return func(rev uint64) int64 {
		if rev >= uint64(len(evidence)) {
			return math.MaxInt64
		}
		return evidence[rev]
	}
}

// calledBefore returns, for a revision of the log, the latest call of a
// write or increment the log holds at that revision or below: the
// revision cannot have taken effect before it.
func (c *checkRun) calledBefore() func(rev uint64) int64 {
	if c.idx == nil {
		return func(uint64) int64 { return math.MinInt64 }
	}
	floor := make([]int64, len(c.o.Log)+1)
	for i := range floor {
		floor[i] = math.MinInt64
	}
	for _, op := range c.h {
		if op.Outcome == Refused {
			continue
		}
		if rev, ok := c.revOf(op); ok && rev < uint64(len(floor)) {
			floor[rev] = max(floor[rev], op.Call)
		}
	}
	for r := 1; r < len(floor); r++ {
		floor[r] = max(floor[r], floor[r-1])
	}
	return func(rev uint64) int64 {
		if rev >= uint64(len(floor)) {
			return floor[len(floor)-1]
		}
		return floor[rev]
	}
}

// checkLinearizable runs porcupine on each key's operations.
//
// Operations of unknown outcome make porcupine branch, and as each is open
// until the end of the history, a few hundred of them (writes cut off by a
// failover) make the search explode. So each key is first checked as if
// they had no effect, which is one of the outcomes they allow: if that
// history is linearizable, so is the one where they may have taken effect.
// Only if it is not does porcupine search with them.
func (c *checkRun) checkLinearizable() {
	per, optional := c.linearOps()
	c.rep.Porcupine = porcupine.Ok
	keys := slices.Sorted(maps.Keys(per))
	for k := range optional {
		if _, ok := per[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, key := range keys {
		ops := per[key]
		model := registerModel.ToModel()
		if key == c.o.CounterKey {
			model = counterModel.ToModel()
		}
		res, info := porcupine.CheckOperationsVerbose(model, ops, c.o.Timeout)
		withOptional := false
		if res != porcupine.Ok && len(optional[key]) > 0 {
			ops = append(ops, optional[key]...)
			res, info = porcupine.CheckOperationsVerbose(model, ops, c.o.Timeout)
			withOptional = true
		}
		switch res {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			if withOptional && c.o.Loss == UnknownMayVanish {
				c.rep.Inconclusive = append(c.rep.Inconclusive, key)
				continue
			}
			if c.rep.Porcupine == porcupine.Ok {
				c.rep.Porcupine = porcupine.Unknown
			}
			c.fail("linearizability", "key %q: porcupine could not decide within %v (%d operations)", key, c.o.Timeout, len(ops))
		default:
			c.rep.Porcupine = porcupine.Illegal
			c.fail("linearizability", "key %q: no linearization of its %d operations; %s", key, len(ops), stuckAt(ops, info))
		}
	}
}

// stuckAt describes where the longest partial linearization ends: the
// operations it could not place next, earliest call first.
func stuckAt(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := info.PartialLinearizationsOperations()
	if len(parts) == 0 {
		return "no partial linearization"
	}
	var longest []porcupine.Operation
	for _, p := range parts[0] {
		if len(p) > len(longest) {
			longest = p
		}
	}
	in := map[string]bool{}
	for _, op := range longest {
		in[op.Metadata.(string)] = true
	}
	var out []porcupine.Operation
	for _, op := range ops {
		if !in[op.Metadata.(string)] {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	var b strings.Builder
	fmt.Fprintf(&b, "the longest linearizable prefix has %d operations", len(longest))
	if n := len(longest); n > 0 {
		fmt.Fprintf(&b, ", ending with %s", longest[n-1].Metadata)
	}
	b.WriteString("; not placeable next:")
	for i, op := range out {
		if i == 3 {
			fmt.Fprintf(&b, " ... (%d more)", len(out)-i)
			break
		}
		fmt.Fprintf(&b, "\n      %s", op.Metadata)
	}
	return b.String()
}
