package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

const (
	processContext = "processes"
	crashContext   = "crash"
)

// TestProcessesShareOneFile runs several OS processes on one file, each
// incrementing one counter with Modify and writing keys of its own: the
// counter ends at exactly the number of increments, every key is there,
// the revision counts every commit, and every process converges to all of
// it.
func TestProcessesShareOneFile(t *testing.T) {
	procs, n := 4, 50
	if raceEnabled {
		procs, n = 3, 20
	}
	total := procs * n
	path := filepath.Join(t.TempDir(), "procs.db")
	type result struct {
		out string
		err error
	}
	results := make(chan result, procs)
	for id := range procs {
		cmd := childCommand(t, "", "counter", "CHILD_PATH="+path, fmt.Sprint("CHILD_ID=", id),
			fmt.Sprint("CHILD_N=", n), fmt.Sprint("CHILD_TOTAL=", total))
		go func() {
			out, err := cmd.Output()
			results <- result{string(out), err}
		}()
	}
	for range procs {
		r := <-results
		if r.err != nil {
			t.Errorf("child: %v (output %q)", r.err, r.out)
			continue
		}
		if want := fmt.Sprintf("converged %d %d", total, total); strings.TrimSpace(r.out) != want {
			t.Errorf("child printed %q, want %q", r.out, want)
		}
	}
	if t.Failed() {
		return
	}
	snap, err := openBackend(t, path, nil).Load(context.Background(), processContext)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(2 * total); snap.Revision != want {
		t.Errorf("revision %d, want %d (one commit per increment and per key)", snap.Revision, want)
	}
	got := map[string]string{}
	for _, e := range snap.Entries {
		got[e.Key] = string(e.Value)
	}
	if got["counter"] != strconv.Itoa(total) {
		t.Errorf("counter = %s, want %d", got["counter"], total)
	}
	for id := range procs {
		for i := range n {
			if k := fmt.Sprintf("p%d.%d", id, i); got[k] != strconv.Itoa(i) {
				t.Errorf("%s = %q, want %d", k, got[k], i)
			}
		}
	}
	if len(got) != total+1 {
		t.Errorf("%d keys, want %d", len(got), total+1)
	}
}

// ack is one acknowledgement printed by the child of TestKillMidTransaction.
type ack struct {
	i, rev uint64
	commit string
}

// TestKillMidTransaction kills (SIGKILL) a process that commits
// multi-key transactions in a loop, three times over, and checks after
// each kill that nothing acknowledged was lost and nothing was half
// applied: every snapshot shows whole transactions, revisions are
// contiguous, the change log and the message log hold exactly one event
// per commit, and the file is intact.
func TestKillMidTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	for round := range 3 {
		last := runAndKill(t, path, 10+rand.N(60))
		checkWhole(t, path, round, last)
	}
}

// runAndKill starts the txloop child, kills it once it has acknowledged
// acks commits, and returns the last acknowledgement it printed before it
// died.
func runAndKill(t *testing.T, path string, acks int) ack {
	t.Helper()
	cmd := childCommand(t, "", "txloop", "CHILD_PATH="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last ack
	seen := 0
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var a ack
		if _, err := fmt.Sscanf(sc.Text(), "ack %d %d %s", &a.i, &a.rev, &a.commit); err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		if last.i != 0 && a.i != last.i+1 {
			t.Fatalf("child acknowledged %d after %d", a.i, last.i)
		}
		last = a
		// Acknowledgements the child printed before it died still count:
		// read on to the end of the pipe.
		if seen++; seen == acks && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	if err := cmd.Wait(); !killed || err == nil {
		t.Fatalf("child ended by itself (%v) after %d acknowledgements, want it killed", err, seen)
	}
	return last
}

// checkWhole checks the file after a kill against the last acknowledged
// commit.
func checkWhole(t *testing.T, path string, round int, last ack) {
	t.Helper()
	ctx := context.Background()
	b := openBackend(t, path, nil)
	snap, err := b.Load(ctx, crashContext)
	if err != nil {
		t.Fatal(err)
	}
	// The commit in flight when the child died is either whole or absent.
	if snap.Revision != last.rev && snap.Revision != last.rev+1 {
		t.Fatalf("round %d: revision %d after the last acknowledged %d", round, snap.Revision, last.rev)
	}
	if snap.Revision == last.rev && snap.Commit != last.commit {
		t.Fatalf("round %d: head commit %q, the last acknowledged is %q", round, snap.Commit, last.commit)
	}
	byKey := map[string]backend.Entry{}
	for _, e := range snap.Entries {
		byKey[e.Key] = e
	}
	want := strconv.FormatUint(snap.Revision, 10)
	for _, k := range []string{"a", "b", "c"} {
		if e := byKey[k]; string(e.Value) != want || e.Revision != snap.Revision {
			t.Fatalf("round %d: %s = %q@%d in a snapshot at revision %d: half a transaction", round, k, e.Value, e.Revision, snap.Revision)
		}
	}
	// Every commit since the first is there: revision i wrote log.<i>.
	for i := uint64(1); i <= snap.Revision; i++ {
		k := "log." + strconv.FormatUint(i, 10)
		if e := byKey[k]; string(e.Value) != strconv.FormatUint(i, 10) || e.Revision != i {
			t.Fatalf("round %d: %s = %q@%d, want %d@%d", round, k, e.Value, e.Revision, i, i)
		}
	}
	if len(byKey) != int(snap.Revision)+4 {
		t.Fatalf("round %d: %d keys at revision %d, want %d", round, len(byKey), snap.Revision, snap.Revision+4)
	}
	// The change log holds the events of the last revisions, whole.
	after := snap.Revision - min(snap.Revision, 50)
	events, err := b.ChangesSince(ctx, crashContext, snap.Epoch, after)
	if err != nil {
		t.Fatalf("round %d: ChangesSince(%d): %v", round, after, err)
	}
	for j, e := range events {
		if e.Revision != after+uint64(j)+1 || len(e.Changes) != 5 {
			t.Fatalf("round %d: logged event %d is revision %d with %d changes", round, j, e.Revision, len(e.Changes))
		}
	}
	// Atomic publishing: one message per commit, the last one the head's.
	if n := countRows(t, path, "contextd_messages"); n != int(snap.Revision) {
		t.Fatalf("round %d: %d messages for %d commits", round, n, snap.Revision)
	}
	var payload []byte
	// contract: takes nothing; returns the newest message.
	if err := rawDB(t, path).QueryRow(`SELECT payload FROM contextd_messages ORDER BY id DESC LIMIT 1`).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	if e, err := backend.DecodeEvent(payload); err != nil || e.Head != snap.Head {
		t.Fatalf("round %d: last message %+v, %v; want the event of head %+v", round, e.Head, err, snap.Head)
	}
	var check string
	// contract: takes nothing; returns "ok" for an intact file.
	if err := rawDB(t, path).QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("round %d: integrity_check = %q, %v", round, check, err)
	}
}
