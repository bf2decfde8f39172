package pgtest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/contextd-go/contextd/internal/pgtest"
)

// recorder is a testing.TB whose Fatal and Skip only record the message.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Fatal(args ...any)            { r.fatal = strings.TrimSpace(fmt.Sprint(args...)) }
func (r *recorder) Skip(args ...any)             { r.skip = strings.TrimSpace(fmt.Sprint(args...)) }
func (r *recorder) Fatalf(f string, args ...any) { r.Fatal(fmt.Sprintf(f, args...)) }

func TestRequireBadOverride(t *testing.T) {
	t.Setenv("CONTEXTD_POSTGRES_BIN", t.TempDir())
	r := &recorder{TB: t}
	if dir := pgtest.Require(r); dir != "" || !strings.Contains(r.fatal, "CONTEXTD_POSTGRES_BIN") {
		t.Errorf("Require with CONTEXTD_POSTGRES_BIN naming an empty directory = %q, fatal %q; want a failure naming the variable", dir, r.fatal)
	}
}

func TestRequireMissingSkipsOrFails(t *testing.T) {
	// No override, no initdb in PATH or the Debian directory.
	t.Setenv("CONTEXTD_POSTGRES_BIN", "")
	t.Setenv("PATH", t.TempDir())
	defer pgtest.SetDebianBinGlob(t.TempDir() + "/*/bin")()
	for _, require := range []string{"", "1"} {
		t.Setenv("CONTEXTD_REQUIRE_POSTGRES", require)
		r := &recorder{TB: t}
		dir := pgtest.Require(r)
		switch {
		case dir != "":
			t.Errorf("Require found %s with nothing to find", dir)
		case require == "" && !strings.Contains(r.skip, "apt-get install postgresql"):
			t.Errorf("without PostgreSQL, Require skipped with %q (fatal %q); want a skip with the install hint", r.skip, r.fatal)
		case require == "1" && !strings.Contains(r.fatal, "apt-get install postgresql"):
			t.Errorf("without PostgreSQL and with CONTEXTD_REQUIRE_POSTGRES=1, Require failed with %q (skip %q); want a failure with the install hint", r.fatal, r.skip)
		}
	}
}
