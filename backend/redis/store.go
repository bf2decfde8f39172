package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/internal/slot"
	"github.com/contextd-go/contextd/locker"
)

// Load returns a consistent snapshot: the meta fields, both hashes and
// the deadline index, read in one MULTI/EXEC transaction, one round trip. (A script would do
// the same atomically, but Lua would first turn every field of a large
// context into a table and back, which holds the server up several times
// as long.)
func (b *Backend) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	k := keysOf(name)
	op := fmt.Sprintf("load %q", name)
	var (
		meta       *goredis.SliceCmd
		data, revs *goredis.MapStringStringCmd
		deadlines  *goredis.ZSliceCmd
	)
	err := execLoad(ctx, b.client, func(pipe goredis.Pipeliner) {
		meta = pipe.HMGet(ctx, k.meta, "epoch", "rev", "codec", "commit", "parent")
		data = pipe.HGetAll(ctx, k.data)
		revs = pipe.HGetAll(ctx, k.revs)
		deadlines = pipe.ZRangeWithScores(ctx, k.expiry, 0, -1)
	})
	if err != nil {
		// A refused command aborts the transaction (EXECABORT); its own
		// error says why (WRONGTYPE: damage; NOPERM: the ACL).
		for _, c := range []struct {
			key string
			cmd goredis.Cmder
		}{{k.meta, meta}, {k.data, data}, {k.revs, revs}, {k.expiry, deadlines}} {
			switch cerr := c.cmd.Err(); {
			case isWrongType(cerr) && c.key == k.expiry:
				return backend.Snapshot{}, fmt.Errorf("redis: %s: key %q is not a sorted set: %w", op, c.key, backend.ErrCorrupt)
			case isWrongType(cerr):
				return backend.Snapshot{}, fmt.Errorf("redis: %s: key %q is not a hash: %w", op, c.key, backend.ErrCorrupt)
			case cerr != nil && !errors.Is(cerr, err):
				return backend.Snapshot{}, wrap(ctx, op, cerr)
			}
		}
		return backend.Snapshot{}, wrap(ctx, op, err)
	}
	var snap backend.Snapshot
	if err := parseMeta(meta.Val(), &snap); err != nil {
		return backend.Snapshot{}, fmt.Errorf("redis: %s: %s of %q: %w", op, err, k.meta, backend.ErrCorrupt)
	}
	written := revs.Val()
	var expires map[string]time.Time
	if zs := deadlines.Val(); len(zs) > 0 {
		expires = make(map[string]time.Time, len(zs))
		for _, z := range zs {
			if key, ok := z.Member.(string); ok {
				expires[key] = deadline(z.Score)
			}
		}
	}
	snap.Entries = make([]backend.Entry, 0, len(data.Val()))
	for key, val := range data.Val() {
		e := backend.Entry{Key: key, Value: []byte(val), Expires: expires[key]}
		e.Revision, e.Commit = parseWritten(written[key])
		snap.Entries = append(snap.Entries, e)
	}
	return snap, nil
}

// deadline reads a score of the deadline index: Unix milliseconds by the
// server's clock.
func deadline(score float64) time.Time {
	return time.UnixMilli(int64(score))
}

// parseDeadline reads a score of the deadline index from a script's reply
// (a string, or nil for none): the zero time for none, or for a score
// that does not parse (which a sorted set cannot hold).
func parseDeadline(v any) time.Time {
	s, ok := v.(string)
	if !ok {
		return time.Time{}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}
	}
	return deadline(f)
}

