package sqlite_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// waitLimit bounds waits for things that should happen promptly, so that a
// broken backend fails a test instead of hanging it.
const waitLimit = 10 * time.Second

func put(kv ...string) backend.Batch {
	var b backend.Batch
	for i := 0; i+1 < len(kv); i += 2 {
		b.Ops = append(b.Ops, backend.Op{Key: kv[i], Value: []byte(kv[i+1])})
	}
	b.Codec = "json"
	return b
}

func mustCommit(t *testing.T, s backend.Store, name string, b backend.Batch) backend.Head {
	t.Helper()
	h, err := s.Commit(context.Background(), name, b)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return h
}

func TestDefaultsOfferEveryCapability(t *testing.T) {
	b := openBackend(t, filepath.Join(t.TempDir(), "c.db"), nil)
	want := backend.Capabilities{AtomicPublish: true, LockAwareCommit: true, ChangeLog: true, ReleaseNotify: true, Expiry: true}
	if got := backend.CapabilitiesOf(b); got != want {
		t.Fatalf("CapabilitiesOf = %+v, want %+v", got, want)
	}
}

func TestOptionsAreCopied(t *testing.T) {
	opts := &sqlite.Options{}
	b := openBackend(t, filepath.Join(t.TempDir(), "c.db"), opts)
	opts.DisableChangeLog = true
	if !b.Capabilities().ChangeLog {
		t.Fatal("changing Options after Open changed the backend")
	}
}

func TestDisabledAtomicPublishIsOff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	b := openBackend(t, path, &sqlite.Options{DisableAtomicPublish: true})
	if backend.CapabilitiesOf(b).AtomicPublish {
		t.Fatal("AtomicPublish reported")
	}
	if _, err := b.CommitAndPublish(context.Background(), "c", put("k", "v"), "ch"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CommitAndPublish = %v, want ErrUnsupported", err)
	}
	if h, _ := b.Revision(context.Background(), "c"); h.Revision != 0 {
		t.Fatal("a refused CommitAndPublish wrote")
	}
	if n := countRows(t, path, "contextd_messages"); n != 0 {
		t.Fatalf("a refused CommitAndPublish published %d messages", n)
	}
}

func TestDisabledChangeLogKeepsNoLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	b := openBackend(t, path, &sqlite.Options{DisableChangeLog: true})
	if backend.CapabilitiesOf(b).ChangeLog {
		t.Fatal("ChangeLog reported")
	}
	h := mustCommit(t, b, "c", put("k", "v"))
	if _, err := b.ChangesSince(context.Background(), "c", h.Epoch, 0); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ChangesSince = %v, want ErrUnsupported", err)
	}
	if n := countRows(t, path, "contextd_changes"); n != 0 {
		t.Fatalf("%d events logged with the change log switched off", n)
	}
	// A Backend with the log on, on the same file, sees the gap and says
	// the log does not reach back: a snapshot must be loaded.
	on := openBackend(t, path, nil)
	if _, err := on.ChangesSince(context.Background(), "c", h.Epoch, 0); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("ChangesSince over a commit made without the log = %v, want ErrLogTruncated", err)
	}
}

func TestDisabledReleaseNotifyIsOff(t *testing.T) {
	b := openBackend(t, filepath.Join(t.TempDir(), "c.db"), &sqlite.Options{DisableReleaseNotify: true})
	if backend.CapabilitiesOf(b).ReleaseNotify {
		t.Fatal("ReleaseNotify reported")
	}
	if _, _, err := b.WatchRelease(context.Background(), "c", "k"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("WatchRelease = %v, want ErrUnsupported", err)
	}
}

