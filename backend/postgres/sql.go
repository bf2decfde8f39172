package postgres

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// The SQL. Every statement is one round trip and runs in one transaction
// (its own, implicit one): a statement sees one snapshot, and the commit is
// a function, so its checks, writes and NOTIFY commit or roll back
// together. {{s}} stands for the quoted schema name. Context names and keys
// are bytea, so any Go string is stored as it is.
//
// Lock and key expiry are judged by clock_timestamp(), the server's clock
// at the moment of the check (now() would be the start of the transaction,
// which for a commit that waited for its context's row is some time
// before it wrote anything). A commit reads it once it holds the context's
// row: commits of one context so take their moments in commit order, its
// reaping and its TTLs count from one moment, and no key outlives its TTL
// by the time a commit waited.

// statements holds the SQL with the schema filled in.
type statements struct {
	schemaVersion, schemaLock, schemaExists, createSchema string
	expiryReady, createExpiry                             string
	load, get, revision, commit, expire                   string
	changes, fetchEvent, fetchMessage                     string
	acquire, release, extend, publish, publishLarge       string
	listLocks                                             string
}

func statementsFor(schema string) statements {
	s := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{{s}}", s)
	return statements{
		schemaVersion: r.Replace(schemaVersionSQL),
		schemaLock:    schemaLockSQL,
		schemaExists:  schemaExistsSQL,
		createSchema:  r.Replace(createSchemaSQL),
		expiryReady:   expiryReadySQL,
		createExpiry:  r.Replace(createExpirySQL),
		load:          r.Replace(loadSQL),
		get:           r.Replace(getSQL),
		revision:      r.Replace(revisionSQL),
		commit:        r.Replace(commitSQL),
		expire:        r.Replace(expireSQL),
		changes:       r.Replace(changesSQL),
		fetchEvent:    r.Replace(fetchEventSQL),
		fetchMessage:  r.Replace(fetchMessageSQL),
		acquire:       r.Replace(acquireSQL),
		release:       r.Replace(releaseSQL),
		extend:        r.Replace(extendSQL),
		publish:       publishSQL,
		publishLarge:  r.Replace(publishLargeSQL),
		listLocks:     r.Replace(listLocksSQL),
	}
}

// schemaVersionSQL reads the schema's version.
//
//	takes:   nothing
//	returns: one row (version int), or fails with undefined_table (42P01)
//	         or invalid_schema_name (3F000) when the schema is not there
const schemaVersionSQL = `SELECT version FROM {{s}}.schema_version`

