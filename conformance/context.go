package conformance

import "testing"

func testContext(t *testing.T, h Harness) {
	t.Skip("Context scenarios: being written")
}
