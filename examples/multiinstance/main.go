// Command multiinstance shows three instances of one context, as three
// processes would run them: each sees the others' writes, and a lock is
// handed from one to the next.
//
//	go run ./examples/multiinstance
//
// With -redis host:port, -postgres URL or -sqlite FILE the instances share
// that backend instead of the embedded memory one, and with -processes 3 as
// well they run as three OS processes:
//
//	go run ./examples/multiinstance -redis 127.0.0.1:6379 -processes 3
//	go run ./examples/multiinstance -sqlite /tmp/demo.db -processes 2
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

// Job is the shared state: who works on the job and how far it got.
type Job struct {
	Owner string `json:"owner"`
	Step  int    `json:"step"`
}

func main() {
	flags := examplebackend.Register(flag.CommandLine)
	processes := flag.Int("processes", 0, "with -redis, -postgres or -sqlite: run the demo as this many separate OS processes")
	member := flag.String("member", "", "internal: run as the named member process")
	members := flag.Int("members", 0, "internal: how many member processes take part")
	flag.Parse()
	var err error
	switch {
	case *member != "":
		err = runMember(os.Stdout, *flags, *member, *members)
	case *processes > 0:
		err = runProcesses(os.Stdout, *flags, *processes)
	default:
		err = run(os.Stdout, *flags)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Each instance gets its own backend client, as a separate process
	// would; the memory backend is shared in-process instead.
	backends := examplebackend.New(flags)
	defer backends.Close()

	names := []string{"alpha", "bravo", "charlie"}
	instances := make([]*contextd.Context[Job], len(names))
	for i := range names {
		b, err := backends.Open(ctx)
		if err != nil {
			return err
		}
		cx, err := contextd.New[Job](b, "multiinstance_demo", nil)
		if err != nil {
			return err
		}
		defer cx.Close()
		if err := cx.Initialize(ctx); err != nil {
			return err
		}
		instances[i] = cx
	}
	// Start from a clean slate when the store kept an earlier run's state.
	if err := instances[0].Delete(ctx, "job"); err != nil {
		return err
	}

	// Each instance in turn takes the lock on "job", advances it, and
	// hands the lock on by releasing it; the others watch.
	for i, cx := range instances {
		round, endRound := context.WithCancel(ctx)
		watches := make([]<-chan contextd.Change[Job], 0, len(instances)-1)
		for j, other := range instances {
			if j != i {
				watches = append(watches, other.Watch(round))
			}
		}
		lock, err := cx.AcquireLock(ctx, contextd.LockOptions{Key: "job", LockTimeout: 5 * time.Second})
		if err != nil {
			endRound()
			return err
		}
		job, err := cx.Modify(ctx, "job", func(cur Job, _ bool) (Job, error) {
			return Job{Owner: names[i], Step: cur.Step + 1}, nil
		}, contextd.WithLock(lock))
		if err != nil {
			endRound()
			return err
		}
		fmt.Fprintf(out, "%-7s holds lock (fencing token %d), sets job to step %d\n", names[i], lock.Token(), job.Step)
		for _, w := range watches {
			if err := awaitStep(round, w, job.Step); err != nil {
				endRound()
				return err
			}
		}
		fmt.Fprintf(out, "        the other two instances see step %d by %s\n", job.Step, job.Owner)
		endRound()
		if err := lock.Release(ctx); err != nil {
			return err
		}
	}
	final, _, err := instances[2].Get(ctx, "job", contextd.Fresh())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "final job: step %d by %s\n", final.Step, final.Owner)
	return nil
}

// awaitStep waits until a watch shows the job at step.
func awaitStep(ctx context.Context, w <-chan contextd.Change[Job], step int) error {
	for {
		select {
		case ch, ok := <-w:
			if !ok {
				return ctx.Err()
			}
			if ch.Key == "job" && ch.Value.Step == step {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
