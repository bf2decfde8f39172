package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

func init() {
	register(&command{
		name:    "lock",
		args:    "[--ttl D] [--wait D] KEY -- CMD [ARGS...]",
		summary: "run CMD while holding the lock on KEY; exits with CMD's exit code",
		run:     runLock,
	})
}

// forwarded are the signals lock passes on to its command.
var forwarded = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

func runLock(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	ttl := fs.Duration("ttl", contextd.DefaultLockTimeout, "lock time to live; the lock is renewed every ttl/3 while CMD runs")
	wait := fs.Duration("wait", 0, "give up (exit code 7) after waiting this long for the lock; 0 waits until interrupted")
	pos, rest, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 1, 1); err != nil {
		return err
	}
	if len(rest) == 0 {
		fs.Usage()
		return usageErr(errors.New("no command: give one after --"))
	}
	if *ttl <= 0 || *wait < 0 {
		return usageErr(fmt.Errorf("--ttl must be positive and --wait not negative (got %v, %v)", *ttl, *wait))
	}
	key := pos[0]

	// Catch the signals from now on: while waiting they end the wait,
	// while CMD runs they are passed on to it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	retries := math.MaxInt32
	if *wait > 0 {
		actx, cancel = context.WithTimeout(actx, *wait)
		defer cancel()
		retries = max(1, int(*wait/contextd.DefaultRetryDelay))
	}
	waitDone := make(chan struct{})
	var interrupted os.Signal
	go func() {
		select {
		case sig := <-sigs:
			interrupted = sig
			cancel()
		case <-waitDone:
		}
	}()
	l, err := s.cx.AcquireLock(actx, contextd.LockOptions{Key: key, LockTimeout: *ttl, MaxRetries: retries, AutoExtend: true})
	close(waitDone)
	if err != nil {
		if interrupted != nil {
			return withCode(exitNotAcquired, fmt.Errorf("interrupted (%v) while waiting for the lock on %q", interrupted, key))
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, contextd.ErrLockNotAcquired) {
			return withCode(exitNotAcquired, fmt.Errorf("lock %q not acquired within %v: %w", key, *wait, err))
		}
		return err
	}
	defer func() {
		// Release even when ctx is done: a fresh bound of its own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
		defer cancel()
		_ = l.Release(rctx)
	}()

	cmd := exec.Command(rest[0], rest[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = g.stdin, g.stdout, g.stderr
	// CMD learns its fencing token: a store it writes to can refuse
	// writes from a holder whose lock was since taken over.
	cmd.Env = append(os.Environ(),
		"CONTEXTD_LOCK_CONTEXT="+g.context,
		"CONTEXTD_LOCK_KEY="+key,
		"CONTEXTD_LOCK_FENCE="+strconv.FormatUint(l.Token(), 10))
	if err := cmd.Start(); err != nil {
		return withCode(exitOther, fmt.Errorf("start %q: %w", rest[0], err))
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lost := false
	var waitErr error
loop:
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case <-l.Lost():
			if !lost {
				lost = true
				fmt.Fprintf(g.stderr, "contextd lock: lost the lock on %q; stopping %s\n", key, rest[0])
				_ = cmd.Process.Signal(syscall.SIGTERM)
				go func() {
					// A command that ignores SIGTERM is killed after a while.
					time.Sleep(10 * time.Second)
					_ = cmd.Process.Kill()
				}()
			}
		case waitErr = <-exited:
			break loop
		}
	}
	if lost {
		return withCode(exitLockLost, fmt.Errorf("lock %q was lost while %s ran", key, rest[0]))
	}
	if waitErr == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code := ee.ExitCode()
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			code = 128 + int(st.Signal()) // as shells report it
		}
		return &exitError{code: code, err: waitErr, quiet: true}
	}
	return waitErr
}
