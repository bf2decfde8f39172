package main

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register(&command{
		name:    "get",
		args:    "KEY",
		summary: "print a key's value (exit code 1 if the key does not exist)",
		run:     runGet,
	})
}

func runGet(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 1, 1); err != nil {
		return err
	}
	key := pos[0]
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	e, ok, err := s.cx.GetEntry(octx, key)
	if err != nil {
		return err
	}
	if !ok {
		return withCode(exitNotFound, fmt.Errorf("key %q not found in context %q", key, g.context))
	}
	if g.json {
		r := record{Key: key, Revision: e.Revision, Expires: expiresPtr(e.Expires)}
		g.fill(&r, e.Value)
		return g.printJSON(r)
	}
	out := g.text(e.Value)
	if !g.isRaw() {
		out = append(out, '\n')
	}
	_, err = g.stdout.Write(out)
	return err
}
