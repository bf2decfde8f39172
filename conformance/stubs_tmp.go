package conformance

import "testing"

// Temporary until the raw-interface tests land.
func testCapabilities(t *testing.T, h Harness) { t.Skip("todo") }
func testStore(t *testing.T, h Harness)        { t.Skip("todo") }
func testLocker(t *testing.T, h Harness)       { t.Skip("todo") }
func testBroadcaster(t *testing.T, h Harness)  { t.Skip("todo") }
