package redis

// UseConnectionPerSubscription makes b's Subscribe open a pub/sub
// connection per Subscription, as before the shared connections: the
// baseline of BenchmarkManyContexts. Call it before b subscribes.
func UseConnectionPerSubscription(b *Backend) { b.subscribeHook = b.legacySubscribe }

// MayResend reports whether b's commits remember their heads for resends.
func MayResend(b *Backend) bool { return b.mayResend }
