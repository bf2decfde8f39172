package checker

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Value is the value type of the contexts a scenario writes. No two writes
// write the same Value: W and S identify the write.
type Value struct {
	// W identifies the writer (an instance's goroutine), unique in the
	// scenario.
	W int `json:"w"`
	// S is the writer's sequence number, from 1.
	S uint64 `json:"s"`
	// T is the number of keys of the transaction that wrote the value, or
	// 0 for a write of one key.
	T int `json:"t,omitempty"`
	// F is the fencing token of the lock the value was written under, or 0.
	F uint64 `json:"f,omitempty"`
	// N is the counter's value, for values written by Modify.
	N int64 `json:"n,omitempty"`
	// X is the time to live, in milliseconds, the value was written with
	// (WithTTL), or 0: the store may expire the key only if the write
	// that last put it carried one.
	X int64 `json:"x,omitempty"`
}

// ID returns the identity of the write that wrote v.
func (v Value) ID() ID { return ID{W: v.W, S: v.S} }

func (v Value) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "w%d.%d", v.W, v.S)
	if v.T > 0 {
		fmt.Fprintf(&b, "/txn%d", v.T)
	}
	if v.F > 0 {
		fmt.Fprintf(&b, "/fence%d", v.F)
	}
	if v.N != 0 {
		fmt.Fprintf(&b, "/n=%d", v.N)
	}
	if v.X != 0 {
		fmt.Fprintf(&b, "/ttl=%dms", v.X)
	}
	return b.String()
}

// ID identifies one write: its writer and sequence number.
type ID struct {
	W int
	S uint64
}

func (id ID) String() string { return fmt.Sprintf("w%d.%d", id.W, id.S) }

// Kind is the kind of an operation.
type Kind int

// The kinds of operations.
const (
	// Write puts Op.Puts and deletes Op.Deletes in one atomic step
	// (UpdateContext, TransactionalUpdate, Delete, Create, Txn.Commit),
	// if every condition of Op.Conds holds.
	Write Kind = iota
	// Inc increments the counter at Op.Key with Modify, writing Op.Puts'
	// one value; Op.Read holds the value Modify returned.
	Inc
	// StrongRead reads Op.Key from the store: Get with Fresh, or Get right
	// after Sync (then Call is the Sync's call).
	StrongRead
	// CachedRead reads Op.Key from the instance's local copy (Get).
	CachedRead
	// Snapshot reads the whole local copy (GetContext) into Op.Snap.
	Snapshot
	// Watch is a Watch with FromRevision(Op.Rev); Op.Changes holds what
	// it delivered, in order, until the watcher stopped.
	Watch
)

