package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/locker"
)

func TestOpenBadURL(t *testing.T) {
	for _, u := range []string{"postgres://host:notaport/db", "postgres://%zz", "port=abc"} {
		b, err := postgres.Open(t.Context(), u, nil)
		if err == nil {
			b.Close()
			t.Errorf("Open(%q) succeeded", u)
			continue
		}
		if !strings.Contains(err.Error(), "parse URL") {
			t.Errorf("Open(%q) = %v; want an error saying the URL does not parse", u, err)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	// Nothing listens on a port just freed: connection refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if b, err := postgres.Open(ctx, "postgres://postgres@"+addr+"/db?sslmode=disable", nil); err == nil {
		b.Close()
		t.Fatal("Open of a port nobody listens on succeeded")
	} else if ctx.Err() != nil {
		t.Fatalf("Open of a refused port took until its ctx ended: %v", err)
	}
}

// TestOpenStalledServer: a server that accepts connections and never
// answers must not hang Open past its ctx.
func TestOpenStalledServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	defer func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		b, err := postgres.Open(ctx, "postgres://postgres@"+l.Addr().String()+"/db?sslmode=disable", nil)
		if err == nil {
			b.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Open of a stalled server = %v; want an error matching context.DeadlineExceeded", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Open of a stalled server did not return 20 s after its ctx ended")
	}
}

