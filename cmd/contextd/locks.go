package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/contextd-go/contextd/locker"
)

func init() {
	register(&command{
		name:    "locks",
		args:    "",
		summary: "list the context's held locks: key, fencing token, holder token, expiry",
		run:     runLocks,
	})
}

func runLocks(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 0); err != nil {
		return err
	}
	if g.context == "" {
		return usageErr(errors.New("no context: give --context NAME or set CONTEXTD_CONTEXT"))
	}
	// No Context is needed: the locks are read from the backend itself.
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	b, closeB, err := openBackend(octx, g.url)
	if err != nil {
		return err
	}
	defer closeB()
	l, ok := b.(locker.Lister)
	if !ok {
		return withCode(exitUnsupported, fmt.Errorf("the %T backend cannot list its locks (it does not implement locker.Lister)", b))
	}
	held, err := l.ListLocks(octx, g.context)
	if err != nil {
		return err
	}
	if g.json {
		for _, h := range held {
			err := g.printJSON(struct {
				Key     string    `json:"key"`
				Fence   uint64    `json:"fence"`
				Token   string    `json:"token"`
				Expires time.Time `json:"expires"`
			}{h.Key, h.Fence, h.Token, h.Expires.UTC()})
			if err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tFENCE\tHOLDER\tEXPIRES")
	for _, h := range held {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", h.Key, h.Fence, h.Token, expiresText(h.Expires))
	}
	return tw.Flush()
}
