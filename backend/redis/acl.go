package redis

import "strings"

// aclCommands are the commands contextd runs, named as ACL rules: the
// scripts (EVALSHA, with EVAL and SCRIPT LOAD where a script is not cached
// yet), what the scripts call (ACL rules apply inside scripts too), what
// the Backend sends outside scripts, and pub/sub.
var aclCommands = []string{
	// Scripts.
	"+evalsha", "+eval", "+script|load",
	// Called by the scripts: the context's hashes (the change log is one),
	// locks, lock queues and the deadline index of expiring keys (sorted
	// sets), and the server's clock.
	"+hmget", "+hget", "+hgetall", "+hexists", "+hset", "+hdel", "+hincrby",
	"+get", "+set", "+del", "+exists", "+pexpire", "+type", "+time",
	"+zadd", "+zrem", "+zrange", "+zcard", "+zscore", "+zmscore",
	"+publish", "+spublish",
	// Outside scripts: snapshots (HMGET, HGETALL and ZRANGE, above, in
	// MULTI/EXEC),
	// the periodic revision check (HMGET), pub/sub and its watchdog, and
	// the WAIT-for-replicas mode. Subscriptions share a connection, so the
	// last one of a channel to close unsubscribes it (refused, the channel
	// would only stay subscribed until the connection closes).
	"+multi", "+exec", "+subscribe", "+ssubscribe", "+unsubscribe", "+sunsubscribe", "+ping", "+wait",
}

// ACLRules returns the Redis ACL rules, one argument each, that let a user
// do everything contextd does with the one context named name — writes,
// locks and lock queues, watches, catch-ups, the WAIT mode — and nothing
// with any other context or key. Give them to ACL SETUSER after "on" and a
// password:
//
//	ACL SETUSER svc on >secret resetkeys resetchannels ~{contextd:<name>}:* &{contextd:<name>}:* -@all +evalsha ...
//
// (docs/redis-acl.md lists them in full.) A context with a custom
// Options.Channel needs that channel too (&<channel>). A client made with
// a ClientName also needs +client|setname, and one on a DB other than 0
// needs +select.
func ACLRules(name string) []string {
	tag := globEscape(keysOf(name).tag)
	return rules(tag + ":*")
}

// ACLRulesForPrefix is ACLRules for every context whose name starts with
// prefix, for a service that owns a family of contexts ("billing." for
// "billing.invoices", "billing.plans", ...).
func ACLRulesForPrefix(prefix string) []string {
	tag := keysOf(prefix).tag
	return rules(globEscape(strings.TrimSuffix(tag, "}")) + "*")
}

func rules(pattern string) []string {
	return append([]string{"resetkeys", "resetchannels", "~" + pattern, "&" + pattern, "-@all"}, aclCommands...)
}

// globEscape escapes the characters Redis's glob patterns treat specially.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}
