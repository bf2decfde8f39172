package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/contextd-go/contextd/locker"
)

func init() {
	register(&command{
		name:    "stats",
		args:    "",
		summary: "show the context's revision, size, backend capabilities and load time",
		run:     runStats,
	})
}

// statsReport is what stats prints.
type statsReport struct {
	Context      string  `json:"context"`
	Backend      string  `json:"backend"`
	Codec        string  `json:"codec"`
	Revision     uint64  `json:"revision"`
	Keys         int     `json:"keys"`
	ValueBytes   int     `json:"value_bytes"`
	LargestKey   string  `json:"largest_key,omitempty"`
	LargestBytes int     `json:"largest_bytes,omitempty"`
	Expiring     int     `json:"expiring_keys"`
	Locks        int     `json:"locks"` // -1: the backend cannot list them
	Capabilities string  `json:"capabilities"`
	LoadMillis   float64 `json:"load_ms"`
}

func runStats(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 0); err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	r := statsReport{
		Context:      g.context,
		Backend:      fmt.Sprintf("%T", s.b),
		Codec:        g.codec,
		Revision:     s.cx.Revision(),
		Capabilities: s.cx.Capabilities().String(),
		LoadMillis:   float64(s.loaded.Microseconds()) / 1000,
		Locks:        -1,
	}
	for k := range s.cx.All() {
		e, ok, err := s.cx.GetEntry(octx, k)
		if err != nil || !ok {
			continue
		}
		r.Keys++
		r.ValueBytes += len(e.Value)
		if len(e.Value) > r.LargestBytes {
			r.LargestKey, r.LargestBytes = k, len(e.Value)
		}
		if !e.Expires.IsZero() {
			r.Expiring++
		}
	}
	if l, ok := s.b.(locker.Lister); ok {
		held, err := l.ListLocks(octx, g.context)
		if err != nil {
			return err
		}
		r.Locks = len(held)
	}
	if g.json {
		return g.printJSON(r)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	locks := fmt.Sprint(r.Locks)
	if r.Locks < 0 {
		locks = "(not listable on this backend)"
	}
	largest := "-"
	if r.LargestKey != "" {
		largest = fmt.Sprintf("%s (%d bytes)", r.LargestKey, r.LargestBytes)
	}
	for _, row := range [][2]string{
		{"context", r.Context},
		{"backend", r.Backend},
		{"codec", r.Codec},
		{"revision", fmt.Sprint(r.Revision)},
		{"keys", fmt.Sprint(r.Keys)},
		{"value bytes", fmt.Sprint(r.ValueBytes)},
		{"largest value", largest},
		{"expiring keys", fmt.Sprint(r.Expiring)},
		{"locks held", locks},
		{"capabilities", r.Capabilities},
		{"load time", (time.Duration(r.LoadMillis * float64(time.Millisecond))).Round(10 * time.Microsecond).String()},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
