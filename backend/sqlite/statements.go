package sqlite

// The SQL statements. Each opens with its contract: the parameters it
// takes (?1, ?2, ... bound in that order), what it returns, and the
// transaction it must run in. The tables are described in schema.go.
//
// Times are wall-clock milliseconds since the Unix epoch, taken by the
// calling process (time.Now().UnixMilli()) once its transaction holds the
// write lock. A lock is live while expires_ms >= now: it lives at least its
// TTL, rounded up to a whole millisecond. A key expires once expires_ms <=
// now (as the memory backend judges it), and only while expires_rev equals
// its revision: the put that set expires_ms is still its last write (see
// schema.go).

// Store (store.go).
const (
	// sqlHead reads a context's head and codec.
	//
	//	takes:   ?1 name
	//	returns: zero or one row (epoch, revision, commit_id, parent_id,
	//	         codec); a row with an empty epoch is a context that has
	//	         only taken locks, and reads as never written
	//	runs:    alone, or first in a read or write transaction
	sqlHead = `SELECT epoch, revision, commit_id, parent_id, codec
FROM contextd_contexts WHERE name = ?1`

	// sqlEntries reads every entry of a context.
	//
	//	takes:   ?1 name
	//	returns: one row (key, value, revision, commit_id, expiry in ms or
	//	         NULL) per live key, in no particular order
	//	runs:    after sqlHead in the same read transaction, so both see
	//	         one state
	sqlEntries = `SELECT key, value, revision, commit_id, CASE WHEN expires_rev = revision THEN expires_ms END
FROM contextd_entries WHERE name = ?1`

	// sqlGet reads one entry.
	//
	//	takes:   ?1 name, ?2 key
	//	returns: zero or one row (value, revision, commit_id, expiry in ms
	//	         or NULL)
	//	runs:    alone
	sqlGet = `SELECT value, revision, commit_id, CASE WHEN expires_rev = revision THEN expires_ms END
FROM contextd_entries WHERE name = ?1 AND key = ?2`

	// sqlWritten reads which commit last wrote a key, for a condition,
	// and whether the key is due (present until it is reaped, absent
	// after).
	//
	//	takes:   ?1 name, ?2 key, ?3 now
	//	returns: zero or one row (revision, commit_id, due: 1 if the key's
	//	         expiry is at or before ?3, else 0); none if the key is
	//	         absent
	//	runs:    alone or in a read transaction (the precheck), and in the
	//	         commit's write transaction (after sqlReap: nothing is due)
	sqlWritten = `SELECT revision, commit_id, coalesce(expires_ms <= ?3 AND expires_rev = revision, 0)
FROM contextd_entries WHERE name = ?1 AND key = ?2`

	// sqlSetHead records a commit as the context's head, creating the
	// context's row if it has none. The codec is recorded once: a row
	// whose codec is empty takes the batch's.
	//
	//	takes:   ?1 name, ?2 epoch, ?3 revision, ?4 commit id, ?5 parent
	//	         commit id, ?6 codec ('' = none claimed)
	//	returns: nothing
	//	runs:    in the commit's write transaction, after every check
	sqlSetHead = `INSERT INTO contextd_contexts (name, epoch, revision, commit_id, parent_id, codec)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (name) DO UPDATE SET
  epoch = excluded.epoch,
  revision = excluded.revision,
  commit_id = excluded.commit_id,
  parent_id = excluded.parent_id,
  codec = CASE WHEN contextd_contexts.codec = '' THEN excluded.codec ELSE contextd_contexts.codec END`

	// sqlPut writes one entry, stamped with the commit's revision and id,
	// and its expiry: a put without TTL clears the one it had.
	//
	//	takes:   ?1 name, ?2 key, ?3 value (a blob, never NULL), ?4
	//	         revision, ?5 commit id, ?6 expiry in ms (NULL: never)
	//	returns: nothing
	//	runs:    in the commit's write transaction
	sqlPut = `INSERT INTO contextd_entries (name, key, value, revision, commit_id, expires_ms, expires_rev)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?6 IS NOT NULL THEN ?4 END)
ON CONFLICT (name, key) DO UPDATE SET
  value = excluded.value,
  revision = excluded.revision,
  commit_id = excluded.commit_id,
  expires_ms = excluded.expires_ms,
  expires_rev = excluded.expires_rev`

	// sqlDelete deletes one entry; deleting an absent key is no error.
	//
	//	takes:   ?1 name, ?2 key
	//	returns: nothing
	//	runs:    in the commit's write transaction
	sqlDelete = `DELETE FROM contextd_entries WHERE name = ?1 AND key = ?2`
)