func TestBadOptions(t *testing.T) {
	for _, schema := range []string{"has space", "1digit", "semi;colon", `quote"`, strings.Repeat("s", 64)} {
		if b, err := postgres.Open(t.Context(), "postgres://localhost/x", &postgres.Options{Schema: schema}); err == nil {
			b.Close()
			t.Errorf("Open with schema %q succeeded", schema)
		}
		if _, err := postgres.New(&pgxpool.Pool{}, &postgres.Options{Schema: schema}); err == nil {
			t.Errorf("New with schema %q succeeded", schema)
		}
	}
	if _, err := postgres.New(nil, nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestSchemaVersionRefused: a schema of a version this package does not
// know is refused, by Open and by the first call of a Backend from New,
// and never changed.
func TestSchemaVersionRefused(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	b, err := postgres.Open(ctx, db.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := db.cluster.Exec(ctx, db.name, `UPDATE contextd.schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if b, err := postgres.Open(ctx, db.url, nil); !errors.Is(err, postgres.ErrSchemaVersion) {
		if err == nil {
			b.Close()
		}
		t.Fatalf("Open of a schema of version 99 = %v; want ErrSchemaVersion", err)
	} else if !strings.Contains(err.Error(), "99") {
		t.Errorf("the error does not name the version found: %v", err)
	}
	nb := newBackend(t, db, nil)
	if _, err := nb.Load(ctx, "x"); !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Errorf("Load through New on a schema of version 99 = %v; want ErrSchemaVersion", err)
	}
	if v, err := db.cluster.QueryInt(ctx, db.name, `SELECT version FROM contextd.schema_version`); err != nil || v != 99 {
		t.Errorf("the refused schema's version is now %d (%v); it must be left alone", v, err)
	}
	// Another schema in the same database is a tenant of its own.
	other := newBackend(t, db, &postgres.Options{Schema: "tenant_b"})
	if _, err := other.Commit(ctx, "x", backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte("1")}}}); err != nil {
		t.Errorf("a backend with another schema on the same database: %v", err)
	}
}

// TestSchemasSeparateTenants: backends with different schemas share a
// database but neither data, nor locks, nor notifications.
func TestSchemasSeparateTenants(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a := newBackend(t, db, &postgres.Options{Schema: "tenant_a"})
	b := newBackend(t, db, &postgres.Options{Schema: "tenant_b"})
	subB, err := b.Subscribe(ctx, backend.DefaultChannel("shared"))
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	if _, err := a.CommitAndPublish(ctx, "shared", backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte("a")}}}, backend.DefaultChannel("shared")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.TryAcquire(ctx, "shared", "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	if snap, err := b.Load(ctx, "shared"); err != nil || snap.Revision != 0 || len(snap.Entries) != 0 {
		t.Errorf("tenant b sees tenant a's context: %+v, %v", snap, err)
	}
	if _, err := b.TryAcquire(ctx, "shared", "k", time.Minute); err != nil {
		t.Errorf("tenant a's lock blocks tenant b: %v", err)
	}
	// b publishes on the same channel name: subB must get b's message
	// first, not a's event.
	if err := b.Publish(ctx, backend.DefaultChannel("shared"), []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if m, err := nextMsg(ctx, subB); err != nil || string(m.Payload) != "from b" {
		t.Errorf("tenant b's subscriber got %q, %v; want only tenant b's message", m.Payload, err)
	}
}

// TestLongNames: context and channel names longer than a NOTIFY channel
// name (63 bytes) are hashed; two that share their first 63 bytes (and
// more) stay apart.
func TestLongNames(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	prefix := strings.Repeat("long-context-name/", 8) // 144 bytes
	n1, n2 := prefix+"one", prefix+"two"
	w := newBackend(t, db, nil)
	r := newBackend(t, db, nil)
	sub1, err := r.Subscribe(ctx, backend.DefaultChannel(n1))
	if err != nil {
		t.Fatal(err)
	}
	defer sub1.Close()
	sub2, err := r.Subscribe(ctx, backend.DefaultChannel(n2))
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	for _, n := range []string{n2, n1} {
		if _, err := w.CommitAndPublish(ctx, n, backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte(n[len(n)-3:])}}, EventValueLimit: 100}, backend.DefaultChannel(n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		sub  broadcaster.Subscription
		want string
	}{{sub1, "one"}, {sub2, "two"}} {
		m, err := nextMsg(ctx, c.sub)
		if err != nil {
			t.Fatal(err)
		}
		e, err := backend.DecodeEvent(m.Payload)
		if err != nil || len(e.Changes) != 1 || string(e.Changes[0].Value) != c.want || e.Revision != 1 {
			t.Errorf("subscriber of %q got %+v, %v; want its own context's first event (value %q)", c.want, e, err, c.want)
		}
	}
	// Locks and their release notifications too.
	lease, err := w.TryAcquire(ctx, n1, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.TryAcquire(ctx, n2, "k", time.Minute); err != nil {
		t.Errorf("the lock on k in %q blocks k in %q: %v", n1, n2, err)
	}
	notify, stop, err := r.WatchRelease(ctx, n1, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := w.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notify:
	case <-time.After(convergeTimeout):
		t.Fatal("no release notification for a lock of a long-named context")
	}
	if _, err := w.Load(ctx, strings.Repeat("x", postgres.MaxNameLen+1)); err == nil {
		t.Error("Load of a name longer than MaxNameLen succeeded")
	}
	if _, err := w.Commit(ctx, "x", backend.Batch{Ops: []backend.Op{{Key: strings.Repeat("k", postgres.MaxKeyLen+1), Value: []byte("1")}}}); err == nil {
		t.Error("Commit of a key longer than MaxKeyLen succeeded")
	}
}

// TestLargeEvents: an event larger than NOTIFY's 8000 bytes still reaches
// subscribers whole (as a pointer into the change log), with the change
// log on or off, and so does a large Publish; binary values and keys
// survive.
func TestLargeEvents(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	big := bytes.Repeat([]byte{0, 1, 2, 0xff, '\n'}, 6000) // 30 kB, NUL bytes, not UTF-8
	for _, opts := range []*postgres.Options{nil, {DisableChangeLog: true}} {
		w, r := newBackend(t, db, opts), newBackend(t, db, opts)
		name := "large"
		if opts != nil {
			name = "large-nolog"
		}
		ch := backend.DefaultChannel(name)
		sub, err := r.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		bt := backend.Batch{Ops: []backend.Op{{Key: "bin\x00key", Value: big}, {Key: "small", Value: []byte("s")}}, Origin: "o", EventValueLimit: 1 << 20}
		head, err := w.CommitAndPublish(ctx, name, bt, ch)
		if err != nil {
			t.Fatal(err)
		}
		m, err := nextMsg(ctx, sub)
		if err != nil || m.Loss {
			t.Fatalf("after a commit with a %d-byte event: %+v, %v", len(big), m.Loss, err)
		}
		e, err := backend.DecodeEvent(m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if e.Head != head || len(e.Changes) != 2 || e.Changes[0].Key != "bin\x00key" || !bytes.Equal(e.Changes[0].Value, big) {
			t.Errorf("the large event arrived as head %+v with %d changes; want head %+v and the value whole", e.Head, len(e.Changes), head)
		}
		got, err := r.Get(ctx, name, "bin\x00key")
		if err != nil || !bytes.Equal(got.Value, big) {
			t.Errorf("Get of the binary key: %d bytes, %v", len(got.Value), err)
		}
		if err := w.Publish(ctx, ch, big); err != nil {
			t.Fatal(err)
		}
		if m, err := nextMsg(ctx, sub); err != nil || !bytes.Equal(m.Payload, big) {
			t.Errorf("a published %d-byte payload arrived as %d bytes, %v", len(big), len(m.Payload), err)
		}
	}
	// Through contextd: a 100 kB value, carried in the event, reaches
	// another instance.
	cs := openInstances[string](t, db, "large-cx", 2, &contextd.Options{EventValueLimit: 1 << 20})
	watch := cs[1].Watch(ctx)
	value := strings.Repeat("v", 100<<10)
	if err := cs[0].UpdateContext(ctx, "k", value); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-watch:
		if c.Key != "k" || c.Value != value {
			t.Errorf("the other instance saw key %q with %d bytes; want k with %d", c.Key, len(c.Value), len(value))
		}
	case <-time.After(convergeTimeout):
		t.Fatal("the other instance never saw the 100 kB value")
	}
	if st := cs[1].Stats(); st.Losses != 0 || st.Snapshots != 1 {
		t.Errorf("the large event did not arrive as an event: %+v", st)
	}
}

func TestCloseIdempotentAndPoolKept(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b, err := postgres.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("Next of a subscription of a closed Backend = %v; want ErrClosed", err)
	}
	if _, err := b.Load(ctx, "c"); !errors.Is(err, postgres.ErrClosed) {
		t.Errorf("Load after Close = %v; want ErrClosed", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Errorf("the caller's pool was closed with the Backend: %v", err)
	}
	if n, err := db.cluster.CountConnections(ctx, db.name, listenerApp); err != nil || n != 0 {
		t.Errorf("%d listening connections left after Close (%v)", n, err)
	}
	opened, err := postgres.Open(ctx, db.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := opened.Pool()
	opened.Close()
	if err := p.Ping(ctx); err == nil {
		t.Error("the pool Open made is still open after Close")
	}
}

// TestConcurrentAttemptsOneBackend: attempts on one lock through one
// Backend that overlap share a round trip; still exactly one wins, and a
// cancelled attempt does not make the others fail.
func TestConcurrentAttemptsOneBackend(t *testing.T) {
	db := newDB(t)
	b := newBackend(t, db, nil)
	const n = 16
	errs := make(chan error, n)
	start := make(chan struct{})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for i := range n {
		go func() {
			<-start
			ctx := t.Context()
			if i == 0 {
				ctx = cancelled
			}
			_, err := b.TryAcquire(ctx, "flight", "k", time.Minute)
			errs <- err
		}()
	}
	close(start)
	won := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			won++
		case errors.Is(err, context.Canceled), errors.Is(err, locker.ErrNotAcquired):
		default:
			t.Errorf("TryAcquire: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d overlapping attempts through one Backend won, want 1", won, n)
	}
}
