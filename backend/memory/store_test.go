package memory_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

func TestLoadOfUnwrittenContextIsEmpty(t *testing.T) {
	b := newBackend(t, nil)
	snap, _ := mustLoad(t, b, "never")
	if snap.Epoch != "" || snap.Revision != 0 || snap.Codec != "" || len(snap.Entries) != 0 {
		t.Fatalf("Load = %+v, want empty", snap)
	}
	h, err := b.Revision(context.Background(), "never")
	if err != nil || h != (backend.Head{}) {
		t.Fatalf("Revision = %+v, %v; want zero head", h, err)
	}
	if _, err := b.Get(context.Background(), "never", "k"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
}

func TestCommitStampsRevisionsAndCreatesEpoch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	h1 := mustCommit(t, b, "c", put("a", "1", "b", "2"))
	if h1.Revision != 1 || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(h1.Epoch) {
		t.Fatalf("first head = %+v, want revision 1 and a 16-hex epoch", h1)
	}
	h2 := mustCommit(t, b, "c", backend.Batch{Ops: []backend.Op{{Key: "a", Value: []byte("3")}, {Key: "b", Delete: true}}})
	if h2.Epoch != h1.Epoch || h2.Revision != 2 || h2.Parent != h1.Commit || h2.Commit == "" || h2.Commit == h1.Commit {
		t.Fatalf("second head = %+v, want same epoch, revision 2, a new commit id after %q", h2, h1.Commit)
	}
	snap, m := mustLoad(t, b, "c")
	if snap.Head != h2 || len(m) != 1 || string(m["a"].Value) != "3" || m["a"].Revision != 2 {
		t.Fatalf("Load = %+v", snap)
	}
	e, err := b.Get(ctx, "c", "a")
	if err != nil || string(e.Value) != "3" || e.Revision != 2 || e.Key != "a" {
		t.Fatalf("Get(a) = %+v, %v", e, err)
	}
	if _, err := b.Get(ctx, "c", "b"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get(deleted) = %v, want ErrNotFound", err)
	}
	if h, err := b.Revision(ctx, "c"); err != nil || h != h2 {
		t.Fatalf("Revision = %+v, %v; want %+v", h, err, h2)
	}
}

func TestEmptyValueReadsBackAsEmptyNotMissing(t *testing.T) {
	b := newBackend(t, nil)
	mustCommit(t, b, "c", backend.Batch{Ops: []backend.Op{{Key: "k"}}})
	e, err := b.Get(context.Background(), "c", "k")
	if err != nil || e.Value == nil || len(e.Value) != 0 {
		t.Fatalf("Get = %+v, %v; want a non-nil empty value", e, err)
	}
}

func TestContextsAreIndependent(t *testing.T) {
	b := newBackend(t, nil)
	ha := mustCommit(t, b, "a", put("k", "a"))
	mustCommit(t, b, "a", put("k", "a2"))
	hb := mustCommit(t, b, "b", put("k", "b"))
	if hb.Revision != 1 || hb.Epoch == ha.Epoch {
		t.Fatalf("head of b = %+v, want its own epoch at revision 1 (a: %+v)", hb, ha)
	}
	_, m := mustLoad(t, b, "b")
	if string(m["k"].Value) != "b" {
		t.Fatalf("b sees %q", m["k"].Value)
	}
}

func TestStoreCopiesValuesBothWays(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	in := []byte("orig")
	mustCommit(t, b, "c", backend.Batch{Ops: []backend.Op{{Key: "k", Value: in}}})
	copy(in, "XXXX")

	e, _ := b.Get(ctx, "c", "k")
	copy(e.Value, "YYYY")
	_, m := mustLoad(t, b, "c")
	copy(m["k"].Value, "ZZZZ")

	e, _ = b.Get(ctx, "c", "k")
	if string(e.Value) != "orig" {
		t.Fatalf("stored value = %q, want it unchanged by callers", e.Value)
	}
}

func TestCommitRejectsMalformedBatches(t *testing.T) {
	b := newBackend(t, nil)
	cases := map[string]backend.Batch{
		"no ops":              {},
		"empty key":           put("", "v"),
		"key twice":           put("k", "1", "k", "2"),
		"empty condition key": {Ops: put("k", "v").Ops, Conditions: []backend.Condition{{Key: ""}}},
	}
	for name, bt := range cases {
		if _, err := b.Commit(context.Background(), "c", bt); err == nil || errors.Is(err, backend.ErrConflict) {
			t.Errorf("%s: Commit = %v, want a validation error", name, err)
		}
	}
	if snap, _ := mustLoad(t, b, "c"); snap.Revision != 0 {
		t.Fatalf("revision %d after rejected batches, want 0", snap.Revision)
	}
}

