package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/contextd"
)

// Tests start the test binary again as child processes: separate
// processes on one file are what the backend is for. childEnv names the
// child's role; the child reads its arguments from the environment,
// reports on stdout and exits without running any test.
const childEnv = "CONTEXTD_SQLITE_CHILD"

func runChild(role string) int {
	var err error
	switch role {
	case "open":
		err = childOpen()
	case "counter":
		err = childCounter()
	case "txloop":
		err = childTxLoop()
	default:
		err = fmt.Errorf("unknown child role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 1
	}
	return 0
}

// childCommand returns a command that runs the test binary as a child in
// role, with env added to the environment.
func childCommand(t *testing.T, bin, role string, env ...string) *exec.Cmd {
	t.Helper()
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// childOpen opens CHILD_PATH and prints which of the package's errors it
// got.
func childOpen() error {
	b, err := sqlite.Open(context.Background(), os.Getenv("CHILD_PATH"), nil)
	switch {
	case err == nil:
		b.Close()
		fmt.Println("ok")
	case errors.Is(err, sqlite.ErrReadOnly):
		fmt.Println("ErrReadOnly")
	case errors.Is(err, sqlite.ErrNotDatabase):
		fmt.Println("ErrNotDatabase")
	default:
		fmt.Println("other:", err)
	}
	return nil
}

// openAsNobody copies the database at path (closed, so the file holds
// everything) into a new directory with mode dirMode, gives the copy mode
// fileMode, and opens it from a child process running as user nobody; it
// returns what the child printed.
func openAsNobody(t *testing.T, path string, dirMode, fileMode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "contextd-sqlite-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sqlite.test")
	copyFile(t, self, bin, 0o755)
	db := filepath.Join(dir, "ro.db")
	copyFile(t, path, db, fileMode)
	if err := os.Chmod(dir, dirMode); err != nil {
		t.Fatal(err)
	}
	cmd := childCommand(t, bin, "open", "CHILD_PATH="+db)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as nobody: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil {
		t.Fatal(err)
	}
}

// childCounter is one process of TestProcessesShareOneFile: it increments
// the shared counter CHILD_N times with Modify and writes CHILD_N keys of
// its own, then waits until its copy shows every process's writes (the
// counter at CHILD_TOTAL and CHILD_TOTAL keys besides it), and prints
// "converged <counter> <keys>".
func childCounter() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id, n, total := os.Getenv("CHILD_ID"), envInt("CHILD_N"), envInt("CHILD_TOTAL")
	b, err := sqlite.Open(ctx, os.Getenv("CHILD_PATH"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	cx, err := contextd.New[int](b, processContext, &contextd.Options{WatchBuffer: 1 << 16})
	if err != nil {
		return err
	}
	defer cx.Close()
	if err := cx.Initialize(ctx); err != nil {
		return err
	}
	// Armed before the writes, so that no change after them is missed.
	changes := cx.Watch(ctx)
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	for i := range n {
		if _, err := cx.Modify(ctx, "counter", inc); err != nil {
			return fmt.Errorf("increment %d: %w", i, err)
		}
		if err := cx.UpdateContext(ctx, fmt.Sprintf("p%s.%d", id, i), i); err != nil {
			return fmt.Errorf("own key %d: %w", i, err)
		}
	}
	for {
		m, err := cx.GetContext(ctx)
		if err != nil {
			return err
		}
		if m["counter"] == total && len(m) == total+1 {
			fmt.Printf("converged %d %d\n", m["counter"], len(m)-1)
			return nil
		}
		select {
		case _, ok := <-changes:
			if !ok {
				return fmt.Errorf("not converged: counter %d, %d keys: %w", m["counter"], len(m)-1, ctx.Err())
			}
		case <-ctx.Done():
			return fmt.Errorf("not converged: counter %d, %d keys: %w", m["counter"], len(m)-1, ctx.Err())
		}
	}
}

// childTxLoop is the process TestKillMidTransaction kills: it commits
// batches that write a, b and c to the same value i and a key log.<i>,
// with a large value that makes each commit write many pages, forever, and
// prints "ack <i> <revision> <commit id>" after each commit returns.
func childTxLoop() error {
	ctx := context.Background()
	b, err := sqlite.Open(ctx, os.Getenv("CHILD_PATH"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	head, err := b.Revision(ctx, crashContext)
	if err != nil {
		return err
	}
	pad := bytes.Repeat([]byte("p"), 64<<10)
	for i := head.Revision + 1; ; i++ {
		v := []byte(strconv.FormatUint(i, 10))
		bt := backend.Batch{
			Ops: []backend.Op{
				{Key: "a", Value: v}, {Key: "b", Value: v}, {Key: "c", Value: v},
				{Key: "log." + string(v), Value: v}, {Key: "pad", Value: pad},
			},
			Codec: "json", Origin: "child", EventValueLimit: 64,
		}
		h, err := b.CommitAndPublish(ctx, crashContext, bt, backend.DefaultChannel(crashContext))
		if err != nil {
			return err
		}
		fmt.Printf("ack %d %d %s\n", i, h.Revision, h.Commit)
	}
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}
