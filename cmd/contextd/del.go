package main

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register(&command{
		name:    "del",
		args:    "KEY...",
		summary: "delete keys, all in one transaction; prints how many existed",
		run:     runDel,
	})
}

func runDel(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 1, -1); err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	// Delete only the keys that exist, each on the condition that it is
	// still at the revision seen, so the count printed is exact: a key
	// changed meanwhile makes the delete fail (exit code 6), not count
	// wrong.
	txn := s.cx.Txn()
	var deleted []string
	seen := map[string]bool{}
	for _, k := range pos {
		if seen[k] {
			continue
		}
		seen[k] = true
		e, ok, err := s.cx.GetEntry(octx, k)
		if err != nil {
			return err
		}
		if ok {
			txn.Delete(k).IfRevision(k, e.Revision)
			deleted = append(deleted, k)
		}
	}
	var rev uint64
	if len(deleted) > 0 {
		if rev, err = txn.Commit(octx); err != nil {
			return err
		}
	}
	if g.json {
		return g.printJSON(struct {
			Deleted  []string `json:"deleted"`
			Revision uint64   `json:"revision,omitempty"`
		}{append([]string{}, deleted...), rev})
	}
	if rev == 0 {
		_, err = fmt.Fprintf(g.stdout, "deleted 0 of %d keys\n", len(seen))
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "deleted %d of %d keys at revision %d\n", len(deleted), len(seen), rev)
	return err
}
