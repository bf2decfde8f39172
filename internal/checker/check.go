package checker

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Loss says what the store may have lost, which decides the checks that
// apply.
type Loss int

// The loss modes.
const (
	// NoLoss: the store keeps every write that took effect. Every check
	// applies.
	NoLoss Loss = iota
	// UnknownMayVanish: a write of unknown outcome may take effect, be
	// seen by instances, and vanish later (a failover in the
	// WAIT-for-replicas mode loses what the old master applied but no
	// replica acknowledged). Acknowledged writes must survive; reads of
	// values that vanished are not held against the instances.
	UnknownMayVanish
	// AckedMayVanish: acknowledged writes may vanish and the revision may
	// go back (a failover with asynchronous replication). Linearizability
	// and the session guarantees do not hold then and are not checked;
	// the store's own history (what survived), atomicity of what survived,
	// and the final state are.
	AckedMayVanish
)

func (l Loss) String() string {
	switch l {
	case NoLoss:
		return "no loss"
	case UnknownMayVanish:
		return "writes of unknown outcome may vanish"
	case AckedMayVanish:
		return "acknowledged writes may vanish"
	}
	return fmt.Sprintf("loss(%d)", int(l))
}

// Commit is one revision of the store's history, as its change log holds
// it.
type Commit struct {
	Rev     uint64
	Puts    map[string]Value
	Deletes []string
	// Expiry marks the store's own delete of expired keys (a commit with
	// no origin instance).
	Expiry bool
}

// Options say what Check is given besides the history.
type Options struct {
	// CounterKey is the key incremented by Inc operations; reads of it
	// are checked against the counter model. It must not be written
	// otherwise.
	CounterKey string
	// Log is the store's history, every revision from 1 on, read after
	// the scenario. Nil skips the checks that need it (the store's
	// history, the session guarantees and atomicity).
	Log []Commit
	// Final is what a fresh instance read at the end; it is compared with
	// a replay of Log. Nil skips that comparison.
	Final map[string]Value
	// Loss says what the store may have lost.
	Loss Loss
	// ExpiryRealTime says the store expires keys by a clock that runs
	// with the recorder's (not a test's fake clock): then no expiry may
	// take effect before the call of the write it expires plus its TTL.
	ExpiryRealTime bool
	// Timeout bounds porcupine's search per key. Default: one minute.
	// A search that runs out is reported as a violation: a check that
	// could not decide has not passed.
	Timeout time.Duration
}

// Violation is one broken guarantee.
type Violation struct {
	// Check names the check: "linearizability", "store history",
	// "lost write", "read-your-writes", "monotonic reads", "atomicity",
	// "phantom read", "fencing", "conditional write", "entry revision",
	// "expiry", "watch", "final state", or a scenario's own.
	Check string
	Msg   string
}

func (v Violation) String() string { return v.Check + ": " + v.Msg }

// Report is the result of Check.
type Report struct {
	Violations []Violation
	// Counts of the history's operations by kind and outcome.
	Counts map[Kind]map[Outcome]int
	// Revisions is the length of Log.
	Revisions int
	// Lost counts the acknowledged writes the log does not hold (a
	// violation unless Options.Loss is AckedMayVanish).
	Lost int
	// Porcupine is porcupine's verdict over all keys: Ok, Illegal, or
	// Unknown if a search timed out ("" if linearizability was not
	// checked).
	Porcupine porcupine.CheckResult
	// Inconclusive lists the keys whose search timed out only once the
	// writes of unknown outcome that may have vanished were added (a
	// failover with WAIT): each such write may or may not have happened,
	// and many of them make the search exponential. They are not passed,
	// and not violations either.
	Inconclusive []string
}