// schemaLockSQL serialises schema creation among processes, until the
// transaction ends.
//
//	takes:   $1 schema name
//	returns: nothing
const schemaLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('contextd schema ' || $1, 0))`

// schemaExistsSQL says whether the version table exists, without failing
// (and so aborting the transaction) when it does not.
//
//	takes:   $1 the version table's quoted, schema-qualified name
//	returns: one row (exists)
const schemaExistsSQL = `SELECT to_regclass($1) IS NOT NULL`

// currentSchemaVersion is the version createSchemaSQL makes. A database
// with another version is refused, never migrated silently.
const currentSchemaVersion = 1

// createSchemaSQL makes the schema, version 1, as releases before key
// expiry made it: keep it so (TestOldSchemaGainsExpiry makes an old schema
// with it), and add to version 1 only in the way createExpirySQL does. It
// runs in a transaction holding an advisory lock on the schema's name,
// after checking that no version row exists (see schema.go).
//
//	takes:   nothing
//	returns: nothing
//
// Tables:
//
//	contexts  one row per context: epoch, revision, codec, the last commit
//	          and its parent, and the fencing counter; made by the first
//	          commit or lock of the context
//	entries   one row per live key: value, the revision and the commit
//	          that last wrote it
//	changes   the change log: the encoded event of each recent revision;
//	          with the log switched off only events too large for NOTIFY
//	locks     one row per lock: token, fence, expiry; a row whose expiry
//	          has passed is a free lock
//	messages  payloads of Publish too large for NOTIFY, for a minute
//
// contexts and entries are updated in place all the time: their fill
// factor leaves room on each page for HOT updates.
const createSchemaSQL = `
CREATE SCHEMA IF NOT EXISTS {{s}};
CREATE TABLE {{s}}.schema_version (
	only_row bool PRIMARY KEY DEFAULT true CHECK (only_row),
	version int NOT NULL
);
CREATE TABLE {{s}}.contexts (
	name bytea PRIMARY KEY,
	epoch text NOT NULL DEFAULT '',
	rev bigint NOT NULL DEFAULT 0,
	codec text NOT NULL DEFAULT '',
	commit_id text NOT NULL DEFAULT '',
	parent_id text NOT NULL DEFAULT '',
	fence bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
CREATE TABLE {{s}}.entries (
	context bytea NOT NULL,
	key bytea NOT NULL,
	value bytea NOT NULL,
	rev bigint NOT NULL,
	commit_id text NOT NULL,
	PRIMARY KEY (context, key)
) WITH (fillfactor = 70);
CREATE TABLE {{s}}.changes (
	context bytea NOT NULL,
	rev bigint NOT NULL,
	event bytea NOT NULL,
	PRIMARY KEY (context, rev)
);
CREATE TABLE {{s}}.locks (
	context bytea NOT NULL,
	key bytea NOT NULL,
	token text NOT NULL,
	fence bigint NOT NULL,
	expires timestamptz NOT NULL,
	PRIMARY KEY (context, key)
) WITH (fillfactor = 70);
CREATE TABLE {{s}}.messages (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	payload bytea NOT NULL
);
CREATE INDEX ON {{s}}.messages (at);

-- commit checks and applies one batch; see commitSQL for its contract.
CREATE FUNCTION {{s}}.commit(
	p_name bytea, p_codec text, p_epoch text, p_commit text,
	p_put_keys bytea[], p_put_values bytea[], p_del_keys bytea[], p_op_keys bytea[],
	p_cond_keys bytea[], p_cond_revs bigint[], p_cond_commits text[],
	p_check_locks bool, p_lease_keys bytea[], p_lease_tokens text[], p_lease_fences bigint[],
	p_body bytea, p_log bool, p_log_len int, p_channel text, p_notify_max int,
	OUT r_epoch text, OUT r_rev bigint, OUT r_commit text, OUT r_parent text)
LANGUAGE plpgsql AS $fn$
DECLARE
	m {{s}}.contexts%ROWTYPE;
	bad bigint;
	payload bytea;
	note text;
	stored bool := p_log;
	has_conds bool := cardinality(p_cond_keys) > 0;
BEGIN
	-- A condition that fails already fails before waiting for the
	-- context's row (it failed at this statement's snapshot): under
	-- contention most losers leave here.
	IF has_conds THEN
		SELECT c.i INTO bad
		FROM unnest(p_cond_keys, p_cond_revs, p_cond_commits) WITH ORDINALITY AS c(key, rev, cmt, i)
		LEFT JOIN {{s}}.entries e ON e.context = p_name AND e.key = c.key
		WHERE coalesce(e.rev, 0) <> c.rev OR (c.rev <> 0 AND c.cmt <> '' AND e.commit_id <> c.cmt)
		ORDER BY c.i LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = 'CDC01', MESSAGE = (bad - 1)::text;
		END IF;
	END IF;

	-- The context's row, locked: commits (and successful lock
	-- acquisitions) of one context take their turns here.
	SELECT * INTO m FROM {{s}}.contexts c WHERE c.name = p_name FOR UPDATE;
	IF NOT FOUND THEN
		INSERT INTO {{s}}.contexts (name) VALUES (p_name) ON CONFLICT DO NOTHING;
		SELECT * INTO m FROM {{s}}.contexts c WHERE c.name = p_name FOR UPDATE;
	END IF;
	IF m.codec <> '' AND p_codec <> '' AND m.codec <> p_codec THEN
		RAISE EXCEPTION USING ERRCODE = 'CDX01', MESSAGE = m.codec;
	END IF;

	-- Conditions, again under the lock: a key's revision (0: absent) and,
	-- when given with a revision above 0, the commit that wrote it.
	IF has_conds THEN
		SELECT c.i INTO bad
		FROM unnest(p_cond_keys, p_cond_revs, p_cond_commits) WITH ORDINALITY AS c(key, rev, cmt, i)
		LEFT JOIN {{s}}.entries e ON e.context = p_name AND e.key = c.key
		WHERE coalesce(e.rev, 0) <> c.rev OR (c.rev <> 0 AND c.cmt <> '' AND e.commit_id <> c.cmt)
		ORDER BY c.i LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = 'CDC01', MESSAGE = (bad - 1)::text;
		END IF;
	END IF;

	IF p_check_locks THEN
		-- Every lease must still be held: same token and fence, not expired.
		IF cardinality(p_lease_keys) > 0 THEN
			SELECT l.i INTO bad
			FROM unnest(p_lease_keys, p_lease_tokens, p_lease_fences) WITH ORDINALITY AS l(key, token, fence, i)
			WHERE NOT EXISTS (
				SELECT 1 FROM {{s}}.locks k
				WHERE k.context = p_name AND k.key = l.key AND k.token = l.token
				  AND k.fence = l.fence AND k.expires > clock_timestamp())
			ORDER BY l.i LIMIT 1;
			IF FOUND THEN
				RAISE EXCEPTION USING ERRCODE = 'CDN01', MESSAGE = (bad - 1)::text;
			END IF;
		END IF;
		-- No key written may be locked by a holder whose lease is not here.
		SELECT o.i INTO bad
		FROM unnest(p_op_keys) WITH ORDINALITY AS o(key, i)
		JOIN {{s}}.locks k ON k.context = p_name AND k.key = o.key
		WHERE k.expires > clock_timestamp() AND NOT coalesce(k.token = ANY (p_lease_tokens), false)
		ORDER BY o.i LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = 'CDL01', MESSAGE = (bad - 1)::text;
		END IF;
	END IF;

	IF m.epoch = '' THEN
		-- A context without an epoch starts one, and a log of its own.
		r_epoch := p_epoch;
		r_rev := 1;
		r_parent := '';
		DELETE FROM {{s}}.changes WHERE context = p_name;
	ELSE
		r_epoch := m.epoch;
		r_rev := m.rev + 1;
		r_parent := m.commit_id;
	END IF;
	r_commit := p_commit;

	-- The event, framed as backend.FrameEvent does: version 1, kind 1,
	-- epoch, revision (8 bytes big-endian), commit id and parent id, each
	-- string with a length byte, then the body made by the caller.
	payload := '\x0101'::bytea
		|| set_byte('\x00'::bytea, 0, octet_length(r_epoch)) || convert_to(r_epoch, 'UTF8')
		|| int8send(r_rev)
		|| set_byte('\x00'::bytea, 0, octet_length(r_commit)) || convert_to(r_commit, 'UTF8')
		|| set_byte('\x00'::bytea, 0, octet_length(r_parent)) || convert_to(r_parent, 'UTF8')
		|| p_body;
	IF p_channel <> '' THEN
		note := 'i' || translate(encode(payload, 'base64'), E'\n', '');
		IF octet_length(note) > p_notify_max THEN
			-- Too large for NOTIFY: receivers fetch it from the log.
			note := 'p' || r_rev || ':' || translate(encode(p_name, 'base64'), E'\n', '');
			stored := true;
		END IF;
	END IF;

	-- Every write in one statement.
	WITH u AS (
		UPDATE {{s}}.contexts c
		SET epoch = r_epoch, rev = r_rev, commit_id = r_commit, parent_id = r_parent,
		    codec = CASE WHEN c.codec = '' THEN p_codec ELSE c.codec END
		WHERE c.name = p_name
	), puts AS (
		INSERT INTO {{s}}.entries AS e (context, key, value, rev, commit_id)
		SELECT p_name, o.key, o.value, r_rev, r_commit FROM unnest(p_put_keys, p_put_values) AS o(key, value)
		ON CONFLICT (context, key) DO UPDATE SET value = excluded.value, rev = excluded.rev, commit_id = excluded.commit_id
	), dels AS (
		DELETE FROM {{s}}.entries WHERE context = p_name AND key = ANY (p_del_keys)
	), logged AS (
		INSERT INTO {{s}}.changes (context, rev, event) SELECT p_name, r_rev, payload WHERE stored
	)
	SELECT 1 INTO bad;
	IF stored AND (NOT p_log OR r_rev % 16 = 0) THEN
		DELETE FROM {{s}}.changes WHERE context = p_name AND rev <= r_rev - p_log_len;
	END IF;
	IF note IS NOT NULL THEN
		PERFORM pg_notify(p_channel, note);
	END IF;
