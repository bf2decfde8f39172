package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
)

func init() {
	register(&command{
		name:    "export",
		args:    "[PREFIX]",
		summary: "write the context as JSON lines {key, value, revision, expires}, sorted by key",
		run:     runExport,
	})
}

func runExport(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 1); err != nil {
		return err
	}
	prefix := ""
	if len(pos) == 1 {
		prefix = pos[0]
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	// One consistent state: collect the records, and start again if the
	// local copy moved on meanwhile (a change arrived), so the export is
	// the context exactly as of one revision.
	for attempt := 0; ; attempt++ {
		rev := s.cx.Revision()
		recs, err := g.collect(octx, s, prefix)
		if err != nil {
			return err
		}
		if s.cx.Revision() != rev {
			if attempt < 10 {
				continue
			}
			return fmt.Errorf("the context kept changing during the export (now at revision %d)", s.cx.Revision())
		}
		w := bufio.NewWriter(g.stdout)
		enc := json.NewEncoder(w)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(g.stderr, "exported %d keys of context %q at revision %d\n", len(recs), g.context, rev)
		return nil
	}
}

// collect reads the records of the keys with prefix, sorted by key.
func (g *globals) collect(ctx context.Context, s *session, prefix string) ([]record, error) {
	var keys []string
	for k := range s.cx.Prefix(prefix) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	recs := make([]record, 0, len(keys))
	for _, k := range keys {
		e, ok, err := s.cx.GetEntry(ctx, k)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		r := record{Key: k, Revision: e.Revision, Expires: expiresPtr(e.Expires)}
		g.fill(&r, e.Value)
		recs = append(recs, r)
	}
	return recs, nil
}
