package postgres

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/locker"
)

var _ locker.Lister = (*Backend)(nil)

// ListLocks returns the locks of context name held now (unexpired by the
// server's clock), sorted by key: one SELECT of the locks table.
func (b *Backend) ListLocks(ctx context.Context, name string) ([]locker.Held, error) {
	op := fmt.Sprintf("list locks of %q", name)
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	rows, err := b.pool.Query(ctx, b.sql.listLocks, []byte(name))
	if err != nil {
		return nil, wrap(ctx, op, err)
	}
	defer rows.Close()
	var held []locker.Held
	for rows.Next() {
		var (
			key   []byte
			h     locker.Held
			fence int64
		)
		if err := rows.Scan(&key, &h.Token, &fence, &h.Expires); err != nil {
			return nil, wrap(ctx, op, err)
		}
		h.Key, h.Fence = string(key), uint64(fence)
		held = append(held, h)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, op, err)
	}
	return held, nil
}
