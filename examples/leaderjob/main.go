// Command leaderjob runs a job that only the leader may run, guarded by a
// lock with fencing.
//
// Worker zulu takes the lock first, computes its run of the job and then
// stalls (a long GC pause, a frozen VM): its lock is not renewed and
// expires. Workers alpha, bravo and charlie contend for the lock with
// AcquireLock and AutoExtend; each holder in turn runs the job, stamps its
// output with the lock's fencing token, writes the report WithLock, and
// steps down. When zulu wakes up, its late write is refused with
// ErrLockLost, and the report sink, a system outside contextd, refuses
// its output too, because its token is older than the last one it saw.
//
//	go run ./examples/leaderjob
//
// With -redis host:port, -postgres URL or -sqlite FILE the workers share
// that backend instead of the embedded memory one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

const (
	contextKey = "nightly_jobs"
	leaderKey  = "leader" // the lock that makes its holder the leader
	reportKey  = "report" // where the leader writes the job's result

	// stallTTL is zulu's lock timeout: short, so the demo need not wait
	// long for it to expire.
	stallTTL = 500 * time.Millisecond
)

// Report is the job's result.
type Report struct {
	Run   int    `json:"run"`
	By    string `json:"by"`
	Token uint64 `json:"token"` // the leader's fencing token
}

// contend is how the workers wait for leadership: renewed while held, and
// retried for up to about 30 s while another worker leads.
var contend = contextd.LockOptions{
	Key:         leaderKey,
	LockTimeout: 3 * time.Second,
	AutoExtend:  true,
	RetryDelay:  50 * time.Millisecond,
	MaxRetries:  600,
}

func main() {
	flags := examplebackend.Register(flag.CommandLine)
	flag.Parse()
	if err := run(os.Stdout, *flags); err != nil {
		log.Fatal(err)
	}
}

func run(w io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := &lockedWriter{w: w}
	backends := examplebackend.New(flags)
	defer backends.Close()

	names := []string{"zulu", "alpha", "bravo", "charlie"}
	workers := make(map[string]*contextd.Context[Report], len(names))
	for _, name := range names {
		cx, err := examplebackend.OpenContext[Report](ctx, backends, contextKey, nil)
		if err != nil {
			return err
		}
		defer cx.Close()
		workers[name] = cx
	}
	// Start from no report when Redis kept an earlier run's.
	if err := workers["alpha"].Delete(ctx, reportKey); err != nil {
		return err
	}
	sink := &reportSink{}

	// zulu leads first, without AutoExtend: it stands for a worker whose
	// renewals stopped when it stalled.
	zulu, err := workers["zulu"].AcquireLock(ctx, contextd.LockOptions{Key: leaderKey, LockTimeout: stallTTL})
	if err != nil {
		return err
	}
	late := Report{Run: 1, By: "zulu", Token: zulu.Token()}
	out.Printf("%-7s leads (token %d), computes run 1, then stalls: its lock is not renewed\n", "zulu", zulu.Token())

	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, name := range names[1:] {
		wg.Go(func() { errs <- lead(ctx, out, name, workers[name], sink) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}

	// zulu wakes up and carries on where it stalled.
	err = workers["zulu"].UpdateContext(ctx, reportKey, late, contextd.WithLock(zulu))
	if !errors.Is(err, contextd.ErrLockLost) {
		return fmt.Errorf("zulu's late write = %v, want an error matching ErrLockLost", err)
	}
	out.Printf("%-7s wakes up: its write of run 1 is refused (lock lost)\n", "zulu")
	if err := sink.Deliver(late); err != nil {
		out.Printf("%-7s and the sink refuses its output: %v\n", "zulu", err)
	} else {
		return errors.New("the sink took zulu's stale output")
	}

	final, _, err := workers["alpha"].Get(ctx, reportKey, contextd.Fresh())
	if err != nil {
		return err
	}
	out.Printf("final report: run %d by %s (token %d)\n", final.Run, final.By, final.Token)
	return nil
}

// lead waits until it holds the leader lock, runs the job once, and steps
// down.
func lead(ctx context.Context, out *lockedWriter, name string, cx *contextd.Context[Report], sink *reportSink) error {
	lock, err := cx.AcquireLock(ctx, contend)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer func() { _ = lock.Release(ctx) }() // step down: the next worker leads

	// Only the leader gets here. WithLock fences the write: it is refused
	// if the lock was lost meanwhile, say by a stall longer than the lock
	// timeout.
	report, err := cx.Modify(ctx, reportKey, func(cur Report, _ bool) (Report, error) {
		return Report{Run: cur.Run + 1, By: name, Token: lock.Token()}, nil
	}, contextd.WithLock(lock))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := sink.Deliver(report); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	out.Printf("%-7s leads (token %d): run %d written and delivered\n", name, lock.Token(), report.Run)
	return nil
}

// errFenced is the sink's refusal of output from a superseded leader.
var errFenced = errors.New("fenced off")

// reportSink stands for a system outside contextd that receives the job's
// output, a mail gateway say. It remembers the highest fencing token it has
// seen and refuses output stamped with a lower one, so a leader that was
// superseded cannot deliver, whatever it believes.
type reportSink struct {
	mu      sync.Mutex
	highest uint64
}

// Deliver accepts r unless a newer leader has delivered already.
func (s *reportSink) Deliver(r Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Token < s.highest {
		return fmt.Errorf("token %d is older than %d: %w", r.Token, s.highest, errFenced)
	}
	s.highest = r.Token
	return nil
}

// lockedWriter serialises the workers' output lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
