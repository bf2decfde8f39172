package redis

// MayResend reports whether b's commits remember their heads for resends.
func MayResend(b *Backend) bool { return b.mayResend }
