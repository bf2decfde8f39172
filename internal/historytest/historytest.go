// Package historytest is the workload of the randomised history scenarios
// that every backend's tests run (backend/redis, backend/memory): worker
// goroutines that write, read, transact and watch one context through
// contextd, recording every call with an internal/checker Recorder, and
// the helpers a scenario needs around them. The faults, and how instances
// reach the store, are each backend's own. It is used by tests only.
package historytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/checker"
)

// Classify classifies an operation's error: refusals that certainly wrote
// nothing, and everything else, which may or may not have taken effect.
func Classify(err error) checker.Outcome {
	switch {
	case err == nil:
		return checker.OK
	case errors.Is(err, contextd.ErrLockNotAcquired), errors.Is(err, contextd.ErrLockLost), errors.Is(err, contextd.ErrConflict):
		return checker.Refused
	}
	return checker.Unknown
}

// opContext returns the ctx of one call: mostly generous, sometimes short,
// so that some calls give up while their command is in flight.
func opContext(rng *rand.Rand) (context.Context, context.CancelFunc) {
	d := 2 * time.Second
	if rng.IntN(10) == 0 {
		d = time.Duration(20+rng.IntN(200)) * time.Millisecond
	}
	return context.WithTimeout(context.Background(), d)
}

func present(v checker.Value, ok bool) checker.Read { return checker.Read{Value: v, Present: ok} }

// Worker is one worker goroutine's state: it runs operations on instance
// Instance's Context, writing values w<ID>.<seq>.
type Worker struct {
	Rec      *checker.Recorder
	Cx       *contextd.Context[checker.Value]
	Instance int
	ID       int
	// Keys are written by UpdateContext, TransactionalUpdate, Delete and
	// read; Counter is incremented with Modify only.
	Keys    []string
	Counter string
	// Plain are the keys deletes, conditional writes, Txns and TTLs may
	// touch (not a lock key: deletes of unknown outcome on a key writers
	// wait for make porcupine's search explode, and a delete carries no
	// value the log could resolve it by). Nil: Keys.
	Plain []string
	// Expiry puts some keys WithTTL (20–200 ms); set it from the backend's
	// Capabilities().Expiry.
	Expiry bool
	// StrongOff, if set and true, stops recording strong reads (during a
	// failover, when a client may still read the old master).
	StrongOff *atomic.Bool
	// StaleReads counts reads refused with ErrStale (FailClosed), if set.
	StaleReads *atomic.Int64

	seq uint64
}

func (w *Worker) next() checker.Value {
	w.seq++
	return checker.Value{W: w.ID, S: w.seq}
}

func (w *Worker) plain() []string {
	if w.Plain != nil {
		return w.Plain
	}
	return w.Keys
}

func (w *Worker) strongOff() bool { return w.StrongOff != nil && w.StrongOff.Load() }

// ttl returns the write options of a put of v, which it marks: WithTTL for
// one put in three where expiry is on.
func (w *Worker) ttl(rng *rand.Rand, v *checker.Value) []contextd.WriteOption {
	if !w.Expiry || rng.IntN(3) != 0 {
		return nil
	}
	d := time.Duration(20+rng.IntN(180)) * time.Millisecond
	v.X = d.Milliseconds()
	return []contextd.WriteOption{contextd.WithTTL(d)}
}

// add finishes op (return time, outcome) and records it, unless it is a
// strong read made while strong reads are off; a conflict then is recorded
// as a refusal that observed nothing.
func (w *Worker) add(op checker.Op, err error, strongOff bool) {
	op.Return = w.Rec.Now()
	op.Outcome, op.Err = Classify(err), err
	if errors.Is(err, contextd.ErrStale) {
		// FailClosed: the instance knows its copy may be out of date, and
		// says so instead of answering.
		if w.StaleReads != nil {
			w.StaleReads.Add(1)
		}
		op.Outcome = checker.Refused
	}
	if errors.Is(err, contextd.ErrConflict) {
		op.Conflict = true
		var ce *backend.ConflictError
		if errors.As(err, &ce) {
			op.ConflictKey = ce.Key
		}
	}
	if op.Kind == checker.StrongRead && (strongOff || w.strongOff()) {
		return // read during a failover: not linearizable, not recorded
	}
	if op.Conflict && (strongOff || w.strongOff()) {
		// A conflict during a failover may come from the old master,
		// whose state holds writes that are about to vanish: like a
		// strong read then, it observes no state of the history that
		// survives. The write is still refused for sure.
		op.Conflict, op.ConflictKey = false, ""
	}
	w.Rec.Add(op)
}