func TestCommitConditions(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	mustCommit(t, b, "c", put("a", "1")) // a@1

	// A batch fails whole if one condition does not hold.
	bt := put("a", "2", "b", "2")
	bt.Conditions = []backend.Condition{{Key: "a", Revision: 1}, {Key: "b", Revision: 7}}
	_, err := b.Commit(ctx, "c", bt)
	if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("Commit = %v, want ErrConflict naming key b", err)
	}
	if snap, m := mustLoad(t, b, "c"); snap.Revision != 1 || string(m["a"].Value) != "1" || len(m) != 1 {
		t.Fatalf("after conflict: %+v, want nothing written", snap)
	}

	// Revision 0 means absent; the current revision matches.
	bt.Conditions = []backend.Condition{{Key: "a", Revision: 1}, {Key: "b", Revision: 0}}
	if h := mustCommit(t, b, "c", bt); h.Revision != 2 {
		t.Fatalf("head = %+v", h)
	}
	bt.Conditions = []backend.Condition{{Key: "b", Revision: 0}}
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, backend.ErrConflict) {
		t.Fatalf("condition absent on present key: %v, want ErrConflict", err)
	}
}

func TestCommitCodec(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	bt := put("k", "v")
	bt.Codec = "json"
	mustCommit(t, b, "c", bt)
	if snap, _ := mustLoad(t, b, "c"); snap.Codec != "json" {
		t.Fatalf("codec = %q, want json recorded", snap.Codec)
	}
	bt.Codec = "msgpack"
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, backend.ErrCodecMismatch) {
		t.Fatalf("Commit with other codec = %v, want ErrCodecMismatch", err)
	}
	bt.Codec = "" // no codec claimed: accepted, and the record stays
	mustCommit(t, b, "c", bt)
	if snap, _ := mustLoad(t, b, "c"); snap.Codec != "json" || snap.Revision != 2 {
		t.Fatalf("snapshot = %+v", snap)
	}

	// A context first written without a codec records the first one given.
	mustCommit(t, b, "d", put("k", "v"))
	bt.Codec = "msgpack"
	mustCommit(t, b, "d", bt)
	if snap, _ := mustLoad(t, b, "d"); snap.Codec != "msgpack" {
		t.Fatalf("codec = %q, want msgpack", snap.Codec)
	}
}

func TestLockAwareCommit(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	lease, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// Another writer without the lease is refused, naming the key.
	_, err = b.Commit(ctx, "c", put("free", "1", "k", "1"))
	if !errors.Is(err, backend.ErrLocked) || !strings.Contains(err.Error(), `"k"`) {
		t.Fatalf("Commit without lease = %v, want ErrLocked naming k", err)
	}
	if snap, _ := mustLoad(t, b, "c"); snap.Revision != 0 {
		t.Fatal("refused commit wrote something")
	}

	// The holder writes.
	bt := put("k", "2")
	bt.Leases = []locker.Lease{lease}
	mustCommit(t, b, "c", bt)

	// A lease of another key may travel along; its token opens only its key.
	other, err := b.TryAcquire(ctx, "c", "other", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bt = put("k", "3")
	bt.Leases = []locker.Lease{other}
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, backend.ErrLocked) {
		t.Fatalf("Commit with another key's lease = %v, want ErrLocked", err)
	}

	// A lease no longer held refuses the whole batch, even for free keys.
	if err := b.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	bt = put("free", "4")
	bt.Leases = []locker.Lease{lease}
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Commit with released lease = %v, want ErrNotHeld", err)
	}

	// Locks of other contexts do not matter.
	mustCommit(t, b, "elsewhere", put("k", "1"))
}

func TestCommitHonoursDoneContext(t *testing.T) {
	b := newBackend(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Commit(ctx, "c", put("k", "v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit = %v, want context.Canceled", err)
	}
	if snap, _ := mustLoad(t, b, "c"); snap.Revision != 0 {
		t.Fatal("commit with a done ctx wrote something")
	}
}

func TestConcurrentConditionalCommitsHaveOneWinner(t *testing.T) {
	const n = 32
	b := newBackend(t, nil)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      int
		conflicts int
		others    []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bt := put("k", string(rune('a'+i%26)))
			bt.Conditions = []backend.Condition{{Key: "k", Revision: 0}}
			<-start
			_, err := b.Commit(context.Background(), "race", bt)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, backend.ErrConflict):
				conflicts++
			default:
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 || conflicts != n-1 || len(others) != 0 {
		t.Fatalf("wins %d, conflicts %d, other errors %v; want 1 and %d", wins, conflicts, others, n-1)
	}
	if snap, _ := mustLoad(t, b, "race"); snap.Revision != 1 {
		t.Fatalf("revision %d, want 1", snap.Revision)
	}
}

