package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestMultiInstance(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"alpha   holds lock (fencing token 1), sets job to step 1",
		"bravo   holds lock (fencing token 2), sets job to step 2",
		"charlie holds lock (fencing token 3), sets job to step 3",
		"the other two instances see step 3 by charlie",
		"final job: step 3 by charlie",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
