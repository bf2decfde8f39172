package backoff

import (
	"testing"
	"time"
)

func TestDoublesToTheCeilingWithJitter(t *testing.T) {
	b := New(50*time.Millisecond, time.Second)
	nominal := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for i, n := range nominal {
		n *= time.Millisecond
		if d := b.Next(); d < n/2 || d >= n*3/2 {
			t.Fatalf("pause %d = %v, want in [%v, %v)", i, d, n/2, n*3/2)
		}
	}
	b.Reset()
	if d := b.Next(); d < 25*time.Millisecond || d >= 75*time.Millisecond {
		t.Fatalf("pause after Reset = %v, want around the first delay", d)
	}
}

// TestJitterSpreads draws many pauses of one nominal delay, as many
// processes that failed together would: they must cover the whole window
// rather than bunch up.
func TestJitterSpreads(t *testing.T) {
	const n, d = 1000, time.Second
	var buckets [10]int
	for range n {
		j := Jitter(d)
		if j < d/2 || j >= d*3/2 {
			t.Fatalf("Jitter(%v) = %v, out of [%v, %v)", d, j, d/2, d*3/2)
		}
		buckets[(j-d/2)*10/d]++
	}
	for i, c := range buckets {
		// Uniform: 100 per tenth on average; 40 is more than 6 standard
		// deviations below.
		if c < 40 {
			t.Errorf("tenth %d of the window got %d of %d pauses: %v", i, c, n, buckets)
		}
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a non-positive duration is not 0")
	}
}
