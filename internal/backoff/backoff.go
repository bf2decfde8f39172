// Package backoff spaces out retries: delays that double from a first one
// up to a ceiling, each drawn at random around its nominal value, so that
// many processes that failed at the same moment (every instance of a fleet
// when Redis restarts) do not retry, reconnect and reload in lockstep.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields the pauses of one sequence of retries. The zero value is
// not usable; make one with New.
type Backoff struct {
	first, ceiling, next time.Duration
}

// New returns a Backoff whose nominal delay starts at first and doubles up
// to ceiling.
func New(first, ceiling time.Duration) Backoff {
	return Backoff{first: first, ceiling: max(ceiling, first), next: first}
}

// Next returns the pause before the next retry: the nominal delay,
// jittered, and doubles the nominal delay for the time after.
func (b *Backoff) Next() time.Duration {
	d := Jitter(b.next)
	b.next = min(2*b.next, b.ceiling)
	return d
}

// Reset starts the sequence again from the first delay, after a success.
func (b *Backoff) Reset() { b.next = b.first }

// Jitter returns a duration drawn uniformly from [d/2, 3d/2): on average
// d, and spread over a whole d.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}