func TestConcurrentCommitsIncrementRevisionByOne(t *testing.T) {
	const n = 50
	b := newBackend(t, nil)
	var wg sync.WaitGroup
	heads := make(chan uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := b.Commit(context.Background(), "c", put(string(rune('a'+i%26)), "v"))
			if err != nil {
				t.Error(err)
				return
			}
			heads <- h.Revision
		}()
	}
	wg.Wait()
	close(heads)
	seen := make(map[uint64]bool)
	for r := range heads {
		if seen[r] || r < 1 || r > n {
			t.Fatalf("revision %d repeated or out of 1..%d", r, n)
		}
		seen[r] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct revisions, want %d", len(seen), n)
	}
}

func TestCommitAndPublishPublishesTheEvent(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	s := mustSubscribe(t, b, "ch")
	bt := put("k", "v", "big", "0123456789")
	bt.Ops = append(bt.Ops, backend.Op{Key: "gone", Delete: true})
	bt.Origin = "me"
	bt.EventValueLimit = 5
	h, err := b.CommitAndPublish(ctx, "c", bt, "ch")
	if err != nil {
		t.Fatal(err)
	}
	e, err := backend.DecodeEvent(next(t, s).Payload)
	if err != nil {
		t.Fatal(err)
	}
	if e.Head != h || e.Origin != "me" || len(e.Changes) != 3 ||
		string(e.Changes[0].Value) != "v" || !e.Changes[1].Omitted || !e.Changes[2].Deleted {
		t.Fatalf("event = %+v, head %+v", e, h)
	}
	// It is also a commit like any other.
	if snap, m := mustLoad(t, b, "c"); snap.Head != h || string(m["big"].Value) != "0123456789" {
		t.Fatalf("snapshot = %+v", snap)
	}
}

func TestCommitAndPublishKeepsRevisionOrder(t *testing.T) {
	const writers, each = 8, 25
	b := newBackend(t, nil)
	s := mustSubscribe(t, b, "ch")
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := b.CommitAndPublish(context.Background(), "c", put(string(rune('a'+w)), "v"), "ch"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for want := uint64(1); want <= writers*each; want++ {
		m := next(t, s)
		if m.Loss {
			t.Fatalf("unexpected loss at revision %d", want)
		}
		e, err := backend.DecodeEvent(m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if e.Revision != want {
			t.Fatalf("event revision %d, want %d", e.Revision, want)
		}
	}
}

func TestCommitAndPublishFailureWritesAndPublishesNothing(t *testing.T) {
	b := newBackend(t, nil)
	s := mustSubscribe(t, b, "ch")
	bt := put("k", "v")
	bt.Conditions = []backend.Condition{{Key: "k", Revision: 3}}
	if _, err := b.CommitAndPublish(context.Background(), "c", bt, "ch"); !errors.Is(err, backend.ErrConflict) {
		t.Fatalf("CommitAndPublish = %v, want ErrConflict", err)
	}
	expectNothing(t, s)
}

func TestLeaseWithoutTokenIsNotHeld(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l.Token = ""
	bt := put("k", "v")
	bt.Leases = []locker.Lease{l}
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Commit with a token-less lease = %v, want ErrNotHeld", err)
	}
}

func TestCommitAndPublishRacesWithSubscribers(t *testing.T) {
	// Run under -race: publishing from commits must not race with
	// subscriptions coming and going.
	b := newBackend(t, nil)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for range 100 {
			if _, err := b.CommitAndPublish(context.Background(), "c", put("k", "v"), "ch"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 100 {
			if err := b.Publish(context.Background(), "ch", []byte("x")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 100 {
			s, err := b.Subscribe(context.Background(), "ch")
			if err != nil {
				t.Error(err)
				return
			}
			_ = s.Close()
		}
	}()
	wg.Wait()
}

// TestSkipOwnEchoes: a subscription that skips an origin's echoes gets
// every other commit's event, those Published with that origin's bytes
// included, in order; other subscriptions get them all.
func TestSkipOwnEchoes(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	mine, other := mustSubscribe(t, b, "ch"), mustSubscribe(t, b, "ch")
	mine.(interface{ SkipOwnEchoes(string) }).SkipOwnEchoes("me")
	var heads []backend.Head
	for i, origin := range []string{"me", "you", "me", ""} {
		bt := put("k", strconv.Itoa(i))
		bt.Origin = origin
		h, err := b.CommitAndPublish(ctx, "c", bt, "ch")
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h)
	}
	publish(t, b, "ch", "published")
	for _, want := range []int{1, 3} {
		if e, err := backend.DecodeEvent(next(t, mine).Payload); err != nil || e.Head != heads[want] {
			t.Fatalf("skipping subscription: event %+v (%v), want the head of commit %d, %+v", e, err, want, heads[want])
		}
	}
	expectPayload(t, mine, "published")
	expectNothing(t, mine)
	for i := range heads {
		if e, err := backend.DecodeEvent(next(t, other).Payload); err != nil || e.Head != heads[i] {
			t.Fatalf("other subscription: event %+v (%v), want commit %d's", e, err, i)
		}
	}
	expectPayload(t, other, "published")
}
