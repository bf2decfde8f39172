package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

// The same demo as separate OS processes on a shared backend:
//
//	go run ./examples/multiinstance -redis 127.0.0.1:6379 -processes 3
//	go run ./examples/multiinstance -sqlite /tmp/demo.db -processes 2
//
// The parent clears the job and starts the children (this program again
// with -member); each child takes the lock once, advances the job, releases
// it, and waits until every member has had its turn.

const processContext = "multiinstance_processes"

// runProcesses starts n member processes and relays their output.
func runProcesses(out io.Writer, flags examplebackend.Flags, n int) error {
	if !flags.Shared() {
		return errors.New("-processes needs -redis, -postgres or -sqlite (separate processes cannot share the in-memory backend)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cx, closeAll, err := openJob(ctx, flags)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := cx.Delete(ctx, "job"); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var mu sync.Mutex // serializes relayed output lines
	errs := make(chan error, n)
	for i := range n {
		name := fmt.Sprintf("member-%d", i+1)
		cmd := exec.CommandContext(ctx, self, append(flags.Args(), "-member", name, "-members", fmt.Sprint(n))...)
		cmd.Stdout = &prefixWriter{out: out, mu: &mu}
		cmd.Stderr = os.Stderr
		go func() { errs <- cmd.Run() }()
	}
	var failed error
	for range n {
		if err := <-errs; err != nil {
			failed = errors.Join(failed, err)
		}
	}
	if failed != nil {
		return failed
	}
	final, _, err := cx.Get(ctx, "job", contextd.Fresh())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "parent: final job step %d by %s\n", final.Step, final.Owner)
	return nil
}

// runMember is one child process.
func runMember(out io.Writer, flags examplebackend.Flags, name string, members int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cx, closeAll, err := openJob(ctx, flags)
	if err != nil {
		return err
	}
	defer closeAll()
	changes := cx.Watch(ctx)

	lock, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: "job", LockTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	job, err := cx.Modify(ctx, "job", func(cur Job, _ bool) (Job, error) {
		return Job{Owner: name, Step: cur.Step + 1}, nil
	}, contextd.WithLock(lock))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s (pid %d) held the lock (fencing token %d) and set step %d\n", name, os.Getpid(), lock.Token(), job.Step)
	if err := lock.Release(ctx); err != nil {
		return err
	}
	for job.Step < members {
		select {
		case ch, ok := <-changes:
			if !ok {
				return ctx.Err()
			}
			if ch.Key == "job" && !ch.Deleted {
				job = ch.Value
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Fprintf(out, "%s saw every member's step; the last was %s's\n", name, job.Owner)
	return nil
}

// openJob opens the shared context on the backend flags names; closeAll
// closes it and its backend.
func openJob(ctx context.Context, flags examplebackend.Flags) (cx *contextd.Context[Job], closeAll func(), err error) {
	backends := examplebackend.New(flags)
	b, err := backends.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	cx, err = contextd.New[Job](b, processContext, nil)
	if err == nil {
		err = cx.Initialize(ctx)
	}
	if err != nil {
		if cx != nil {
			_ = cx.Close()
		}
		backends.Close()
		return nil, nil, err
	}
	return cx, func() { _ = cx.Close(); backends.Close() }, nil
}

// prefixWriter relays a child's output whole lines at a time.
type prefixWriter struct {
	out io.Writer
	mu  *sync.Mutex
	buf strings.Builder
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	text := w.buf.String()
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		if _, err := io.WriteString(w.out, text[:i+1]); err != nil {
			return 0, err
		}
		w.buf.Reset()
		w.buf.WriteString(text[i+1:])
	}
	return len(p), nil
}