// parseMeta reads the meta fields epoch, rev, codec, commit and parent
// into snap, with the checks the scripts make (readMeta in scripts.go).
func parseMeta(m []any, snap *backend.Snapshot) error {
	field := func(i int) string { s, _ := m[i].(string); return s }
	snap.Epoch, snap.Codec, snap.Commit, snap.Parent = field(0), field(2), field(3), field(4)
	rev, err := parseUint(m[1])
	if err != nil {
		return fmt.Errorf("field \"rev\" does not parse (%w)", err)
	}
	snap.Revision = rev
	for name, v := range map[string]string{"epoch": snap.Epoch, "commit": snap.Commit, "parent": snap.Parent} {
		if len(v) > backend.MaxEpochLen || strings.ContainsAny(v, " \t\r\n") || name == "epoch" && m[0] != nil && v == "" {
			return fmt.Errorf("field %q does not parse", name)
		}
	}
	return nil
}

// parseWritten reads a key's field of the revs hash: "<revision> <commit
// id>", or a bare revision. A missing field, or what another program
// scribbled there, reads as revision 0, which backend.Entry defines as
// damage: the entry still loads, reads of it fail with
// backend.ErrCorrupt, and any newer change replaces it.
func parseWritten(s string) (rev uint64, commit string) {
	r, commit, _ := strings.Cut(s, " ")
	rev, err := strconv.ParseUint(r, 10, 64)
	if err != nil || strings.ContainsAny(commit, " \t\r\n") {
		return 0, ""
	}
	return rev, commit
}

// Get reads one entry and its revision in one round trip.
func (b *Backend) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	k := keysOf(name)
	op := fmt.Sprintf("get %q of %q", key, name)
	res, err := getScript.Run(ctx, b.client, []string{k.data, k.revs, k.expiry}, key).Slice()
	if err != nil {
		return backend.Entry{}, scriptFailed(ctx, op, k, err, nil, nil)
	}
	if len(res) != 3 {
		return backend.Entry{}, fmt.Errorf("redis: %s: script returned %d elements", op, len(res))
	}
	switch {
	case res[0] == nil && res[1] == nil:
		return backend.Entry{}, fmt.Errorf("redis: %s: %w", op, backend.ErrNotFound)
	case res[0] == nil:
		return backend.Entry{}, fmt.Errorf("redis: %s: field %q of %q has a revision but %q has no value: %w", op, key, k.revs, k.data, backend.ErrCorrupt)
	}
	val, _ := res[0].(string)
	e := backend.Entry{Key: key, Value: []byte(val), Expires: parseDeadline(res[2])}
	field, _ := res[1].(string)
	if e.Revision, e.Commit = parseWritten(field); e.Revision == 0 {
		return backend.Entry{}, fmt.Errorf("redis: %s: field %q of %q holds no revision (a value written without one?): %w", op, key, k.revs, backend.ErrCorrupt)
	}
	return e, nil
}

// Revision returns the context's head.
func (b *Backend) Revision(ctx context.Context, name string) (backend.Head, error) {
	k := keysOf(name)
	op := fmt.Sprintf("revision of %q", name)
	res, err := b.client.HMGet(ctx, k.meta, "epoch", "rev", "commit", "parent").Result()
	if err != nil {
		return backend.Head{}, scriptFailed(ctx, op, k, err, nil, nil)
	}
	var h backend.Head
	h.Epoch, _ = res[0].(string)
	h.Commit, _ = res[2].(string)
	h.Parent, _ = res[3].(string)
	if h.Revision, err = parseUint(res[1]); err != nil {
		return backend.Head{}, fmt.Errorf("redis: %s: field \"rev\" of %q does not parse (%w): %w", op, k.meta, err, backend.ErrCorrupt)
	}
	return h, nil
}

// Commit applies the batch in one script, without publishing.
func (b *Backend) Commit(ctx context.Context, name string, bt backend.Batch) (backend.Head, error) {
	return b.commit(ctx, name, bt, "")
}

// CommitAndPublish applies the batch and publishes its event in the same
// script. On a cluster, channel must hash to the context's slot (the
// default channel does: it carries the context's hash tag).
func (b *Backend) CommitAndPublish(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	if b.opts.DisableAtomicPublish {
		return backend.Head{}, fmt.Errorf("redis: commit to %q: atomic publish is switched off: %w", name, errors.ErrUnsupported)
	}
	if channel == "" {
		return backend.Head{}, fmt.Errorf("redis: commit to %q: empty channel", name)
	}
	if b.sharded && slot.Of(channel) != slot.Of(keysOf(name).meta) {
		return backend.Head{}, fmt.Errorf("redis: commit to %q: on a cluster the channel %q must share the context's hash tag %s", name, channel, keysOf(name).tag)
	}
	return b.commit(ctx, name, bt, channel)
}

