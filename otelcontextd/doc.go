// Package otelcontextd reports what a contextd.Context does as
// OpenTelemetry metrics and spans, as redisotel does for go-redis.
//
// It turns the hooks of contextd.Trace into instruments; the contextd
// package itself depends on nothing but its hook interface, and its
// Options.Logger (slog) is unaffected.
//
//	inst, err := otelcontextd.New("my_cxtd", nil) // the global providers
//	...
//	defer inst.Close()
//	shared, err := contextd.New[User](b, "my_cxtd", &contextd.Options{Trace: inst.Trace()})
//	...
//	err = shared.Initialize(ctx)
//	inst.Observe(shared) // the copy's lag and revision as gauges
//
// One Instrumentation serves one context name; its Trace may be shared by
// several Contexts of that name, but Observe watches one.
//
// # Metrics
//
// Every metric has the attribute contextd.context (the context name);
// those with an outcome add error.type when the operation failed, and only
// then, as the semantic conventions do.
//
//	contextd.write.duration          histogram  s           writes (UpdateContext, TransactionalUpdate,
//	                                                         Delete, Modify), lock waits included; error.type
//	contextd.lock.wait.duration      histogram  s           waits for a lock another holder had, by a write
//	                                                         or AcquireLock; error.type if not obtained
//	contextd.snapshot.load.duration  histogram  s           snapshot loads (Initialize, Sync, catch-ups the
//	                                                         change log could not serve); error.type
//	contextd.snapshot.load.entries   histogram  {entry}     entries read by each successful snapshot load
//	contextd.events.applied          counter    {event}     events from other instances applied to the copy
//	contextd.event.lag               histogram  {revision}  revisions the copy was known to be behind after
//	                                                         applying each such event (propagation lag)
//	contextd.gaps                    counter    {gap}       missed events, by contextd.gap.reason: "loss"
//	                                                         (the subscription lost messages), "gap" (a
//	                                                         revision was skipped), "diverged" (another history)
//	contextd.catch_ups               counter    {catch_up}  catch-ups (resyncs), by contextd.catch_up.source:
//	                                                         "log" or "snapshot"; error.type if one failed
//	contextd.watch.resets            counter    {reset}     Resets sent to Watch readers that fell behind
//	contextd.copy.lag                gauge      {revision}  Lag() of the Context given to Observe
//	contextd.copy.revision           gauge      {revision}  Revision() of the Context given to Observe
//
// The duration histograms have buckets from 0.5 ms to 60 s; a View of the
// SDK changes them.
//
// Propagation lag is measured in revisions: events do not carry the time of
// their commit, so there is no lag in seconds. contextd.events.applied and
// contextd.event.lag count what the Context's EventApplied hook reports;
// today that includes, now and then, an instance's own commit whose event
// reached its copy before the commit returned.
//
// # Spans
//
// Three operations get a span, of kind internal, started in the ctx the
// Context was given, so a span of the caller's is their parent; a lock wait
// inside a write is a child of the write's span, and the backend's calls
// are children of these spans where the backend's client is instrumented:
//
//	contextd.write          contextd.context, contextd.write.keys (how many
//	                        keys), contextd.revision (the revision committed)
//	contextd.lock.wait      contextd.context; contextd.key with Options.Keys
//	contextd.snapshot.load  contextd.context, contextd.snapshot.entries
//
// A failed operation's span has status Error and the attribute error.type,
// with the error type as the status description. Catch-ups in the
// background start their snapshot spans without a parent.
//
// # What is never recorded
//
// Values are never recorded. Keys are recorded only on lock wait spans and
// only with Options.Keys; they never go on metrics. Error messages, which
// name keys, are not recorded either: error.type is one of "canceled",
// "deadline_exceeded", "lock_not_acquired", "lock_lost", "conflict",
// "locked", "codec_mismatch", "closed", "not_initialized", "invalid",
// "corrupt", "decode", "stale", "log_truncated", "invalid_event",
// "not_found" (the contextd, backend and context errors the error matches,
// tested in that order), else what an ErrorType() string method in the
// error's chain returns, else "_OTHER".
//
// # Concurrency and lifetime
//
// The hooks are called from the goroutines of the Context and are safe for
// concurrent use. Observe registers nothing new: the gauges' callback is
// registered by New and unregistered by Close, which the creator of the
// Instrumentation calls when the observed Context is closed.
package otelcontextd