// Step runs one random operation and records it; it returns its error.
func (w *Worker) Step(rng *rand.Rand) error {
	cx := w.Cx
	readable := append(slices.Clone(w.Keys), w.Counter)
	ctx, cancel := opContext(rng)
	defer cancel()
	op := checker.Op{Instance: w.Instance}
	strongOff := w.strongOff()
	op.Call = w.Rec.Now()
	var err error
	p := rng.IntN(100)
	switch {
	case p < 20:
		k := w.Keys[rng.IntN(len(w.Keys))]
		v := w.next()
		var opts []contextd.WriteOption
		if slices.Contains(w.plain(), k) {
			opts = w.ttl(rng, &v)
		}
		op.Kind, op.Puts = checker.Write, map[string]checker.Value{k: v}
		err = cx.UpdateContext(ctx, k, v, opts...)
	case p < 30:
		n := 2 + rng.IntN(2)
		v := w.next()
		v.T = n
		op.Kind, op.Puts = checker.Write, map[string]checker.Value{}
		for _, j := range rng.Perm(len(w.Keys))[:n] {
			op.Puts[w.Keys[j]] = v
		}
		err = cx.TransactionalUpdate(ctx, op.Puts)
	case p < 33:
		op.Kind = checker.Write
		plain := w.plain()
		for _, j := range rng.Perm(len(plain))[:1+rng.IntN(min(2, len(plain)))] {
			op.Deletes = append(op.Deletes, plain[j])
		}
		txn := cx.Txn()
		for _, k := range op.Deletes {
			txn.Delete(k)
		}
		op.Rev, err = txn.Commit(ctx)
	case p < 43:
		v := w.next()
		op.Kind, op.Key, op.Puts = checker.Inc, w.Counter, map[string]checker.Value{w.Counter: v}
		var got checker.Value
		got, err = cx.Modify(ctx, w.Counter, func(cur checker.Value, _ bool) (checker.Value, error) {
			return checker.Value{W: v.W, S: v.S, N: cur.N + 1}, nil
		})
		op.Read = present(got, true)
	case p < 52:
		op.Kind, op.Key = checker.StrongRead, readable[rng.IntN(len(readable))]
		var v checker.Value
		var ok bool
		v, ok, err = cx.Get(ctx, op.Key, contextd.Fresh())
		op.Read = present(v, ok)
	case p < 57:
		op.Kind, op.Key = checker.StrongRead, readable[rng.IntN(len(readable))]
		if err = cx.Sync(ctx); err == nil {
			get := op
			get.Kind = checker.CachedRead
			get.Call = w.Rec.Now()
			var v checker.Value
			var ok bool
			v, ok, err = cx.Get(ctx, op.Key)
			op.Read = present(v, ok)
			get.Read = op.Read
			w.add(get, err, false)
		}
	case p < 72:
		op.Kind, op.Key = checker.CachedRead, readable[rng.IntN(len(readable))]
		var v checker.Value
		var ok bool
		v, ok, err = cx.Get(ctx, op.Key)
		op.Read = present(v, ok)
	case p < 84:
		op.Kind = checker.Snapshot
		op.Snap, err = cx.GetContext(ctx)
	case p < 93:
		return w.conditional(ctx, rng)
	default:
		return w.txn(ctx, rng)
	}
	w.add(op, err, strongOff)
	return err
}

// entry reads key with GetEntry, from the store one time in three (if
// strong reads are on), and records the read.
func (w *Worker) entry(ctx context.Context, rng *rand.Rand, key string) (contextd.Entry[checker.Value], bool, error) {
	op := checker.Op{Instance: w.Instance, Kind: checker.CachedRead, Key: key, Entry: true}
	strongOff := w.strongOff()
	var opts []contextd.ReadOption
	if !strongOff && rng.IntN(3) == 0 {
		op.Kind, opts = checker.StrongRead, []contextd.ReadOption{contextd.Fresh()}
	}
	op.Call = w.Rec.Now()
	e, ok, err := w.Cx.GetEntry(ctx, key, opts...)
	op.Read, op.Rev = present(e.Value, ok), e.Revision
	w.add(op, err, strongOff)
	return e, ok, err
}