func (b *Backend) commit(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	if err := validBatch(bt); err != nil {
		return backend.Head{}, fmt.Errorf("redis: %s: %w", commitOp(name), err)
	}
	k := keysOf(name)
	checkLocks := !b.opts.DisableLockAwareCommit
	leases := bt.Leases
	if !checkLocks {
		leases = nil // a store that does not check locks ignores leases
	}
	id := b.newID() // the commit's id, and the epoch if the context needs one
	fair := checkLocks && !b.opts.DisableFairLocks
	nKeys := 6 + len(leases) + 1
	if checkLocks {
		nKeys += len(bt.Ops)
	}
	if fair {
		nKeys += len(bt.Ops)
	}
	redisKeys := make([]string, 0, nKeys)
	redisKeys = append(redisKeys, k.meta, k.data, k.revs, k.ring, k.waiters, k.expiry)
	var lockKeys []string // in the script's order: ops', then leases'
	if checkLocks {
		lockKeys = make([]string, 0, len(bt.Ops)+len(leases))
		for _, o := range bt.Ops {
			lockKeys = append(lockKeys, k.lock(o.Key))
		}
		redisKeys = append(redisKeys, lockKeys...)
	}
	if fair {
		for _, o := range bt.Ops {
			redisKeys = append(redisKeys, k.queue(o.Key))
		}
	}
	for _, l := range leases {
		lockKeys = append(lockKeys, k.lock(l.Key))
		redisKeys = append(redisKeys, k.lock(l.Key))
	}
	if b.mayResend {
		redisKeys = append(redisKeys, k.commit(id))
	}
	logLen := 0
	if !b.opts.DisableChangeLog {
		logLen = b.opts.ChangeLogLength
	}
	var waiterID string
	var hold int64
	if fair && bt.Waiter != nil {
		waiterID, hold = bt.Waiter.ID, max(bt.Waiter.Hold.Milliseconds(), 1)
	}
	// The kind of each op, and whether the event carries its value (up to
	// EventValueLimit, in op order, as backend.EventFromBatch decides).
	kinds := make([]byte, len(bt.Ops))
	var ttls []byte // "<op index> <ms>" per put with a TTL
	budget := bt.EventValueLimit
	for i, o := range bt.Ops {
		switch {
		case o.Delete:
			kinds[i] = 'd'
		case len(o.Value) <= budget:
			kinds[i] = 'p'
			budget -= len(o.Value)
		default:
			kinds[i] = 'o'
		}
		if !o.Delete && o.TTL > 0 {
			ttls = appendTTL(ttls, i, o.TTL)
		}
	}
	var requeue string
	if fair && bt.Requeue != nil && bt.Requeue.Waiter.ID != "" {
		requeue = strconv.FormatInt(max(bt.Requeue.Waiter.Hold.Milliseconds(), 1), 10) + " " + bt.Requeue.Waiter.ID
	}
	header := commitHeader(len(bt.Ops), len(bt.Conditions), len(leases), logLen, hold, checkLocks, b.mayResend, fair, b.sharded)
	args := make([]any, 0, 11+2*len(bt.Ops)+2*len(bt.Conditions)+2*len(leases))
	args = append(args, header, bt.Codec, id, backend.AppendWireID(nil, id), backend.AppendWireID(nil, bt.Origin),
		channel, b.unlockChannel(k), waiterID, kinds, ttls, requeue)
	for _, o := range bt.Ops {
		if o.Delete {
			args = append(args, o.Key, "")
		} else {
			args = append(args, o.Key, o.Value)
		}
	}
	for _, c := range bt.Conditions {
		want := strconv.FormatUint(c.Revision, 10)
		if c.Commit != "" && c.Revision != 0 {
			want += " " + c.Commit
		}
		args = append(args, c.Key, want)
	}
	for _, l := range leases {
		args = append(args, l.Key, lockValue(l))
	}
	res, err := b.run(ctx, commitScript, redisKeys, args...).Slice()
	if err != nil {
		return backend.Head{}, b.commitError(ctx, name, commitOp(name), bt, leases, lockKeys, err)
	}
	switch len(res) {
	case 4:
	case 5:
		if bt.Requeue != nil {
			bt.Requeue.Queued = true
		}
	case 3:
		return backend.Head{}, conflictReply(commitOp(name), bt, res)
	default:
		return backend.Head{}, fmt.Errorf("redis: %s: script returned %d elements", commitOp(name), len(res))
	}
	var h backend.Head
	h.Epoch, _ = res[0].(string)
	h.Commit, _ = res[2].(string)
	h.Parent, _ = res[3].(string)
	if h.Revision, err = parseUint(res[1]); err != nil {
		return backend.Head{}, fmt.Errorf("redis: %s: %w", commitOp(name), err)
	}
	return h, nil
}

