package redis

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"
)

// ErrNotReplicated is returned, in the WAIT-for-replicas mode
// (Options.WaitReplicas), by a write or lock operation that the master
// applied but fewer replicas than asked acknowledged within
// Options.WaitTimeout. The write may or may not survive a failover: treat
// it as of unknown outcome, like a timeout.
var ErrNotReplicated = errors.New("redis: write not acknowledged by enough replicas in time")

// run runs a writing script. In the WAIT-for-replicas mode it sends the
// script and a WAIT on one connection, in one round trip (WAIT counts the
// writes of its own connection only), and fails with ErrNotReplicated when
// too few replicas acknowledged.
func (b *Backend) run(ctx context.Context, s *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	if b.opts.WaitReplicas <= 0 {
		return s.Run(ctx, b.client, keys, args...)
	}
	cmd, err := b.runAndWait(ctx, s, keys, args)
	if err != nil {
		failed := goredis.NewCmd(ctx)
		failed.SetErr(err)
		return failed
	}
	return cmd
}

func (b *Backend) runAndWait(ctx context.Context, s *goredis.Script, keys []string, args []any) (*goredis.Cmd, error) {
	var node goredis.Pipeliner
	switch c := b.client.(type) {
	case *goredis.ClusterClient:
		// A cluster pipeline may split commands across nodes; pipeline on
		// the master of the context's slot instead.
		master, err := c.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = master.Pipeline()
	default:
		node = b.client.Pipeline()
	}
	for attempt := 0; ; attempt++ {
		// A pipelined EVALSHA has no NOSCRIPT fallback: load and retry.
		cmd := s.EvalSha(ctx, node, keys, args...)
		wait := node.Do(ctx, "WAIT", b.opts.WaitReplicas, b.opts.WaitTimeout.Milliseconds())
		_, _ = node.Exec(ctx)
		if err := cmd.Err(); attempt == 0 && isNoScript(err) {
			if err := s.Load(ctx, b.client).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if cmd.Err() != nil || isConflictReply(cmd) {
			return cmd, nil // the script's own answer (a refusal, say)
		}
		if err := wait.Err(); err != nil {
			return nil, fmt.Errorf("WAIT: %w", err)
		}
		acked, err := wait.Int64()
		if err != nil {
			return nil, fmt.Errorf("WAIT: %w", err)
		}
		if acked < int64(b.opts.WaitReplicas) {
			return nil, fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, acked, b.opts.WaitReplicas, b.opts.WaitTimeout)
		}
		return cmd, nil
	}
}

// isConflictReply reports the commit script's conflict reply, which
// writes nothing the caller must wait for.
func isConflictReply(cmd *goredis.Cmd) bool {
	res, ok := cmd.Val().([]any)
	if !ok || len(res) != 3 {
		return false
	}
	_, ok = res[0].(int64)
	return ok
}