END
$fn$;

-- acquire takes a lock; see acquireSQL for its contract.
CREATE FUNCTION {{s}}.acquire(p_name bytea, p_key bytea, p_token text, p_ttl_us bigint)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
	f bigint;
BEGIN
	-- Held: a plain read, no row lock, nothing written.
	PERFORM FROM {{s}}.locks l
	WHERE l.context = p_name AND l.key = p_key AND l.expires > clock_timestamp();
	IF FOUND THEN
		RETURN NULL;
	END IF;
	-- Looks free: draw a fence (this waits for a commit of the context
	-- in progress) and take the lock unless someone took it meanwhile.
	INSERT INTO {{s}}.contexts AS c (name, fence) VALUES (p_name, 1)
	ON CONFLICT (name) DO UPDATE SET fence = c.fence + 1
	RETURNING c.fence INTO f;
	INSERT INTO {{s}}.locks AS l (context, key, token, fence, expires)
	VALUES (p_name, p_key, p_token, f, clock_timestamp() + p_ttl_us * interval '1 microsecond')
	ON CONFLICT (context, key) DO UPDATE
		SET token = excluded.token, fence = excluded.fence, expires = excluded.expires
		WHERE l.expires <= clock_timestamp()
	RETURNING l.fence INTO f;
	RETURN f;
END
$fn$;