// commitOp names a commit to context name in its errors; it is made only
// when one is returned, not on every commit.
func commitOp(name string) string { return fmt.Sprintf("commit to %q", name) }

// commitHeader is the commit script's first argument (commitScript):
// "<#ops> <#conditions> <#leases> <log length> <hold ms> <flags>", made
// without fmt, which costs every write an allocation per number.
func commitHeader(ops, conds, leases, logLen int, hold int64, checkLocks, remember, fair, sharded bool) string {
	b := make([]byte, 0, 48)
	for _, n := range [...]int64{int64(ops), int64(conds), int64(leases), int64(logLen), hold} {
		b = strconv.AppendInt(b, n, 10)
		b = append(b, ' ')
	}
	b = append(b, flag(checkLocks)...)
	b = append(b, flag(remember)...)
	b = append(b, flag(fair)...)
	b = append(b, flag(sharded)...)
	return string(b)
}

// appendTTL appends op index i and its TTL in whole milliseconds, rounded
// up (a key never expires before its TTL has passed), to the commit
// script's TTL argument.
func appendTTL(buf []byte, i int, ttl time.Duration) []byte {
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	if len(buf) > 0 {
		buf = append(buf, ' ')
	}
	buf = strconv.AppendInt(buf, int64(i), 10)
	buf = append(buf, ' ')
	return strconv.AppendInt(buf, int64(ms), 10)
}

// Expire deletes the context's keys whose deadline has passed by the
// Redis server's clock, in one commit of the store's own (no origin),
// logged and, with channel set and atomic publishing on, published on
// channel in the same script (backend.Expirer). It returns that commit's
// event (the zero Event if no key was due), the next deadline in the
// index (zero if none) and the server's clock. On a cluster, channel must
// share the context's hash tag, as for CommitAndPublish.
func (b *Backend) Expire(ctx context.Context, name, channel string) (backend.Event, time.Time, time.Time, error) {
	op := fmt.Sprintf("expire keys of %q", name)
	k := keysOf(name)
	if b.opts.DisableAtomicPublish {
		channel = "" // the caller publishes
	}
	if channel != "" && b.sharded && slot.Of(channel) != slot.Of(k.meta) {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("redis: %s: on a cluster the channel %q must share the context's hash tag %s", op, channel, k.tag)
	}
	logLen := 0
	if !b.opts.DisableChangeLog {
		logLen = b.opts.ChangeLogLength
	}
	id := b.newID()
	res, err := b.run(ctx, expireScript, []string{k.meta, k.data, k.revs, k.ring, k.expiry},
		id, backend.AppendWireID(nil, id), channel, logLen, flag(b.sharded)).Slice()
	if err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, scriptFailed(ctx, op, k, err, nil, nil)
	}
	if len(res) != 7 {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("redis: %s: script returned %d elements", op, len(res))
	}
	nowMs, ok := res[4].(int64)
	if !ok {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("redis: %s: script returned a malformed clock %v", op, res[4])
	}
	now, next := time.UnixMilli(nowMs), parseDeadline(res[5])
	var ev backend.Event
	if ev.Revision, err = parseUint(res[1]); err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("redis: %s: %w", op, err)
	}
	if ev.Revision == 0 {
		return backend.Event{}, next, now, nil
	}
	ev.Epoch, _ = res[0].(string)
	ev.Commit, _ = res[2].(string)
	ev.Parent, _ = res[3].(string)
	ev.Time = now
	keys, _ := res[6].([]any)
	ev.Changes = make([]backend.Change, 0, len(keys))
	for _, key := range keys {
		s, _ := key.(string)
		ev.Changes = append(ev.Changes, backend.Change{Key: s, Deleted: true})
	}
	return ev, next, now, nil
}

