package contextd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// TestInDoubtCommitReachesTheCopyByItsEcho: on the memory backend the echo
// of an own commit arrives while the commit is in flight and waits
// without waking the read loop, for the reply applies the commit. When the
// commit is made but its reply is lost, the echo must still bring it into
// the copy, with no later write to wake the loop.
func TestInDoubtCommitReachesTheCopyByItsEcho(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n != 2 {
			return do()
		}
		if _, err := do(); err != nil {
			return backend.Head{}, err
		}
		return backend.Head{}, errReplyLost
	}
	c := open[int](t, w, "ctx", nil)
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateContext(ctx, "k", 2); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v, want the lost reply", err)
	}
	eventually(t, "the copy holds the commit in doubt", func() bool {
		v, ok, err := c.Get(ctx, "k")
		return err == nil && ok && v == 2
	})
}
