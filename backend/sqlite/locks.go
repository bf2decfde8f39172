package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/locker"
)

var _ locker.Lister = (*Backend)(nil)

// sqlListLocks lists the live locks of a context with their holders.
//
//	takes:   ?1 name, ?2 now (ms)
//	returns: rows (key, token, fence, expires_ms), by key
const sqlListLocks = `SELECT key, token, fence, expires_ms FROM contextd_locks
WHERE name = ?1 AND expires_ms >= ?2 ORDER BY key`

// ListLocks lists the context's locks held now, with one statement.
// Expires is by the wall clock, as the lock rows are.
func (b *Backend) ListLocks(ctx context.Context, name string) ([]locker.Held, error) {
	op := fmt.Sprintf("list locks of %q", name)
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	var held []locker.Held
	err := b.read(ctx, func(c *dbConn) error {
		held = held[:0]
		rows, err := c.query(ctx, sqlListLocks, name, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h locker.Held
			var fence, expires int64
			if err := rows.Scan(&h.Key, &h.Token, &fence, &expires); err != nil {
				return err
			}
			h.Fence, h.Expires = uint64(fence), time.UnixMilli(expires)
			held = append(held, h)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, b.wrap(ctx, op, err)
	}
	return held, nil
}