INSERT INTO {{s}}.schema_version (version) VALUES (1);
`

// expiryReadySQL says whether the schema has the key expiry additions of
// createExpirySQL in their latest form: the function commit_ttl exists and
// returns r_conflict (createExpirySQL runs in one transaction, so then
// everything else it makes exists too). A schema made by a build before
// commit_ttl returned its conflicts has a commit_ttl without r_conflict:
// createExpirySQL replaces it.
//
//	takes:   $1 schema name
//	returns: one row (exists)
const expiryReadySQL = `SELECT EXISTS (
	SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname = $1 AND p.proname = 'commit_ttl' AND 'r_conflict' = ANY (p.proargnames))`

// createExpirySQL adds key expiry to a schema of version 1, made by this
// release or an earlier one. It runs in a transaction holding the advisory
// lock on the schema's name, when expiryReadySQL says it has not run, and
// changes nothing an earlier release reads or writes, so the version stays
// 1 (see the package doc, "Expiry and the schema"):
//
//	entries.expires_at   when the key expires, by the server's clock;
//	                     NULL: never
//	entries.expires_rev  the revision whose put set expires_at: the
//	                     expiry holds only while it equals entries.rev,
//	                     so a put by an earlier release (which leaves
//	                     both columns alone) clears it
//	entries_expiry       index on (context, expires_at) of the keys that
//	                     expire: due keys and the next deadline are one
//	                     index range
//	uvarint(), emit(), reap(), commit_ttl(), expire()
//	                     the functions below; commit() of version 1 stays
//	                     for the processes of an earlier release
//
// Every statement may run again on a schema that has some of it: columns
// and index IF NOT EXISTS, functions CREATE OR REPLACE. commit_ttl is
// dropped first, because CREATE OR REPLACE cannot change a function's
// result columns, and builds before it returned r_conflict made it
// without; no release before key expiry calls it.
//
// Adding nullable columns without a default rewrites nothing; the ALTER
// takes the table's lock for a moment.
//
//	takes:   nothing
//	returns: nothing
const createExpirySQL = `
DROP FUNCTION IF EXISTS {{s}}.commit_ttl(bytea, text, text, text, bytea[], bytea[], bytea[], bytea[],
	bytea[], bigint[], text[], bool, bytea[], text[], bigint[], bytea, bool, int, text, int, bigint[], text);
ALTER TABLE {{s}}.entries ADD COLUMN IF NOT EXISTS expires_at timestamptz,
	ADD COLUMN IF NOT EXISTS expires_rev bigint;
CREATE INDEX IF NOT EXISTS entries_expiry ON {{s}}.entries (context, expires_at)
	WHERE expires_at IS NOT NULL;

-- uvarint is n (at least 0) as encoding/binary.AppendUvarint writes it.
CREATE OR REPLACE FUNCTION {{s}}.uvarint(n bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
	r bytea := ''::bytea;
BEGIN
	WHILE n >= 128 LOOP
		r := r || set_byte('\x00'::bytea, 0, ((n & 127) | 128)::int);
		n := n >> 7;
	END LOOP;
	RETURN r || set_byte('\x00'::bytea, 0, n::int);
END
$fn$;

-- emit frames the event of a commit, logs it and notifies it: see
-- commitSQL. A fresh epoch drops the context's old log first.
CREATE OR REPLACE FUNCTION {{s}}.emit(
	p_name bytea, p_fresh bool, p_epoch text, p_rev bigint, p_commit text, p_parent text,
	p_body bytea, p_log bool, p_log_len int, p_channel text, p_notify_max int)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
	payload bytea;
	note text;
	stored bool := p_log;
BEGIN
	-- The event, framed as backend.FrameEvent does: version 1, kind 1,
	-- epoch, revision (8 bytes big-endian), commit id and parent id, each
	-- string with a length byte, then the body.
	payload := '\x0101'::bytea
		|| set_byte('\x00'::bytea, 0, octet_length(p_epoch)) || convert_to(p_epoch, 'UTF8')
		|| int8send(p_rev)
		|| set_byte('\x00'::bytea, 0, octet_length(p_commit)) || convert_to(p_commit, 'UTF8')
		|| set_byte('\x00'::bytea, 0, octet_length(p_parent)) || convert_to(p_parent, 'UTF8')
		|| p_body;
	IF p_channel <> '' THEN
		note := 'i' || translate(encode(payload, 'base64'), E'\n', '');
		IF octet_length(note) > p_notify_max THEN
			-- Too large for NOTIFY: receivers fetch it from the log.
			note := 'p' || p_rev || ':' || translate(encode(p_name, 'base64'), E'\n', '');
			stored := true;
		END IF;
	END IF;
	IF p_fresh THEN
		DELETE FROM {{s}}.changes WHERE context = p_name;
	END IF;
	IF stored THEN
		INSERT INTO {{s}}.changes (context, rev, event) VALUES (p_name, p_rev, payload);
		IF NOT p_log OR p_rev % 16 = 0 THEN
			DELETE FROM {{s}}.changes WHERE context = p_name AND rev <= p_rev - p_log_len;
		END IF;
	END IF;
	IF note IS NOT NULL THEN
		PERFORM pg_notify(p_channel, note);
	END IF;
END
$fn$;

-- reap deletes the keys of a context due at p_now as one commit, the
-- revision after the head given (epoch, rev, commit, parent), with the
-- commit id p_commit, no origin, and its keys' deletes in byte order (as
-- the memory backend orders them). The caller holds the context's row
-- locked. It returns the new head, or the head given when nothing was
-- due, and the keys deleted.
CREATE OR REPLACE FUNCTION {{s}}.reap(
	p_name bytea, p_now timestamptz, p_commit text,
	p_log bool, p_log_len int, p_channel text, p_notify_max int,
	INOUT r_epoch text, INOUT r_rev bigint, INOUT r_commit text, INOUT r_parent text,
	OUT r_keys bytea[])
