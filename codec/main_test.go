package codec_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests run contextd Contexts, which start goroutines; none may outlive
// its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