// Key expiry (expiry.go).
const (
	// sqlDue lists the keys of a context that are due.
	//
	//	takes:   ?1 name, ?2 now
	//	returns: rows (key) in byte order, the order the reaping commit's
	//	         deletes take (as in the memory backend)
	//	runs:    in a write transaction, before sqlReap; or alone, to see
	//	         whether Expire has anything to do
	sqlDue = `SELECT key FROM contextd_entries
WHERE name = ?1 AND expires_ms <= ?2 AND expires_rev = revision ORDER BY key`

	// sqlReap deletes the keys of a context that are due.
	//
	//	takes:   ?1 name, ?2 now
	//	returns: nothing
	//	runs:    after sqlDue in the same write transaction
	sqlReap = `DELETE FROM contextd_entries
WHERE name = ?1 AND expires_ms <= ?2 AND expires_rev = revision`

	// sqlNextExpiry reads when the next key of a context expires.
	//
	//	takes:   ?1 name
	//	returns: zero or one row (expires_ms)
	//	runs:    alone or after sqlReap in its write transaction
	sqlNextExpiry = `SELECT expires_ms FROM contextd_entries
WHERE name = ?1 AND expires_ms IS NOT NULL AND expires_rev = revision
ORDER BY expires_ms LIMIT 1`
)

// Change log (changelog.go).
const (
	// sqlClearChanges drops a context's whole log, when a commit creates a
	// new epoch: events of another history must never be returned.
	//
	//	takes:   ?1 name
	//	returns: nothing
	//	runs:    in the commit's write transaction
	sqlClearChanges = `DELETE FROM contextd_changes WHERE name = ?1`

	// sqlAppendChange logs a commit's event.
	//
	//	takes:   ?1 name, ?2 revision, ?3 event (backend.EncodeEvent form)
	//	returns: nothing
	//	runs:    in the commit's write transaction
	sqlAppendChange = `INSERT OR REPLACE INTO contextd_changes (name, revision, event)
VALUES (?1, ?2, ?3)`

	// sqlTrimChanges drops logged events at or below a revision.
	//
	//	takes:   ?1 name, ?2 revision
	//	returns: nothing
	//	runs:    in the commit's write transaction, after sqlAppendChange,
	//	         every trimEvery revisions
	sqlTrimChanges = `DELETE FROM contextd_changes WHERE name = ?1 AND revision <= ?2`

	// sqlChanges reads the logged events above a revision.
	//
	//	takes:   ?1 name, ?2 revision
	//	returns: rows (revision, event) in revision order
	//	runs:    after sqlHead in the same read transaction
	sqlChanges = `SELECT revision, event FROM contextd_changes
WHERE name = ?1 AND revision > ?2 ORDER BY revision`
)

// Locks (locker.go, and the lock checks of a lock-aware commit).
const (
	// sqlLockHolder reads the token of a key's live lock.
	//
	//	takes:   ?1 name, ?2 key, ?3 now
	//	returns: zero or one row (token); none if the key is free or its
	//	         lock expired
	//	runs:    alone (TryAcquire's precheck)
	sqlLockHolder = `SELECT token FROM contextd_locks
WHERE name = ?1 AND key = ?2 AND expires_ms >= ?3`

	// sqlLiveTokens lists the live locks of a context with their tokens,
	// for the lock checks of a commit.
	//
	//	takes:   ?1 name, ?2 now
	//	returns: rows (key, token); usually none
	//	runs:    in the commit's write transaction
	sqlLiveTokens = `SELECT key, token FROM contextd_locks
WHERE name = ?1 AND expires_ms >= ?2`

	// sqlNextFence draws the context's next fencing token, creating the
	// context's row (without an epoch: it still reads as never written)
	// if it has none.
	//
	//	takes:   ?1 name
	//	returns: one row (fence): 1 for the first, then one more than the
	//	         last, whatever the key
	//	runs:    first in TryAcquire's write transaction
	sqlNextFence = `INSERT INTO contextd_contexts (name, fence) VALUES (?1, 1)
ON CONFLICT (name) DO UPDATE SET fence = contextd_contexts.fence + 1
RETURNING fence`

	// sqlSetLock takes a lock if the key is free or its lock expired.
	//
	//	takes:   ?1 name, ?2 key, ?3 token, ?4 fence, ?5 expires_ms, ?6 now
	//	returns: 1 row affected if taken, 0 if another lock is live
	//	runs:    in TryAcquire's write transaction, after sqlNextFence
	//	         (rolled back, fence and all, if nothing was taken)
	sqlSetLock = `INSERT INTO contextd_locks (name, key, token, fence, expires_ms)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (name, key) DO UPDATE SET
  token = excluded.token,
  fence = excluded.fence,
  expires_ms = excluded.expires_ms
WHERE contextd_locks.expires_ms < ?6`

	// sqlRelease deletes a live lock held under a token.
	//
	//	takes:   ?1 name, ?2 key, ?3 token, ?4 now
	//	returns: 1 row affected if released, 0 if not held (free, expired,
	//	         or held under another token)
	//	runs:    alone, on the write connection
	sqlRelease = `DELETE FROM contextd_locks
WHERE name = ?1 AND key = ?2 AND token = ?3 AND expires_ms >= ?4`

	// sqlExtend moves the expiry of a live lock held under a token.
	//
	//	takes:   ?1 name, ?2 key, ?3 token, ?4 now, ?5 new expires_ms
	//	returns: 1 row affected if extended, 0 if not held
	//	runs:    alone, on the write connection
	sqlExtend = `UPDATE contextd_locks SET expires_ms = ?5
WHERE name = ?1 AND key = ?2 AND token = ?3 AND expires_ms >= ?4`

	// sqlLiveLocks lists the live locks of a context, for release
	// watchers.
	//
	//	takes:   ?1 name, ?2 now
	//	returns: rows (key, expires_ms)
	//	runs:    alone, on the poller's connection
	sqlLiveLocks = `SELECT key, expires_ms FROM contextd_locks
WHERE name = ?1 AND expires_ms >= ?2`
)