// conditional reads a key's entry and writes it on condition that it is
// still at the revision read: Create if it was absent, else UpdateContext
// or (one time in four) Delete with IfRevision. The local copy may be
// behind, so some are refused with ErrConflict.
func (w *Worker) conditional(ctx context.Context, rng *rand.Rand) error {
	plain := w.plain()
	k := plain[rng.IntN(len(plain))]
	e, ok, err := w.entry(ctx, rng, k)
	if err != nil {
		return err
	}
	v := w.next()
	opts := w.ttl(rng, &v)
	op := checker.Op{Instance: w.Instance, Kind: checker.Write, Conds: map[string]uint64{k: e.Revision}}
	strongOff := w.strongOff()
	op.Call = w.Rec.Now()
	switch {
	case !ok:
		op.Puts = map[string]checker.Value{k: v}
		op.Rev, err = w.Cx.Create(ctx, k, v, opts...)
	case rng.IntN(4) == 0:
		op.Deletes = []string{k}
		err = w.Cx.Delete(ctx, k, contextd.IfRevision(e.Revision))
	default:
		op.Puts = map[string]checker.Value{k: v}
		err = w.Cx.UpdateContext(ctx, k, v, append(opts, contextd.IfRevision(e.Revision))...)
	}
	w.add(op, err, strongOff)
	return err
}

// txn commits a Txn of puts (1–2 keys), deletes (0–1) and conditions on
// the revisions read of 0–2 keys, written or not.
func (w *Worker) txn(ctx context.Context, rng *rand.Rand) error {
	plain := w.plain()
	perm := rng.Perm(len(plain))
	nPut := 1 + rng.IntN(min(2, len(plain)))
	nDel := min(rng.IntN(2), len(plain)-nPut)
	op := checker.Op{Instance: w.Instance, Kind: checker.Write, Puts: map[string]checker.Value{}}
	v := w.next()
	if nPut > 1 {
		v.T = nPut
	}
	opts := w.ttl(rng, &v)
	txn := w.Cx.Txn()
	for _, j := range perm[:nPut] {
		op.Puts[plain[j]] = v
		txn.Put(plain[j], v, opts...)
	}
	for _, j := range perm[nPut : nPut+nDel] {
		op.Deletes = append(op.Deletes, plain[j])
		txn.Delete(plain[j])
	}
	for _, j := range rng.Perm(len(plain))[:rng.IntN(min(3, len(plain)+1))] {
		e, _, err := w.entry(ctx, rng, plain[j])
		if err != nil {
			return err
		}
		if op.Conds == nil {
			op.Conds = map[string]uint64{}
		}
		op.Conds[plain[j]] = e.Revision
		txn.IfRevision(plain[j], e.Revision)
	}
	strongOff := w.strongOff()
	op.Call = w.Rec.Now()
	var err error
	op.Rev, err = txn.Commit(ctx)
	w.add(op, err, strongOff)
	return err
}

// Watch is instance i's watcher: until stop is closed it watches cx from
// a revision for 100–400 ms at a time, records what each watch delivered,
// and resumes from the last revision it saw whole (one time in four from
// up to 20 revisions before it, replaying more).
func Watch(rec *checker.Recorder, cx *contextd.Context[checker.Value], i int, rng *rand.Rand, stop <-chan struct{}) {
	from := cx.Revision()
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(100+rng.IntN(300))*time.Millisecond)
		op := checker.Op{Instance: i, Kind: checker.Watch, Rev: from, Call: rec.Now()}
		whole, last := from, uint64(0)
		for ch := range cx.Watch(ctx, contextd.FromRevision(from)) {
			c := checker.Change{Key: ch.Key, Value: ch.Value, Deleted: ch.Deleted, Rev: ch.Revision, Reset: ch.Reset, Initial: ch.Initial, UpToDate: ch.UpToDate}
			op.Changes = append(op.Changes, c)
			switch {
			case ch.UpToDate:
				whole = max(whole, ch.Revision)
			case ch.Reset, ch.Initial:
			case ch.Revision > last:
				if last > 0 {
					whole = max(whole, last) // a later revision came: last is whole
				}
				last = ch.Revision
			}
		}
		cancel()
		op.Return = rec.Now()
		rec.Add(op)
		from = whole
		if rng.IntN(4) == 0 {
			from -= min(from, uint64(rng.IntN(21)))
		}
	}
}

