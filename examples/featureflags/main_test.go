package main

import (
	"bytes"
	"testing"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/examples/internal/examplebackend"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// want is the whole output: the service reacts to every flip, in the
// order the admin made them, and ends with the admin's final flags.
const want = `service: starts with beta_banner=on dark_mode=off new_checkout=off new_pricing=off
service: dark_mode on -> dark theme
service: new_checkout on -> checkout v2
service: new_pricing on -> new prices
service: beta_banner removed -> no banner
service: dark_mode off -> light theme
service: now serves dark_mode=off new_checkout=on new_pricing=on
`

func TestFeatureFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestFeatureFlagsRedis runs the example on a redis-server of its own,
// twice: the second run starts from the flags the first one left.
func TestFeatureFlagsRedis(t *testing.T) {
	srv := redistest.Start(t, nil)
	for range 2 {
		var out bytes.Buffer
		if err := run(&out, examplebackend.Flags{Redis: srv.Addr()}); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
		}
	}
}