func (k Kind) String() string {
	switch k {
	case Write:
		return "write"
	case Inc:
		return "inc"
	case StrongRead:
		return "strong read"
	case CachedRead:
		return "cached read"
	case Snapshot:
		return "snapshot"
	case Watch:
		return "watch"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Outcome says how an operation ended.
type Outcome int

// The outcomes.
const (
	// OK: the operation succeeded.
	OK Outcome = iota
	// Unknown: it failed in a way that leaves open whether it took effect
	// (a network error, a timeout, ErrNotReplicated). It may take effect
	// at any time after its call, even after it returned.
	Unknown
	// Refused: it failed and certainly took no effect (a lock not
	// acquired, a lost lock, a conflict, bad input). Refused writes are
	// not part of the history, but their values must never show up.
	Refused
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Unknown:
		return "unknown"
	case Refused:
		return "refused"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Read is what a read of one key saw.
type Read struct {
	Value   Value
	Present bool
}

func (r Read) String() string {
	if !r.Present {
		return "absent"
	}
	return r.Value.String()
}

// Op is one recorded operation.
type Op struct {
	// Instance is the index of the Context instance that ran it.
	Instance int
	Kind     Kind
	// Call and Return are the times of the call and the return, in
	// nanoseconds since the recorder started. For an Unknown outcome
	// Return is when the call gave up; the checks treat it as open-ended.
	Call, Return int64
	Outcome      Outcome
	// Puts are the values written (Write, Inc).
	Puts map[string]Value
	// Deletes are the keys deleted (Write).
	Deletes []string
	// Key is the key read (StrongRead, CachedRead) or incremented (Inc).
	Key string
	// Read is what a read saw, or for an OK Inc the value Modify returned.
	Read Read
	// Snap is the map a Snapshot returned.
	Snap map[string]Value
	// Conds are a write's conditions: each key must be at the revision
	// given (0: absent) when the write commits (IfRevision, IfAbsent,
	// Create, Txn.IfRevision). Keys need not be written by it.
	Conds map[string]uint64
	// Conflict reports a write refused with ErrConflict: a condition did
	// not hold. ConflictKey names the key whose condition failed, where the
	// error says (backend.ConflictError); with one condition it is implied.
	Conflict    bool
	ConflictKey string
	// Rev is, for a write, the revision it returned (Create, Txn.Commit),
	// or 0 if it returns none; for a read with Entry set, the revision the
	// entry showed (0 for an absent key); for a Watch, its FromRevision.
	Rev uint64
	// Entry reports a read that returned an Entry (GetEntry), with its
	// revision in Rev.
	Entry bool
	// Changes are what a Watch delivered, in order.
	Changes []Change
	// Err is the error of a failed operation, for messages.
	Err error
}

// Change is one change a Watch delivered (contextd.Change).
type Change struct {
	Key     string
	Value   Value
	Deleted bool
	Rev     uint64
	// Reset, Initial and UpToDate are the markers of contextd.Change.
	Reset, Initial, UpToDate bool
}

func (ch Change) String() string {
	switch {
	case ch.Reset:
		return "reset"
	case ch.UpToDate:
		return fmt.Sprintf("up-to-date@%d", ch.Rev)
	case ch.Deleted:
		return fmt.Sprintf("del(%s)@%d", ch.Key, ch.Rev)
	case ch.Initial:
		return fmt.Sprintf("initial %s=%v@%d", ch.Key, ch.Value, ch.Rev)
	}
	return fmt.Sprintf("%s=%v@%d", ch.Key, ch.Value, ch.Rev)
}

// end is the return time the checks use: an operation of unknown outcome
// may take effect until the end of time.
func (op Op) end() int64 {
	if op.Outcome == Unknown {
		return math.MaxInt64
	}
	return op.Return
}

// id returns the identity of the values a write or increment wrote.
func (op Op) id() (ID, bool) {
	for _, v := range op.Puts {
		return v.ID(), true
	}
	return ID{}, false
}

func (op Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "instance %d %s", op.Instance, op.Kind)
	switch op.Kind {
	case Write, Inc:
		keys := slices.Sorted(maps.Keys(op.Puts))
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, op.Puts[k])
		}
		for _, k := range op.Deletes {
			fmt.Fprintf(&b, " del(%s)", k)
		}
		for _, k := range slices.Sorted(maps.Keys(op.Conds)) {
			fmt.Fprintf(&b, " if(%s@%d)", k, op.Conds[k])
		}
		if op.Kind == Inc && op.Outcome == OK {
			fmt.Fprintf(&b, " -> %v", op.Read)
		}
		if op.Rev != 0 {
			fmt.Fprintf(&b, " -> revision %d", op.Rev)
		}
		if op.Conflict {
			fmt.Fprintf(&b, " conflict(%s)", op.ConflictKey)
		}
	case StrongRead, CachedRead:
		fmt.Fprintf(&b, " %s -> %v", op.Key, op.Read)
		if op.Entry {
			fmt.Fprintf(&b, "@%d", op.Rev)
		}
	case Snapshot:
		fmt.Fprintf(&b, " -> %v", op.Snap)
	case Watch:
		fmt.Fprintf(&b, " from %d: %d changes", op.Rev, len(op.Changes))
	}
	fmt.Fprintf(&b, " [%v, %v] %v", time.Duration(op.Call), time.Duration(op.Return), op.Outcome)
	if op.Err != nil {
		fmt.Fprintf(&b, " (%v)", op.Err)
	}
	return b.String()
}

// Recorder collects the operations of a scenario. It is safe for concurrent
// use.
type Recorder struct {
	start time.Time

	mu    sync.Mutex
	ops   []Op
	notes []Violation
}

// NewRecorder returns a Recorder whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now returns the recorder's clock: nanoseconds since it started, from the
// monotonic clock.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records op. Set op.Call from Now before the call and op.Return from
// Now after it.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Fail records a violation the scenario saw itself (say, a write under a
// lost lock that was not refused); Check reports it with its own.
func (r *Recorder) Fail(check, format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, Violation{Check: check, Msg: fmt.Sprintf(format, args...)})
	r.mu.Unlock()
}

// History returns the operations recorded so far, by call time.
func (r *Recorder) History() []Op {
	r.mu.Lock()
	ops := slices.Clone(r.ops)
	r.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Succeeded returns how many operations of kind k have succeeded so far.
func (r *Recorder) Succeeded(k Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, op := range r.ops {
		if op.Kind == k && op.Outcome == OK {
			n++
		}
	}
	return n
}

// Count returns how many recorded operations satisfy match.
func (r *Recorder) Count(match func(Op) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, op := range r.ops {
		if match(op) {
			n++
		}
	}
	return n
}

// Notes returns the violations recorded with Fail.
func (r *Recorder) Notes() []Violation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

// Check runs Check on the recorded history and adds the violations
// recorded with Fail.
func (r *Recorder) Check(o Options) Report {
	rep := Check(r.History(), o)
	rep.Violations = append(r.Notes(), rep.Violations...)
	return rep
}
