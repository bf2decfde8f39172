package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/locker"
)

var _ locker.Lister = (*Backend)(nil)

// ListLocks lists the context's locks held now. It SCANs the server (in a
// Cluster, the master that holds the context's slot) for the context's
// lock keys, then reads them in one pipeline: it costs a pass over that
// server's keyspace, which is fine for an operator's tool, not for a hot
// path. Expires is the local time plus the lock's remaining time to live.
func (b *Backend) ListLocks(ctx context.Context, name string) ([]locker.Held, error) {
	op := fmt.Sprintf("list locks of %q", name)
	k := keysOf(name)
	prefix := k.lock("")
	var scanner goredis.Cmdable = b.client
	if cc, ok := b.client.(*goredis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, k.meta)
		if err != nil {
			return nil, fmt.Errorf("redis: %s: %w", op, err)
		}
		scanner = node
	}
	var names []string
	var cursor uint64
	for {
		batch, next, err := scanner.Scan(ctx, cursor, globEscape(prefix)+"*", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: %s: %w", op, err)
		}
		names = append(names, batch...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	slices.Sort(names)
	names = slices.Compact(names) // SCAN may return a key twice
	if len(names) == 0 {
		return nil, nil
	}
	start := time.Now()
	gets := make([]*goredis.StringCmd, len(names))
	ttls := make([]*goredis.DurationCmd, len(names))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, n := range names {
			gets[i] = p.Get(ctx, n)
			ttls[i] = p.PTTL(ctx, n)
		}
		return nil
	})
	if err != nil && err != goredis.Nil {
		return nil, fmt.Errorf("redis: %s: %w", op, err)
	}
	held := make([]locker.Held, 0, len(names))
	for i, n := range names {
		v, err := gets[i].Result()
		ttl := ttls[i].Val()
		if err != nil || ttl <= 0 {
			continue // released or expired since the SCAN
		}
		// "<token>:<fence>" (lockValue): the last ':' ends the token.
		i := strings.LastIndexByte(v, ':')
		if i < 0 {
			return nil, fmt.Errorf("redis: %s: lock %q holds %q, not <token>:<fence>", op, n, v)
		}
		token := v[:i]
		f, ferr := strconv.ParseUint(v[i+1:], 10, 64)
		if ferr != nil {
			return nil, fmt.Errorf("redis: %s: lock %q holds %q, not <token>:<fence>", op, n, v)
		}
		held = append(held, locker.Held{Key: strings.TrimPrefix(n, prefix), Token: token, Fence: f, Expires: start.Add(ttl)})
	}
	return held, nil
}