LANGUAGE plpgsql AS $fn$
DECLARE
	body bytea;
BEGIN
	WITH d AS (
		DELETE FROM {{s}}.entries e
		WHERE e.context = p_name AND e.expires_at <= p_now AND e.expires_rev = e.rev
		RETURNING e.key
	)
	SELECT coalesce(array_agg(d.key ORDER BY d.key), '{}'),
	       coalesce(string_agg('\x01'::bytea || {{s}}.uvarint(octet_length(d.key)) || d.key, ''::bytea ORDER BY d.key), ''::bytea)
	INTO r_keys, body FROM d;
	IF cardinality(r_keys) = 0 THEN
		RETURN;
	END IF;
	r_parent := r_commit;
	r_rev := r_rev + 1;
	r_commit := p_commit;
	UPDATE {{s}}.contexts SET rev = r_rev, commit_id = r_commit, parent_id = r_parent WHERE name = p_name;
	-- The body as backend.EncodeEventBody writes it: an empty origin, the
	-- number of changes, and per change flag 1 (delete) and the key.
	body := '\x00'::bytea || {{s}}.uvarint(cardinality(r_keys)) || body;
	PERFORM {{s}}.emit(p_name, false, r_epoch, r_rev, r_commit, r_parent, body, p_log, p_log_len, p_channel, p_notify_max);
END
$fn$;

-- commit_ttl checks and applies one batch; see commitSQL for its contract.
CREATE OR REPLACE FUNCTION {{s}}.commit_ttl(
	p_name bytea, p_codec text, p_epoch text, p_commit text,
	p_put_keys bytea[], p_put_values bytea[], p_del_keys bytea[], p_op_keys bytea[],
	p_cond_keys bytea[], p_cond_revs bigint[], p_cond_commits text[],
	p_check_locks bool, p_lease_keys bytea[], p_lease_tokens text[], p_lease_fences bigint[],
	p_body bytea, p_log bool, p_log_len int, p_channel text, p_notify_max int,
	p_put_ttls bigint[], p_reap_commit text,
	OUT r_epoch text, OUT r_rev bigint, OUT r_commit text, OUT r_parent text, OUT r_conflict int)
LANGUAGE plpgsql AS $fn$
DECLARE
	m {{s}}.contexts%ROWTYPE;
	bad bigint;
	t timestamptz;
	reaped bytea[];
	has_conds bool := cardinality(p_cond_keys) > 0;
