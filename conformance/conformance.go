// Package conformance is the test suite every contextd backend passes.
//
// A backend's test calls Run with a Harness that makes backends over one
// shared storage. The suite drives the raw interfaces (Store, Locker,
// Broadcaster and the optional capabilities the harness declares, checking
// that undeclared ones are really absent) and then contextd.Context
// instances built over them, several at a time, as separate processes would
// run.
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Harness{
//			Capabilities: backend.Capabilities{AtomicPublish: true, ...},
//			NewBackend: func(t *testing.T) backend.Backend { ... },
//		})
//	}
package conformance

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
)

// Harness tells the suite how to make backends.
type Harness struct {
	// Capabilities are the optional capabilities the backend declares.
	// The suite checks that backend.CapabilitiesOf reports exactly these,
	// then tests each of them.
	Capabilities backend.Capabilities

	// NewBackend returns a backend for test t. Every call returns a
	// backend over the same storage as every other call of this harness,
	// as two processes connected to one Redis share it; the suite keeps
	// tests apart by giving each its own context names, and runs tests in
	// parallel. NewBackend registers any cleanup with t.Cleanup.
	NewBackend func(t *testing.T) backend.Backend

	// BreakSubscriptions, if not nil, makes every live subscription of the
	// storage lose messages or its connection (for Redis: CLIENT KILL TYPE
	// pubsub), so the suite can check the loss signal. When nil, the
	// suite checks the loss signal by overflowing a subscriber only if
	// OverflowAfter is set.
	BreakSubscriptions func(t *testing.T)

	// OverflowAfter, if above zero, is a number of unread messages after
	// which a subscription is guaranteed to have overflowed and must
	// report a loss.
	OverflowAfter int

	// MinLockTTL is the shortest lock TTL the backend supports (etcd
	// leases and NATS message TTLs count in whole seconds). The tests that
	// wait for a lock to expire use it instead of their default of 50 ms
	// when it is longer, and scale their timing margins with it. Zero
	// keeps the defaults.
	MinLockTTL time.Duration

	// ListLocks declares that the backend's Locker implements
	// locker.Lister. The suite then tests ListLocks; when false, it checks
	// that the backend does not implement it.
	ListLocks bool
}

// shortTTL is the TTL of locks that tests wait to expire: 50 ms, or
// MinLockTTL if that is longer.
func (h Harness) shortTTL() time.Duration { return max(defaultShortTTL, h.MinLockTTL) }

// expiryMargin is how long tests wait past a short TTL to be sure it has
// passed on the backend's clock: 10 ms for the default TTL, a fifth of
// MinLockTTL for longer ones.
func (h Harness) expiryMargin() time.Duration { return max(defaultExpiryMargin, h.MinLockTTL/5) }

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	if h.NewBackend == nil {
		t.Fatal("conformance: Harness.NewBackend is nil")
	}
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, h) })
	t.Run("Store", func(t *testing.T) { testStore(t, h) })
	t.Run("Locker", func(t *testing.T) { testLocker(t, h) })
	if h.Capabilities.FairLocks {
		t.Run("FairLocks", func(t *testing.T) { testFairLocks(t, h) })
		if h.Capabilities.ReleaseNotify {
			t.Run("Turns", func(t *testing.T) { testTurns(t, h) })
		}
	}
	if h.Capabilities.Expiry {
		t.Run("Expiry", func(t *testing.T) { testExpiry(t, h) })
	} else {
		t.Run("NoExpiry", func(t *testing.T) { testNoExpiry(t, h) })
	}
	t.Run("ListLocks", func(t *testing.T) { testListLocks(t, h) })
	t.Run("Broadcaster", func(t *testing.T) { testBroadcaster(t, h) })
	t.Run("Context", func(t *testing.T) { testContext(t, h) })
	t.Run("ContextAPI", func(t *testing.T) { testContextAPI(t, h) })
}

var (
	nameSeq atomic.Uint64
	// runID tells this process's names from those of every other run: a
	// second Run, in this process or another one, on the same shared
	// storage (a Redis that outlives the test) must not find the data of
	// the first.
	runID = func() string {
		var b [6]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		return hex.EncodeToString(b[:])
	}()
)

// uniqueName returns a context (or channel) name no other test, run or
// process uses.
func uniqueName(t *testing.T) string {
	n := nameSeq.Add(1)
	base := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return fmt.Sprintf("conf.%s.%s.%d", runID, base, n)
}