// calls exercises every method of the backend once.
func calls(b *sqlite.Backend) map[string]func(ctx context.Context) error {
	lease := locker.Lease{Name: "c", Key: "k", Token: "t"}
	return map[string]func(ctx context.Context) error{
		"Load":     func(ctx context.Context) error { _, err := b.Load(ctx, "c"); return err },
		"Get":      func(ctx context.Context) error { _, err := b.Get(ctx, "c", "k"); return err },
		"Revision": func(ctx context.Context) error { _, err := b.Revision(ctx, "c"); return err },
		"Commit":   func(ctx context.Context) error { _, err := b.Commit(ctx, "c", put("k", "v")); return err },
		"CommitAndPublish": func(ctx context.Context) error {
			_, err := b.CommitAndPublish(ctx, "c", put("k", "v"), "ch")
			return err
		},
		"ChangesSince": func(ctx context.Context) error { _, err := b.ChangesSince(ctx, "c", "", 0); return err },
		"TryAcquire":   func(ctx context.Context) error { _, err := b.TryAcquire(ctx, "c", "k", time.Second); return err },
		"Release":      func(ctx context.Context) error { return b.Release(ctx, lease) },
		"Extend":       func(ctx context.Context) error { return b.Extend(ctx, lease, time.Second) },
		"WatchRelease": func(ctx context.Context) error {
			_, stop, err := b.WatchRelease(ctx, "c", "k")
			if stop != nil {
				stop()
			}
			return err
		},
		"Publish":   func(ctx context.Context) error { return b.Publish(ctx, "ch", []byte("x")) },
		"Subscribe": func(ctx context.Context) error { _, err := b.Subscribe(ctx, "ch"); return err },
	}
}

func TestEveryMethodHonoursADoneContext(t *testing.T) {
	b := openBackend(t, filepath.Join(t.TempDir(), "c.db"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, call := range calls(b) {
		if err := call(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("%s = %v, want context.Canceled", name, err)
		}
	}
	if h, _ := b.Revision(context.Background(), "c"); h.Revision != 0 {
		t.Fatal("a call with a done ctx wrote")
	}
}

func TestEveryMethodFailsAfterClose(t *testing.T) {
	b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Subscribe(context.Background(), "ch")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, call := range calls(b) {
		if err := call(context.Background()); !errors.Is(err, sqlite.ErrClosed) || !errors.Is(err, broadcaster.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.Next(context.Background()); !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
}

func TestNilContextIsAnErrorNotAPanic(t *testing.T) {
	b := openBackend(t, filepath.Join(t.TempDir(), "c.db"), nil)
	for name, call := range calls(b) {
		if err := call(nil); err == nil {
			t.Errorf("%s(nil ctx) succeeded", name)
		}
	}
	//lint:ignore SA1012 a nil ctx is the bad input under test
	if _, err := sqlite.Open(nil, filepath.Join(t.TempDir(), "d.db"), nil); err == nil {
		t.Error("Open(nil ctx) succeeded")
	}
	s, err := b.Subscribe(context.Background(), "ch")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	//lint:ignore SA1012 a nil ctx is the bad input under test
	if _, err := s.Next(nil); err == nil {
		t.Error("Next(nil ctx) succeeded")
	}
}

func TestOpenBadPaths(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	_, err := sqlite.Open(ctx, filepath.Join(dir, "missing", "c.db"), nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in a directory that does not exist = %v, want an error matching fs.ErrNotExist that says so", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created the missing directory: %v", err)
	}

	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte(strings.Repeat("not a database, just some text\n", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(ctx, text, nil); !errors.Is(err, sqlite.ErrNotDatabase) {
		t.Errorf("Open of a text file = %v, want ErrNotDatabase", err)
	}
	if b, _ := os.ReadFile(text); !strings.HasPrefix(string(b), "not a database") {
		t.Error("Open changed the text file")
	}

	for _, path := range []string{"", ":memory:", "file:" + filepath.Join(dir, "u.db"), filepath.Join(dir, "a?b.db"), dir} {
		if b, err := sqlite.Open(ctx, path, nil); err == nil {
			b.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

func TestOpenReadOnlyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	b, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, b, "c", put("k", "v")) // a valid file with tables
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		// Root may write any file: check as an unprivileged user, in a
		// child process.
		if got := openAsNobody(t, path, 0o777, 0o444); got != "ErrReadOnly" {
			t.Errorf("Open of a read-only file as an unprivileged user: %s, want ErrReadOnly", got)
		}
		// A writable file in a directory where the -wal and -shm files
		// cannot be created cannot be used either.
		if got := openAsNobody(t, path, 0o755, 0o666); got != "ErrReadOnly" {
			t.Errorf("Open of a file in a read-only directory as an unprivileged user: %s, want ErrReadOnly", got)
		}
		// The same file, writable, opens: the child itself works.
		if got := openAsNobody(t, path, 0o777, 0o666); got != "ok" {
			t.Errorf("Open of a writable file as an unprivileged user: %s, want ok", got)
		}
		return
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if b, err := sqlite.Open(context.Background(), path, nil); !errors.Is(err, sqlite.ErrReadOnly) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("Open of a read-only file = %v, want ErrReadOnly", err)
	}
}
