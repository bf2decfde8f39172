// Command featureflags shows feature flags with live reload. An admin
// process flips flags; a service process reacts to each change as it
// arrives, through Watch, and reads the flags from its local copy, without
// a round trip, whenever it serves a request.
//
//	go run ./examples/featureflags
//
// With -redis host:port, -postgres URL or -sqlite FILE the two share that
// backend instead of the embedded memory one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

// contextKey names the shared context of flags.
const contextKey = "feature_flags"

// effects says what the service does with each flag off and on.
var effects = map[string][2]string{
	"dark_mode":    {"light theme", "dark theme"},
	"new_checkout": {"checkout v1", "checkout v2"},
	"new_pricing":  {"old prices", "new prices"},
	"beta_banner":  {"no banner", "beta banner"},
}

func main() {
	flags := examplebackend.Register(flag.CommandLine)
	flag.Parse()
	if err := run(os.Stdout, *flags); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, flags examplebackend.Flags) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	backends := examplebackend.New(flags)
	defer backends.Close()

	admin, err := examplebackend.OpenContext[bool](ctx, backends, contextKey, nil)
	if err != nil {
		return err
	}
	defer admin.Close()
	service, err := examplebackend.OpenContext[bool](ctx, backends, contextKey, nil)
	if err != nil {
		return err
	}
	defer service.Close()

	// The flags as the day starts (this also resets an earlier run's flags
	// when Redis kept them).
	if err := admin.TransactionalUpdate(ctx, map[string]bool{
		"dark_mode": false, "new_checkout": false, "new_pricing": false, "beta_banner": true,
	}); err != nil {
		return err
	}

	// The service starts: watch first, then read, so that no change can
	// fall between the two.
	if err := service.Sync(ctx); err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	changes := service.Watch(watchCtx)
	fmt.Fprintf(out, "service: starts with %s\n", describe(ctx, service))

	stopAt := make(chan uint64, 1)
	served := make(chan error, 1)
	go func() { served <- react(out, changes, stopAt) }()

	flipped := make(chan error, 1)
	go func() { flipped <- rollout(ctx, admin) }()
	if err := <-flipped; err != nil {
		return err
	}

	// The demo ends once the service has reacted to everything the admin
	// did. The admin wrote last, so its copy is at the store's revision.
	// (Not service.Sync: a snapshot would hand the service the net effect
	// of the changes still in flight, not each of them.)
	stopAt <- admin.Revision()
	if err := <-served; err != nil {
		return err
	}
	fmt.Fprintf(out, "service: now serves %s\n", describe(ctx, service))
	return nil
}

// rollout is the admin's side: one flag after another, as fast as it can.
func rollout(ctx context.Context, admin *contextd.Context[bool]) error {
	if err := admin.UpdateContext(ctx, "dark_mode", true); err != nil {
		return err
	}
	// Launched together: no request sees the new checkout with the old
	// prices.
	if err := admin.TransactionalUpdate(ctx, map[string]bool{"new_checkout": true, "new_pricing": true}); err != nil {
		return err
	}
	if err := admin.Delete(ctx, "beta_banner"); err != nil {
		return err
	}
	return admin.UpdateContext(ctx, "dark_mode", false) // rolled back after complaints
}

// react is the service's side: it applies each change as it arrives, in
// the order the admin made them, until it has seen revision stopAt (the
// rollout ends with a write of one key, so that is one change). A real
// service would range over changes until it shuts down.
func react(out io.Writer, changes <-chan contextd.Change[bool], stopAt <-chan uint64) error {
	var seen, last uint64
	for last == 0 || seen < last {
		select {
		case ch, ok := <-changes:
			if !ok {
				return errors.New("service: watch ended early")
			}
			seen = ch.Revision
			switch {
			case ch.Reset:
				// Changes were missed (a slow reader, or the store lost
				// data): a real service would re-read all flags here.
				fmt.Fprintln(out, "service: missed changes, re-reading all flags")
			case ch.Err != nil:
				fmt.Fprintf(out, "service: flag %s is unreadable, keeping the old behaviour: %v\n", ch.Key, ch.Err)
			case ch.Deleted:
				fmt.Fprintf(out, "service: %s removed -> %s\n", ch.Key, effects[ch.Key][0])
			default:
				fmt.Fprintf(out, "service: %s %s -> %s\n", ch.Key, onOff(ch.Value), effect(ch.Key, ch.Value))
			}
		case last = <-stopAt:
			stopAt = nil
		}
	}
	return nil
}

// describe lists the flags from the local copy: what a request handler
// reads, at no cost.
func describe(ctx context.Context, flags *contextd.Context[bool]) string {
	all, err := flags.GetContext(ctx)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(all)) {
		parts = append(parts, k+"="+onOff(all[k]))
	}
	return strings.Join(parts, " ")
}

func effect(flag string, on bool) string {
	if on {
		return effects[flag][1]
	}
	return effects[flag][0]
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
