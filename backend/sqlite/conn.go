package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
)

// dbConn is one connection to the file with the statements prepared on it,
// each prepared on first use and kept while the connection lives.
// Transactions are BEGIN, COMMIT and ROLLBACK statements on it rather than
// a *sql.Tx: database/sql prepares a connection's statements anew in every
// *sql.Tx, which costs more than the statements themselves. A dbConn is
// used by one goroutine at a time.
type dbConn struct {
	c     *sql.Conn
	stmts map[string]*sql.Stmt
	// broken: the connection's state is in doubt (a ROLLBACK failed, or the
	// driver said so); it is closed instead of reused.
	broken bool
}

// Statements that frame transactions.
const (
	// sqlBeginWrite starts a write transaction and takes the file's write
	// lock at once, so every read in it sees the state it writes over.
	//
	//	takes:   nothing
	//	returns: nothing, or SQLITE_BUSY at once while another connection
	//	         holds the write lock (busy_timeout is 0; retry waits)
	//	runs:    on a pool's connection outside a transaction
	sqlBeginWrite = `BEGIN IMMEDIATE`

	// sqlBeginRead starts a read transaction: every statement until
	// sqlRollback sees one state of the file (the first read fixes it).
	//
	//	takes:   nothing
	//	returns: nothing
	//	runs:    on a connection outside a transaction
	sqlBeginRead = `BEGIN`

	// sqlCommit commits a write transaction.
	//
	//	takes:   nothing
	//	returns: nothing; on an error nothing was committed, and the
	//	         connection is rolled back or dropped
	//	runs:    last in a write transaction
	sqlCommit = `COMMIT`

	// sqlRollback ends a transaction without its writes (a read
	// transaction has none).
	//
	//	takes:   nothing
	//	returns: nothing
	//	runs:    last in a transaction
	sqlRollback = `ROLLBACK`
)

func (c *dbConn) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.stmts[q]; ok {
		return st, nil
	}
	st, err := c.c.PrepareContext(ctx, q)
	if err != nil {
		c.noteErr(err)
		return nil, err
	}
	c.stmts[q] = st
	return st, nil
}

// exec runs statement q with args.
func (c *dbConn) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	res, err := st.ExecContext(ctx, args...)
	c.noteErr(err)
	return res, err
}

// scan runs statement q with args and scans its first row into dest; no
// row gives sql.ErrNoRows.
func (c *dbConn) scan(ctx context.Context, q string, args []any, dest ...any) error {
	st, err := c.stmt(ctx, q)
	if err != nil {
		return err
	}
	err = st.QueryRowContext(ctx, args...).Scan(dest...)
	c.noteErr(err)
	return err
}

// query runs statement q with args; the caller closes the rows.
func (c *dbConn) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	c.noteErr(err)
	return rows, err
}

// noteErr marks the connection broken if err says it is.
func (c *dbConn) noteErr(err error) {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
		c.broken = true
	}
}

// close closes the statements and gives the connection back to
// database/sql, which drops it if the driver found it bad.
func (c *dbConn) close() {
	for _, st := range c.stmts {
		_ = st.Close()
	}
	c.stmts = nil
	_ = c.c.Close()
}

// connPool hands out the connections of one *sql.DB, at most as many as
// it has slots, first come first served. Idle connections keep their
// prepared statements.
type connPool struct {
	db    *sql.DB
	slots chan struct{} // one per connection open or being opened
	idle  chan *dbConn

	mu     sync.Mutex
	closed bool
}

func newConnPool(db *sql.DB, size int) *connPool {
	return &connPool{db: db, slots: make(chan struct{}, size), idle: make(chan *dbConn, size)}
}

// get returns an idle connection, or opens one if a slot is free, or waits
// for one until ctx ends.
func (p *connPool) get(ctx context.Context) (*dbConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
		c, err := p.open(ctx)
		if err != nil {
			<-p.slots
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// open opens a connection outside the pool's slots (the poller's), or for
// one of them.
func (p *connPool) open(ctx context.Context) (*dbConn, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	sc, err := p.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return &dbConn{c: sc, stmts: make(map[string]*sql.Stmt)}, nil
}

// put gives c back: to the idle connections, or closed if it is broken or
// the pool is closed.
func (p *connPool) put(c *dbConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.broken || p.closed {
		c.close()
		<-p.slots
		return
	}
	p.idle <- c // never blocks: idle has room for every slot
}

// close closes the idle connections and the *sql.DB; connections in use
// are closed when they are put back.
func (p *connPool) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for {
		select {
		case c := <-p.idle:
			c.close()
			<-p.slots
		default:
			return p.db.Close()
		}
	}
}
