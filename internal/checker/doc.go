// Package checker records what many contextd instances did and checks the
// record against the guarantees contextd documents. It is used by tests
// only.
//
// A scenario writes [Value]s, each unique (a writer id and its sequence
// number), records every call with a [Recorder] (call and return time,
// input, output, and whether it succeeded, failed for sure, or failed with
// an unknown outcome), and at the end hands the history to [Check] together
// with what the store holds: its change log as [Commit]s and the state a
// fresh instance reads. Check then runs:
//
//   - linearizability, with github.com/anishathalye/porcupine: a register
//     per key for writes (a transaction is one write per key sharing its
//     call and return times) and strong reads (Get with Fresh, Get right
//     after Sync), and a counter for Modify increments and strong reads of
//     the counter. An operation of unknown outcome may or may not have taken
//     effect, at any time after its call: the model branches on it;
//   - the store's own history: revisions without holes, every acknowledged
//     write in it exactly once and whole (a transaction in one revision),
//     nothing in it that no one wrote or that was refused, revisions in
//     real-time order, the counter going up by one per commit, fenced
//     writes in fencing-token order, and the final state equal to a replay;
//   - session guarantees of the local copies: read-your-writes and
//     monotonic reads per instance, by store revision;
//   - atomicity: no snapshot (GetContext) shows part of a transaction;
//   - conditional writes: the register model treats a condition as a
//     compare-and-set and a conflict (ErrConflict) as an observation that
//     the condition failed; a write the log holds met its conditions there;
//   - revisions: a write that returned its revision is that revision of
//     the log, and an entry read (GetEntry) shows the log's revision;
//   - expiries: the store's deletes of expired keys remove only keys whose
//     last write had a TTL, not before it ran out (real-time clocks);
//   - watches: a Watch from a revision replays the log after it with no
//     gap or duplicate, in order, then goes on in order.
//
// Convergence (every instance equal to a fresh one after writes stop) is
// waited for by the scenario and compared with [Diff].
package checker
