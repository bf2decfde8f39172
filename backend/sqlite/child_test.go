package sqlite_test

import (
	"fmt"
	"os"
)

// childEnv names the role of a child process started by a test.
const childEnv = "CONTEXTD_SQLITE_CHILD"

func runChild(role string) int {
	fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
	return 2
}
