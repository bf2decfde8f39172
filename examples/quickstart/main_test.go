package main

import (
	"bytes"
	"testing"

	"github.com/contextd-go/contextd/examples/internal/examplebackend"
)

func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	want := "Current Context (revision 2):\n  loggedIn: true\n  user:     Jane Doe <jane@example.com>\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
