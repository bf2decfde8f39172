package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"
)

func init() {
	register(&command{
		name:    "ls",
		args:    "[--values] [PREFIX]",
		summary: "list keys (with revision and expiry), sorted",
		run:     runLs,
	})
}

func runLs(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	values := fs.Bool("values", false, "print values too")
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
	var keys []string
	for k := range s.cx.Prefix(prefix) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	if !g.json {
		if *values {
			fmt.Fprintln(tw, "KEY\tREVISION\tEXPIRES\tVALUE")
		} else {
			fmt.Fprintln(tw, "KEY\tREVISION\tEXPIRES")
		}
	}
	for _, k := range keys {
		e, ok, err := s.cx.GetEntry(octx, k)
		if err != nil {
			return err
		}
		if !ok {
			continue // deleted since Prefix looked
		}
		if g.json {
			r := record{Key: k, Revision: e.Revision, Expires: expiresPtr(e.Expires)}
			if *values {
				g.fill(&r, e.Value)
			}
			if err := g.printJSON(r); err != nil {
				return err
			}
			continue
		}
		if *values {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", k, e.Revision, expiresText(e.Expires), printable(g.text(e.Value)))
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", k, e.Revision, expiresText(e.Expires))
		}
	}
	return tw.Flush()
}

// printable shows a value on one line: as is when it is printable text,
// else quoted.
func printable(b []byte) string {
	s := string(b)
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}
