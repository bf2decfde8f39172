package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

func init() {
	register(&command{
		name:    "put",
		args:    "[--ttl D] [--if-revision N | --create] KEY VALUE|-",
		summary: "write a key (VALUE - reads stdin); prints the new revision",
		run:     runPut,
	})
}

func runPut(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error {
	ttl := fs.Duration("ttl", 0, "expire the key after this long (0: never)")
	ifRev := fs.Uint64("if-revision", 0, "write only if the key is still at this revision (see get --json); exit code 6 otherwise")
	create := fs.Bool("create", false, "write only if the key does not exist; exit code 6 otherwise")
	str := fs.Bool("string", false, "store VALUE as a JSON string, without quoting it")
	pos, _, err := parse(g, fs, args)
	if err != nil {
		return err
	}
	if err := nargs(fs, pos, 2, 2); err != nil {
		return err
	}
	revSet := false
	fs.Visit(func(f *flag.Flag) { revSet = revSet || f.Name == "if-revision" })
	if revSet && *create {
		return usageErr(errors.New("--if-revision and --create exclude each other"))
	}
	if *ttl < 0 {
		return usageErr(fmt.Errorf("negative --ttl %v", *ttl))
	}
	key, raw := pos[0], []byte(pos[1])
	if pos[1] == "-" {
		if raw, err = io.ReadAll(g.stdin); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
	}
	if *str {
		if g.isRaw() {
			return usageErr(errors.New("--string is for JSON codecs; with --codec raw every value is bytes"))
		}
		raw, _ = json.Marshal(string(raw))
	}
	v, err := g.parseValue(raw)
	if err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	octx, cancel := g.opCtx(ctx)
	defer cancel()
	var opts []contextd.WriteOption
	if *ttl > 0 {
		opts = append(opts, contextd.WithTTL(*ttl))
	}
	txn := s.cx.Txn().Put(key, v, opts...)
	switch {
	case *create:
		txn.IfAbsent(key)
	case revSet:
		txn.IfRevision(key, *ifRev)
	}
	rev, err := txn.Commit(octx)
	if err != nil {
		return err
	}
	if g.json {
		r := record{Key: key, Revision: rev}
		if *ttl > 0 {
			// By the local clock: the store's may differ a little.
			r.Expires = expiresPtr(time.Now().Add(*ttl))
		}
		return g.printJSON(r)
	}
	_, err = fmt.Fprintf(g.stdout, "revision %d\n", rev)
	return err
}