BEGIN
	-- A condition that fails already fails before waiting for the
	-- context's row (it failed at this statement's snapshot): under
	-- contention most losers leave here. A key whose expiry has passed
	-- is present until reaped below and absent after; this check reaps
	-- nothing, so it refuses only a condition that fails in both states
	-- (absent, it holds only for revision 0), and leaves the others to
	-- the check after the reap.
	IF has_conds THEN
		SELECT c.i INTO bad
		FROM unnest(p_cond_keys, p_cond_revs, p_cond_commits) WITH ORDINALITY AS c(key, rev, cmt, i)
		LEFT JOIN {{s}}.entries e ON e.context = p_name AND e.key = c.key
		WHERE (coalesce(e.rev, 0) <> c.rev OR (c.rev <> 0 AND c.cmt <> '' AND e.commit_id <> c.cmt))
		  AND NOT (c.rev = 0 AND coalesce(e.expires_at <= clock_timestamp() AND e.expires_rev = e.rev, false))
		ORDER BY c.i LIMIT 1;
		IF FOUND THEN
			r_conflict := bad - 1;
			RETURN;
		END IF;
	END IF;

	-- The context's row, locked: commits (and successful lock
	-- acquisitions) of one context take their turns here.
	SELECT * INTO m FROM {{s}}.contexts c WHERE c.name = p_name FOR UPDATE;
	IF NOT FOUND THEN
		INSERT INTO {{s}}.contexts (name) VALUES (p_name) ON CONFLICT DO NOTHING;
		SELECT * INTO m FROM {{s}}.contexts c WHERE c.name = p_name FOR UPDATE;
	END IF;
	IF m.codec <> '' AND p_codec <> '' AND m.codec <> p_codec THEN
		RAISE EXCEPTION USING ERRCODE = 'CDX01', MESSAGE = m.codec;
	END IF;

	-- The commit's moment, once the context is ours: keys due by then go
	-- first, in a commit of their own, so the batch (and its conditions)
	-- sees them gone, as every reader will; the batch's TTLs count from
	-- it too.
	t := clock_timestamp();
	IF m.epoch <> '' THEN
		SELECT * INTO m.epoch, m.rev, m.commit_id, m.parent_id, reaped
		FROM {{s}}.reap(p_name, t, p_reap_commit, p_log, p_log_len, p_channel, p_notify_max,
			m.epoch, m.rev, m.commit_id, m.parent_id);
	END IF;

	-- Conditions, again under the lock and after the reap: a key's
	-- revision (0: absent) and, when given with a revision above 0, the
	-- commit that wrote it. A refusal is returned, not raised: the reap
	-- commits, since these conditions judged the keys it deleted absent
	-- (a read after the refusal must not find them again), and nothing of
	-- the batch is written.
	IF has_conds THEN
		SELECT c.i INTO bad
		FROM unnest(p_cond_keys, p_cond_revs, p_cond_commits) WITH ORDINALITY AS c(key, rev, cmt, i)
		LEFT JOIN {{s}}.entries e ON e.context = p_name AND e.key = c.key
		WHERE coalesce(e.rev, 0) <> c.rev OR (c.rev <> 0 AND c.cmt <> '' AND e.commit_id <> c.cmt)
		ORDER BY c.i LIMIT 1;
		IF FOUND THEN
			r_conflict := bad - 1;
			RETURN;
		END IF;
	END IF;

	-- The other refusals raise, and so take the reap back with the rest:
	-- they judged no key's presence.
	IF p_check_locks THEN
		-- Every lease must still be held: same token and fence, not expired.
		IF cardinality(p_lease_keys) > 0 THEN
			SELECT l.i INTO bad
			FROM unnest(p_lease_keys, p_lease_tokens, p_lease_fences) WITH ORDINALITY AS l(key, token, fence, i)
			WHERE NOT EXISTS (
				SELECT 1 FROM {{s}}.locks k
				WHERE k.context = p_name AND k.key = l.key AND k.token = l.token
				  AND k.fence = l.fence AND k.expires > clock_timestamp())
			ORDER BY l.i LIMIT 1;
			IF FOUND THEN
				RAISE EXCEPTION USING ERRCODE = 'CDN01', MESSAGE = (bad - 1)::text;
			END IF;
		END IF;
		-- No key written may be locked by a holder whose lease is not here.
		SELECT o.i INTO bad
		FROM unnest(p_op_keys) WITH ORDINALITY AS o(key, i)
		JOIN {{s}}.locks k ON k.context = p_name AND k.key = o.key
		WHERE k.expires > clock_timestamp() AND NOT coalesce(k.token = ANY (p_lease_tokens), false)
		ORDER BY o.i LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = 'CDL01', MESSAGE = (bad - 1)::text;
		END IF;
	END IF;

	IF m.epoch = '' THEN
		-- A context without an epoch starts one, and a log of its own.
		r_epoch := p_epoch;
		r_rev := 1;
		r_parent := '';
	ELSE
		r_epoch := m.epoch;
		r_rev := m.rev + 1;
		r_parent := m.commit_id;
	END IF;
	r_commit := p_commit;

	-- Every write in one statement. A put with a TTL records its expiry
	-- and the revision it belongs to; one without clears both.
	WITH u AS (
		UPDATE {{s}}.contexts c
		SET epoch = r_epoch, rev = r_rev, commit_id = r_commit, parent_id = r_parent,
		    codec = CASE WHEN c.codec = '' THEN p_codec ELSE c.codec END
		WHERE c.name = p_name
	), puts AS (
		INSERT INTO {{s}}.entries AS e (context, key, value, rev, commit_id, expires_at, expires_rev)
		SELECT p_name, o.key, o.value, r_rev, r_commit,
		       CASE WHEN o.ttl > 0 THEN t + o.ttl * interval '1 microsecond' END,
		       CASE WHEN o.ttl > 0 THEN r_rev END
		FROM unnest(p_put_keys, p_put_values, p_put_ttls) AS o(key, value, ttl)
		ON CONFLICT (context, key) DO UPDATE SET value = excluded.value, rev = excluded.rev, commit_id = excluded.commit_id,
			expires_at = excluded.expires_at, expires_rev = excluded.expires_rev
	), dels AS (
		DELETE FROM {{s}}.entries WHERE context = p_name AND key = ANY (p_del_keys)
	)
	SELECT 1 INTO bad;
	PERFORM {{s}}.emit(p_name, m.epoch = '', r_epoch, r_rev, r_commit, r_parent, p_body, p_log, p_log_len, p_channel, p_notify_max);
END
$fn$;