// OK reports whether no violation was found.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Summary describes the history and the verdict in a few lines.
func (r Report) Summary() string {
	var b strings.Builder
	for _, k := range []Kind{Write, Inc, StrongRead, CachedRead, Snapshot, Watch} {
		c := r.Counts[k]
		fmt.Fprintf(&b, "%ss: %d ok, %d unknown, %d refused; ", k, c[OK], c[Unknown], c[Refused])
	}
	fmt.Fprintf(&b, "%d revisions; %d acknowledged writes lost; porcupine: %q; %d violations", r.Revisions, r.Lost, r.Porcupine, len(r.Violations))
	if len(r.Inconclusive) > 0 {
		fmt.Fprintf(&b, "; inconclusive (search timed out with writes that may have vanished): keys %q", r.Inconclusive)
	}
	return b.String()
}

// String lists the violations, at most ten per check.
func (r Report) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	per := map[string]int{}
	for _, v := range r.Violations {
		per[v.Check]++
		if per[v.Check] <= 10 {
			b.WriteString("\n  ")
			b.WriteString(v.String())
		}
	}
	for _, c := range slices.Sorted(maps.Keys(per)) {
		if per[c] > 10 {
			fmt.Fprintf(&b, "\n  ... and %d more %s violations", per[c]-10, c)
		}
	}
	return b.String()
}

type checkRun struct {
	h    []Op
	o    Options
	idx  *storeIndex
	keys []string   // every key written or read
	wr   map[ID]int // every write's operation
	rep  Report
	// absorbed: increments in the log only as part of a later one's
	// combined commit; absorbedAt: those of unknown outcome, with the
	// commit and the counter value each stands for (combinedIncs).
	absorbed   map[int]bool
	absorbedAt map[int]absorbedInc
}

func (c *checkRun) fail(check, format string, args ...any) {
	c.rep.Violations = append(c.rep.Violations, Violation{Check: check, Msg: fmt.Sprintf(format, args...)})
}

// Check checks history h (from Recorder.History) as o says and reports
// every violation found.
func Check(h []Op, o Options) Report {
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	c := &checkRun{h: h, o: o}
	c.rep.Counts = make(map[Kind]map[Outcome]int)
	keys := map[string]struct{}{}
	for _, op := range h {
		if c.rep.Counts[op.Kind] == nil {
			c.rep.Counts[op.Kind] = make(map[Outcome]int)
		}
		c.rep.Counts[op.Kind][op.Outcome]++
		for k := range op.Puts {
			keys[k] = struct{}{}
		}
		for _, k := range op.Deletes {
			keys[k] = struct{}{}
		}
		if op.Key != "" {
			keys[op.Key] = struct{}{}
		}
		for k := range op.Snap {
			keys[k] = struct{}{}
		}
		for k := range op.Conds {
			keys[k] = struct{}{}
		}
	}
	c.rep.Revisions = len(o.Log)
	if o.Log != nil {
		c.idx = c.indexLog()
		for _, cm := range o.Log {
			for k := range cm.Puts {
				keys[k] = struct{}{}
			}
			for _, k := range cm.Deletes {
				keys[k] = struct{}{}
			}
		}
	}
	c.keys = slices.Sorted(maps.Keys(keys))
	c.wr = c.writers()
	c.combinedIncs()

	if o.Loss != AckedMayVanish {
		c.checkLinearizable()
	}
	if c.idx != nil {
		c.checkStoreHistory()
		c.checkRevisions()
		c.checkExpiries()
		c.checkReadsCommitted()
		if o.Loss != AckedMayVanish {
			c.checkSessions()
		}
		c.checkAtomicity()
		if o.Loss == NoLoss {
			c.checkWatches()
		}
		if o.Final != nil {
			if d := Diff(c.replay(), o.Final); d != "" {
				c.fail("final state", "a fresh instance reads another state than the store's log replays to: %s", d)
			}
		}
	}
	return c.rep
}

// Diff describes how got differs from want, or returns "" if they are
// equal.
func Diff(want, got map[string]Value) string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: missing, want %v", k, want[k]))
		case g != want[k]:
			diffs = append(diffs, fmt.Sprintf("%s: %v, want %v", k, g, want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %v, want absent", k, got[k]))
		}
	}
	return strings.Join(diffs, "; ")
}