// conflictReply reads the commit script's conflict reply: {index of the
// condition, the key's value or nil, its revs field or nil}, into a
// backend.ConflictError.
func conflictReply(op string, bt backend.Batch, res []any) error {
	i, ok := res[0].(int64)
	if !ok || i < 0 || int(i) >= len(bt.Conditions) {
		return fmt.Errorf("redis: %s: conflict reply for condition %v of %d", op, res[0], len(bt.Conditions))
	}
	key := bt.Conditions[i].Key
	ce := &backend.ConflictError{Key: key, Current: backend.Entry{Key: key}}
	if v, ok := res[1].(string); ok {
		ce.Exists = true
		ce.Current.Value = []byte(v)
		// The script refuses fields that do not parse, as damage.
		field, _ := res[2].(string)
		ce.Current.Revision, ce.Current.Commit = parseWritten(field)
	}
	return fmt.Errorf("redis: %s: key %q changed: %w", op, key, ce)
}

// commitError translates a refusal of the commit script; lockKeys are the
// Redis lock keys the script was given, in its order.
func (b *Backend) commitError(ctx context.Context, name, op string, bt backend.Batch, leases []locker.Lease, lockKeys []string, err error) error {
	// at returns the i-th of n names, or "?" for an index out of range.
	at := func(i, n int, name func(int) string) string {
		if i < 0 || i >= n {
			return "?"
		}
		return name(i)
	}
	condKey := func(i int) string {
		return at(i, len(bt.Conditions), func(i int) string { return bt.Conditions[i].Key })
	}
	se, ok := parseScriptError(err)
	if !ok || se.code == "CONTEXTD_CORRUPT" {
		return scriptFailed(ctx, op, keysOf(name), err, condKey,
			func(i int) string { return at(i, len(lockKeys), func(i int) string { return lockKeys[i] }) })
	}
	switch se.code {
	case "CONTEXTD_CODEC":
		return fmt.Errorf("redis: %s: the context is encoded with %q, not %q: %w", op, se.detail, bt.Codec, backend.ErrCodecMismatch)
	case "CONTEXTD_NOTHELD":
		key := at(se.index, len(leases), func(i int) string { return leases[i].Key })
		return fmt.Errorf("redis: %s: lock on %q: %w", op, key, locker.ErrNotHeld)
	case "CONTEXTD_LOCKED":
		key := at(se.index, len(bt.Ops), func(i int) string { return bt.Ops[i].Key })
		return fmt.Errorf("redis: %s: key %q: %w", op, key, backend.ErrLocked)
	}
	return wrap(ctx, op, err)
}