// Need is an activity a scenario must show before its history proves
// anything.
type Need struct {
	What  string
	Match func(checker.Op) bool
	Min   int
}

// Needs returns the activities a scenario must show: MinActivity
// successes of each kind of operation, of conditional writes, of Txns
// with conditions and of entry reads, and a few conflicts.
func Needs() []Need {
	var ns []Need
	for _, k := range []checker.Kind{checker.Write, checker.Inc, checker.StrongRead, checker.CachedRead, checker.Snapshot, checker.Watch} {
		ns = append(ns, Need{k.String() + "s", func(op checker.Op) bool { return op.Kind == k && op.Outcome == checker.OK }, MinActivity})
	}
	return append(ns,
		Need{"conditional writes", func(op checker.Op) bool {
			return op.Kind == checker.Write && len(op.Conds) > 0 && op.Outcome == checker.OK
		}, MinActivity},
		Need{"transactions with conditions and a returned revision", func(op checker.Op) bool {
			return op.Kind == checker.Write && len(op.Conds) > 0 && len(op.Puts) > 0 && op.Rev != 0 && op.Outcome == checker.OK
		}, MinActivity},
		Need{"entry reads", func(op checker.Op) bool { return op.Entry && op.Outcome == checker.OK }, MinActivity},
		Need{"conflicts", func(op checker.Op) bool { return op.Conflict }, 3},
	)
}

// MinActivity is how many operations of each kind a scenario must see
// succeed to prove anything.
const MinActivity = 10

// Enough reports whether rec shows every need.
func Enough(rec *checker.Recorder, needs []Need) bool {
	for _, n := range needs {
		if rec.Count(n.Match) < n.Min {
			return false
		}
	}
	return true
}

// Missing describes the needs rec does not show, or returns nil.
func Missing(rec *checker.Recorder, needs []Need) []string {
	var out []string
	for _, n := range needs {
		if got := rec.Count(n.Match); got < n.Min {
			out = append(out, fmt.Sprintf("only %d %s (want %d)", got, n.What, n.Min))
		}
	}
	return out
}

// Expiries counts the expiry commits of a log.
func Expiries(log []checker.Commit) int {
	n := 0
	for _, c := range log {
		if c.Expiry {
			n++
		}
	}
	return n
}

// ReadLog reads context name's whole change log: the store's history. A
// commit with no origin that only deletes is the store's expiry.
func ReadLog(ctx context.Context, s backend.Store, name string) ([]checker.Commit, error) {
	cl, ok := s.(backend.ChangeLog)
	if !ok {
		return nil, errors.New("the store keeps no change log")
	}
	head, err := s.Revision(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("reading the head of %q: %w", name, err)
	}
	evs, err := cl.ChangesSince(ctx, name, head.Epoch, 0)
	if err != nil {
		return nil, fmt.Errorf("reading the change log of %q: %w", name, err)
	}
	log := make([]checker.Commit, 0, len(evs))
	for _, ev := range evs {
		cm := checker.Commit{Rev: ev.Revision, Puts: map[string]checker.Value{}}
		for _, ch := range ev.Changes {
			switch {
			case ch.Deleted:
				cm.Deletes = append(cm.Deletes, ch.Key)
			case ch.Omitted:
				return nil, fmt.Errorf("revision %d of %q omits the value of %q", ev.Revision, name, ch.Key)
			default:
				var v checker.Value
				if err := json.Unmarshal(ch.Value, &v); err != nil {
					return nil, fmt.Errorf("revision %d of %q: %q = %q: %w", ev.Revision, name, ch.Key, ch.Value, err)
				}
				cm.Puts[ch.Key] = v
			}
		}
		cm.Expiry = ev.Origin == "" && len(cm.Puts) == 0
		log = append(log, cm)
	}
	return log, nil
}

// AwaitNoTTL waits until the store holds no key that has yet to expire,
// so that the state after the workload stays put while the instances'
// convergence is checked; the instances' own expiry timers do the
// deleting. It returns an error if some key is still waiting at ctx's end.
func AwaitNoTTL(ctx context.Context, s backend.Store, name string) error {
	for {
		snap, err := s.Load(ctx, name)
		if err == nil && !slices.ContainsFunc(snap.Entries, func(e backend.Entry) bool { return !e.Expires.IsZero() }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("keys still to expire (last load: %v): %w", err, ctx.Err())
		case <-time.After(10 * time.Millisecond): // polling a condition, with a deadline
		}
	}
}
