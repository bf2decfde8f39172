package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

func init() {
	register(&command{
		name:    "import",
		args:    "[--replace] [--dry-run] [FILE|-]",
		summary: "write JSON lines (as export writes them) in one transaction, or nothing",
		run:     runImport,
	})
}

func runImport(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	replace := fs.Bool("replace", false, "also delete the keys the input does not have")
	dry := fs.Bool("dry-run", false, "check the input and print what would change; write nothing")
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 0, 1); err != nil {
		return err
	}
	in := g.stdin
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	// Read and check all of the input before touching the context: a bad
	// line anywhere refuses the whole import.
	recs, err := g.readRecords(in)
	if err != nil {
		return withCode(exitBadValue, err)
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()

	now := time.Now()
	txn := s.cx.Txn()
	puts, expired, deletes := 0, 0, 0
	inInput := make(map[string]bool, len(recs))
	for _, r := range recs {
		inInput[r.rec.Key] = true
		var opts []contextd.WriteOption
		if r.rec.Expires != nil {
			ttl := r.rec.Expires.Sub(now)
			if ttl <= 0 {
				expired++
				continue // it would be gone already
			}
			opts = append(opts, contextd.WithTTL(ttl))
		}
		txn.Put(r.rec.Key, r.v, opts...)
		puts++
	}
	if *replace {
		// Each key deleted on the condition that it is still as seen,
		// so a concurrent write makes the import fail rather than be
		// silently overwritten by the delete.
		for k := range s.cx.Keys() {
			if inInput[k] {
				continue
			}
			e, ok, err := s.cx.GetEntry(octx, k)
			if err != nil {
				return err
			}
			if ok {
				txn.Delete(k).IfRevision(k, e.Revision)
				deletes++
			}
		}
	}
	summary := fmt.Sprintf("%d puts, %d deletes, %d skipped as expired", puts, deletes, expired)
	if *dry {
		_, err := fmt.Fprintf(g.stdout, "dry run: would write %s to context %q\n", summary, g.context)
		return err
	}
	if puts+deletes == 0 {
		_, err := fmt.Fprintf(g.stdout, "nothing to import\n")
		return err
	}
	rev, err := txn.Commit(octx)
	if err != nil {
		return fmt.Errorf("import refused, nothing written: %w", err)
	}
	if g.json {
		return g.printJSON(struct {
			Puts     int    `json:"puts"`
			Deletes  int    `json:"deletes"`
			Expired  int    `json:"expired"`
			Revision uint64 `json:"revision"`
		}{puts, deletes, expired, rev})
	}
	_, err = fmt.Fprintf(g.stdout, "imported %s at revision %d\n", summary, rev)
	return err
}

type importRecord struct {
	rec record
	v   value
}

// readRecords parses JSON lines; blank lines are skipped. A line that does
// not parse, a key given twice or a value the codec cannot take is an
// error naming the line.
func (g *globals) readRecords(in io.Reader) ([]importRecord, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 512<<20)
	seen := map[string]int{}
	var recs []importRecord
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r record
		d := json.NewDecoder(bytes.NewReader(line))
		d.DisallowUnknownFields()
		if err := d.Decode(&r); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if r.Key == "" {
			return nil, fmt.Errorf("line %d: no key", n)
		}
		if prev, ok := seen[r.Key]; ok {
			return nil, fmt.Errorf("line %d: key %q given again (first on line %d)", n, r.Key, prev)
		}
		seen[r.Key] = n
		v, err := g.valueOf(r)
		if err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				err = ee.err
			}
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		recs = append(recs, importRecord{rec: r, v: v})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}