// validBatch refuses batches the script must never see.
func validBatch(bt backend.Batch) error {
	if len(bt.Ops) == 0 {
		return errors.New("empty batch")
	}
	seen := make(map[string]struct{}, len(bt.Ops))
	for _, o := range bt.Ops {
		if o.Key == "" {
			return errors.New("empty key")
		}
		if _, dup := seen[o.Key]; dup {
			return fmt.Errorf("key %q written twice", o.Key)
		}
		seen[o.Key] = struct{}{}
	}
	for _, c := range bt.Conditions {
		if c.Key == "" {
			return errors.New("condition on an empty key")
		}
		if strings.ContainsAny(c.Commit, " \t\r\n") {
			return fmt.Errorf("condition on %q: commit id %q has white space", c.Key, c.Commit)
		}
	}
	for _, l := range bt.Leases {
		if l.Key == "" || l.Token == "" {
			return errors.New("lease without key or token")
		}
	}
	return nil
}

// Bounds of one getMany script: about a thousand keys, or a mebibyte of
// key names.
const (
	getManyKeys  = 1000
	getManyBytes = 1 << 20
)

// GetMany reads the entries of keys with one script per part of at most
// 1000 keys (or 1 MiB of key names), each part consistent in itself, all
// parts sent in one pipeline: one round trip (backend.MultiGetter).
func (b *Backend) GetMany(ctx context.Context, name string, keys []string) ([]backend.Entry, error) {
	k := keysOf(name)
	op := fmt.Sprintf("get %d keys of %q", len(keys), name)
	if len(keys) == 0 {
		return []backend.Entry{}, nil
	}
	var parts [][]any
	for start := 0; start < len(keys); {
		end, size := start, 0
		for end < len(keys) && end-start < getManyKeys && (end == start || size+len(keys[end]) <= getManyBytes) {
			size += len(keys[end])
			end++
		}
		part := make([]any, end-start)
		for i, key := range keys[start:end] {
			part[i] = key
		}
		parts = append(parts, part)
		start = end
	}
	redisKeys := []string{k.data, k.revs, k.expiry}
	var cmds []*goredis.Cmd
	for attempt := 0; ; attempt++ {
		pipe := b.client.Pipeline()
		cmds = cmds[:0]
		for _, part := range parts {
			cmds = append(cmds, getManyScript.EvalSha(ctx, pipe, redisKeys, part...))
		}
		_, _ = pipe.Exec(ctx)
		// A pipelined EVALSHA has no NOSCRIPT fallback: load the script
		// and send again, once.
		if attempt == 0 && slices.ContainsFunc(cmds, func(c *goredis.Cmd) bool { return isNoScript(c.Err()) }) {
			if err := getManyScript.Load(ctx, b.client).Err(); err != nil {
				return nil, wrap(ctx, op, err)
			}
			continue
		}
		break
	}
	out := make([]backend.Entry, 0, len(keys))
	at := 0
	for i, cmd := range cmds {
		res, err := cmd.Slice()
		if err != nil {
			return nil, scriptFailed(ctx, op, k, err, nil, nil)
		}
		if len(res) != 3 {
			return nil, fmt.Errorf("redis: %s: script returned a malformed reply", op)
		}
		vals, _ := res[0].([]any)
		revs, _ := res[1].([]any)
		deadlines, _ := res[2].([]any)
		if len(vals) != len(parts[i]) || len(revs) != len(parts[i]) || len(deadlines) != len(parts[i]) {
			return nil, fmt.Errorf("redis: %s: script returned a malformed reply", op)
		}
		for j := range vals {
			key := keys[at+j]
			switch {
			case vals[j] == nil && revs[j] == nil:
				continue // not found
			case vals[j] == nil:
				// A revision without a value: damaged, as Get reports it.
				out = append(out, backend.Entry{Key: key})
				continue
			}
			val, _ := vals[j].(string)
			e := backend.Entry{Key: key, Value: []byte(val), Expires: parseDeadline(deadlines[j])}
			field, _ := revs[j].(string)
			e.Revision, e.Commit = parseWritten(field) // 0 when damaged
			out = append(out, e)
		}
		at += len(parts[i])
	}
	return out, nil
}

// isNoScript reports a NOSCRIPT error: the script is not in the server's
// cache.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