-- expire reaps the context's due keys; see expireSQL for its contract.
CREATE OR REPLACE FUNCTION {{s}}.expire(
	p_name bytea, p_commit text, p_log bool, p_log_len int, p_channel text, p_notify_max int,
	OUT r_epoch text, OUT r_rev bigint, OUT r_commit text, OUT r_parent text, OUT r_keys bytea[],
	OUT r_now timestamptz, OUT r_next timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
	m {{s}}.contexts%ROWTYPE;
BEGIN
	r_keys := '{}';
	r_now := clock_timestamp();
	-- Nothing due: answer without locking the context's row, so that the
	-- instances checking a deadline never queue behind commits.
	IF EXISTS (SELECT 1 FROM {{s}}.entries e
	           WHERE e.context = p_name AND e.expires_at <= r_now AND e.expires_rev = e.rev) THEN
		SELECT * INTO m FROM {{s}}.contexts c WHERE c.name = p_name FOR UPDATE;
		IF FOUND AND m.epoch <> '' THEN
			r_now := clock_timestamp();
			SELECT * INTO r_epoch, r_rev, r_commit, r_parent, r_keys
			FROM {{s}}.reap(p_name, r_now, p_commit, p_log, p_log_len, p_channel, p_notify_max,
				m.epoch, m.rev, m.commit_id, m.parent_id);
		END IF;
	END IF;
	SELECT e.expires_at INTO r_next FROM {{s}}.entries e
	WHERE e.context = p_name AND e.expires_at IS NOT NULL AND e.expires_rev = e.rev
	ORDER BY e.expires_at LIMIT 1;
END
$fn$;
`

// commitSQL checks and applies a batch, appends its event to the change log
// and notifies, in one transaction (the function {{s}}.commit_ttl). Keys of
// the context that are due (their expiry is at or before the moment the
// commit holds the context) are first deleted by a commit of their own, a
// revision before the batch's, logged and notified like any (reap()).
//
//	takes:   $1 context name, $2 codec, $3 epoch candidate (used when the
//	         context has no epoch), $4 commit id, $5/$6 keys and values of
//	         the puts, $7 keys of the deletes, $8 every key written (in op
//	         order, for lock errors), $9/$10/$11 conditions: key, revision,
//	         writing commit ('' = any), $12 check locks, $13/$14/$15 leases:
//	         key, token, fence, $16 event body (backend.EncodeEventBody),
//	         $17 keep a change log, $18 its length, $19 notify channel
//	         ('' = none), $20 longest NOTIFY payload, $21 TTLs of the puts
//	         in microseconds (0 = none), $22 commit id of the reaping
//	         commit, if there is one
//	returns: one row (conflict, epoch, revision, commit id, parent commit
//	         id): conflict NULL and the head of the batch's commit; or, when
//	         a condition failed, the condition's 0-based index and NULLs.
//	         Then nothing of the batch is written, but the reaping commit
//	         is, if there was one: the conditions judged its keys absent
//	fails:   SQLSTATE CDX01 codec mismatch (message: the stored codec),
//	         CDN01 lease not held, CDL01 key locked (message: the 0-based
//	         index of the lease or key); then nothing is written, the
//	         reaping commit included
//
// The NOTIFY payload is "i" + base64(event), or, when that is longer than
// $20, "p<revision>:" + base64(context name): a pointer into the change
// log, where the event is stored even with the log switched off.
const commitSQL = `SELECT r_conflict, r_epoch, r_rev, r_commit, r_parent FROM {{s}}.commit_ttl(
	$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`

// expireSQL deletes the context's due keys in one commit, logged and
// notified like any (the function {{s}}.expire), and reads the next
// deadline, in one transaction. The context's row is locked only when a
// key is due.
//
//	takes:   $1 context name, $2 commit id of the reaping commit, $3 keep a
//	         change log, $4 its length, $5 notify channel ('' = none), $6
//	         longest NOTIFY payload
//	returns: one row (epoch, revision, commit id, parent commit id, keys
//	         deleted in byte order, the server's clock, the next deadline
//	         or NULL); the head is that of the reaping commit when keys
//	         were deleted, and meaningless when none were
const expireSQL = `SELECT r_epoch, r_rev, r_commit, r_parent, r_keys, r_now, r_next FROM {{s}}.expire($1, $2, $3, $4, $5, $6)`

// loadSQL reads a consistent snapshot: one statement, one snapshot.
//
//	takes:   $1 context name
//	returns: a row (true, epoch, revision, codec, commit id, parent id,
//	         '', '', NULL) if the context exists, and a row (false, '',
//	         revision, '', commit id, '', key, value, expiry or NULL) per
//	         entry
const loadSQL = `
SELECT true, epoch, rev, codec, commit_id, parent_id, ''::bytea, ''::bytea, NULL::timestamptz
FROM {{s}}.contexts WHERE name = $1
UNION ALL
SELECT false, '', rev, '', commit_id, '', key, value, CASE WHEN expires_rev = rev THEN expires_at END
FROM {{s}}.entries WHERE context = $1`

// getSQL reads one entry.
//
//	takes:   $1 context name, $2 key
//	returns: no row, or (value, revision, commit id, expiry or NULL)
const getSQL = `SELECT value, rev, commit_id, CASE WHEN expires_rev = rev THEN expires_at END
FROM {{s}}.entries WHERE context = $1 AND key = $2`

// revisionSQL reads a context's head.
//
//	takes:   $1 context name
//	returns: no row, or (epoch, revision, commit id, parent id)
const revisionSQL = `SELECT epoch, rev, commit_id, parent_id FROM {{s}}.contexts WHERE name = $1`

// changesSQL reads the head and the logged events after a revision, in one
// snapshot.
//
//	takes:   $1 context name, $2 after, $3 most events to return
//	returns: a row (true, epoch, revision, '') if the context exists, then
//	         rows (false, '', revision, event) in revision order
const changesSQL = `
SELECT true, epoch, rev, ''::bytea FROM {{s}}.contexts WHERE name = $1
UNION ALL
(SELECT false, '', rev, event FROM {{s}}.changes WHERE context = $1 AND rev > $2 ORDER BY rev LIMIT $3)`

// fetchEventSQL reads one logged event, for a NOTIFY pointer.
//
//	takes:   $1 context name, $2 revision
//	returns: no row (trimmed), or (event)
const fetchEventSQL = `SELECT event FROM {{s}}.changes WHERE context = $1 AND rev = $2`

// fetchMessageSQL reads one large published payload, for a NOTIFY pointer.
//
//	takes:   $1 message id
//	returns: no row (purged), or (payload)
const fetchMessageSQL = `SELECT payload FROM {{s}}.messages WHERE id = $1`

// acquireSQL takes a lock that is free or expired, drawing the fencing
// token from the context's counter (creating the context's row if needed),
// with the function {{s}}.acquire. A lock that is held is seen by a plain
// read, which takes no row lock and writes nothing, so waiters that retry
// cost little and do not queue behind commits. Only when the lock looks
// free is the counter advanced: that updates the context's row, and so
// waits for a commit of the context in progress; a commit that checked the
// key's lock is ordered before the acquisition. The lock row's upsert then
// decides, on the latest version of the row, whether the lock is really
// free (another acquirer may have won meanwhile).
//
//	takes:   $1 context name, $2 key, $3 token, $4 ttl in microseconds
//	returns: one row: the fence, or NULL when someone else holds the lock
const acquireSQL = `SELECT {{s}}.acquire($1, $2, $3, $4)`

// releaseSQL deletes a lock held by the lease (also an expired one, to
// tidy up) and, if it was still live, notifies waiters.
//
//	takes:   $1 context name, $2 key, $3 token, $4 fence, $5 release
//	         channel ('' = none), $6 payload (base64 of the key)
//	returns: one row (was live and is released now, notifications sent)
const releaseSQL = `
WITH d AS (
	DELETE FROM {{s}}.locks
	WHERE context = $1 AND key = $2 AND token = $3 AND fence = $4
	RETURNING expires > clock_timestamp() AS live
), n AS (
	SELECT pg_notify($5, $6) FROM d WHERE d.live AND $5 <> ''
)
SELECT coalesce((SELECT bool_or(live) FROM d), false), (SELECT count(*) FROM n)`

// extendSQL resets a live lock's expiry.
//
//	takes:   $1 context name, $2 key, $3 token, $4 fence, $5 ttl in
//	         microseconds
//	returns: nothing; 1 row affected if extended, 0 if not held
const extendSQL = `
UPDATE {{s}}.locks SET expires = clock_timestamp() + $5::bigint * interval '1 microsecond'
WHERE context = $1 AND key = $2 AND token = $3 AND fence = $4 AND expires > clock_timestamp()`

// listenSQL and unlistenSQL start and stop listening on the listening
// connection; several are sent as one simple-protocol query.
//
//	takes:   the quoted channel name, in the text
//	returns: nothing
func listenSQL(channel string) string { return "LISTEN " + pgx.Identifier{channel}.Sanitize() + ";" }
func unlistenSQL(channel string) string {
	return "UNLISTEN " + pgx.Identifier{channel}.Sanitize() + ";"
}

// publishSQL sends a payload that fits in a NOTIFY.
//
//	takes:   $1 channel, $2 payload ("i" + base64 of the message)
//	returns: nothing
const publishSQL = `SELECT pg_notify($1, $2)`

// publishLargeSQL stores a payload too large for NOTIFY and notifies a
// pointer to it; payloads older than a minute are purged on the way.
//
//	takes:   $1 channel, $2 payload (the message's bytes)
//	returns: nothing
const publishLargeSQL = `
WITH old AS (
	DELETE FROM {{s}}.messages WHERE at < clock_timestamp() - interval '1 minute'
), m AS (
	INSERT INTO {{s}}.messages (payload) VALUES ($2) RETURNING id
)
SELECT pg_notify($1, 'm' || m.id) FROM m`

// listLocksSQL lists a context's unexpired locks by the server's clock,
// sorted by key (bytea sorts bytewise, as Go strings do).
const listLocksSQL = `SELECT key, token, fence, expires FROM {{s}}.locks
WHERE context = $1 AND expires > clock_timestamp() ORDER BY key`
