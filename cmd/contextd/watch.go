package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

func init() {
	register(&command{
		name:    "watch",
		args:    "[--from REV] [--initial] [--count N] [PREFIX]",
		summary: "print one line per change (revision, op, key, value) until interrupted",
		run:     runWatch,
	})
}

// watchLine is a change as watch --json prints it.
type watchLine struct {
	Revision    uint64          `json:"revision"`
	Op          string          `json:"op"` // put, del, reset, synced
	Key         string          `json:"key,omitempty"`
	Origin      string          `json:"origin,omitempty"`
	Expires     *time.Time      `json:"expires,omitempty"`
	Error       string          `json:"error,omitempty"`
	ValueJSON   json.RawMessage `json:"value,omitempty"`
	ValueBase64 string          `json:"value_base64,omitempty"`
}

func runWatch(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	from := fs.Uint64("from", 0, "replay every change after this revision first (from the change log, or the current state after a RESET)")
	initial := fs.Bool("initial", false, "print the current state first")
	count := fs.Int("count", 0, "exit after this many put/del lines (0: run until interrupted)")
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 1); err != nil {
		return err
	}
	fromSet := false
	fs.Visit(func(f *flag.Flag) { fromSet = fromSet || f.Name == "from" })
	opts := []contextd.WatchOption{}
	if len(pos) == 1 {
		opts = append(opts, contextd.KeyPrefix(pos[0]))
	}
	if fromSet {
		opts = append(opts, contextd.FromRevision(*from))
	}
	if *initial {
		opts = append(opts, contextd.WithInitial())
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	ch := s.cx.Watch(ctx, opts...)
	// The watch is registered once Watch returns: say so, so that a
	// script can wait for this line before it writes.
	fmt.Fprintf(g.stderr, "watching context %q at revision %d\n", g.context, s.cx.Revision())
	n := 0
	for c := range ch {
		if err := g.printChange(c); err != nil {
			return err
		}
		if !c.Reset && !c.UpToDate {
			n++
			if *count > 0 && n >= *count {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal end
	}
	return fmt.Errorf("watch ended: the context was closed")
}

func (g *globals) printChange(c contextd.Change[value]) error {
	l := watchLine{Revision: c.Revision, Key: c.Key, Origin: c.Origin, Expires: expiresPtr(c.Expires)}
	switch {
	case c.Reset:
		l.Op = "reset"
	case c.UpToDate:
		l.Op = "synced"
	case c.Deleted:
		l.Op = "del"
	default:
		l.Op = "put"
		if c.Err != nil {
			l.Error = c.Err.Error()
		} else {
			var r record
			g.fill(&r, c.Value)
			l.ValueJSON, l.ValueBase64 = r.Value, r.ValueBase64
		}
	}
	if g.json {
		return g.printJSON(l)
	}
	var err error
	switch l.Op {
	case "reset":
		_, err = fmt.Fprintf(g.stdout, "%d\tRESET\t(changes were skipped: re-read the context)\n", l.Revision)
	case "synced":
		_, err = fmt.Fprintf(g.stdout, "%d\tSYNCED\t(replay done, live changes follow)\n", l.Revision)
	case "del":
		_, err = fmt.Fprintf(g.stdout, "%d\tDEL\t%s\n", l.Revision, l.Key)
	default:
		v := printable(g.text(c.Value))
		if l.Error != "" {
			v = "!" + l.Error
		}
		_, err = fmt.Fprintf(g.stdout, "%d\tPUT\t%s\t%s\n", l.Revision, l.Key, v)
	}
	return err
}