// Messages (broadcaster.go, poller.go).
const (
	// sqlPublish appends a message to the message log, with the id after
	// the newest one, or after the trim point if the log is empty. Ids so
	// increase by one per committed message (writers are serialized by the
	// write lock), so a reader that saw id n and then finds id n+2 knows
	// n+1 is not coming.
	//
	//	takes:   ?1 channel, ?2 payload
	//	returns: nothing; the new id is the statement's last insert id
	//	runs:    alone on the write connection (Publish), or in the
	//	         commit's write transaction (CommitAndPublish)
	sqlPublish = `INSERT INTO contextd_messages (id, channel, payload)
SELECT max(trimmed, coalesce((SELECT max(id) FROM contextd_messages), 0)) + 1, ?1, ?2
FROM contextd_bus WHERE id = 1`

	// sqlTrimMessages drops messages at or below an id.
	//
	//	takes:   ?1 id
	//	returns: nothing
	//	runs:    after the message with id ?1 + MessageLogLength was
	//	         published, in a write transaction, before sqlMarkTrimmed
	sqlTrimMessages = `DELETE FROM contextd_messages WHERE id <= ?1`

	// sqlMarkTrimmed records that every message at or below an id is
	// gone, so pollers that had not read that far report a loss.
	//
	//	takes:   ?1 id
	//	returns: nothing
	//	runs:    after sqlTrimMessages in the same write transaction
	sqlMarkTrimmed = `UPDATE contextd_bus SET trimmed = ?1 WHERE id = 1 AND trimmed < ?1`

	// sqlBusHead reads where the message log stands.
	//
	//	takes:   nothing
	//	returns: one row (trimmed, head): every message at or below trimmed
	//	         is gone; head is the newest id published (at least
	//	         trimmed)
	//	runs:    alone (Subscribe)
	sqlBusHead = `SELECT trimmed, max(trimmed, coalesce((SELECT max(id) FROM contextd_messages), 0))
FROM contextd_bus WHERE id = 1`

	// sqlPoll reads where the message log stands and the messages after
	// the poller's cursor, in one statement and so one read transaction.
	//
	//	takes:   ?1 cursor (exclusive), ?2 the channels as a JSON array of
	//	         strings, or NULL for every channel, ?3 most messages
	//	returns: rows (trimmed, head, id, channel, payload) in id order: one
	//	         per message, or one row with NULL id, channel and payload
	//	         when there is none. Every message at or below trimmed is
	//	         gone; head is the newest id published
	//	runs:    alone, on the poller's connection
	sqlPoll = `SELECT b.trimmed, b.head, m.id, m.channel, m.payload
FROM (SELECT trimmed, max(trimmed, coalesce((SELECT max(id) FROM contextd_messages), 0)) AS head
      FROM contextd_bus WHERE id = 1) AS b
LEFT JOIN contextd_messages AS m
  ON m.id > max(?1, b.trimmed) AND m.id <= b.head
  AND (?2 IS NULL OR m.channel IN (SELECT value FROM json_each(?2)))
ORDER BY m.id
LIMIT ?3`

	// sqlDataVersion tells whether another connection committed since the
	// connection last asked.
	//
	//	takes:   nothing
	//	returns: one row (n): a number that differs from the last one this
	//	         connection read whenever another connection committed
	//	         meanwhile
	//	runs:    alone, on the poller's connection, outside a transaction
	sqlDataVersion = `PRAGMA data_version`
)
