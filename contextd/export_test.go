package contextd

// ModifyWithdrawn reports whether a Modify call of key on c whose ctx
// ended waits for the outcome of a commit that carries it.
func ModifyWithdrawn[T any](c *Context[T], key string) bool {
	c.modMu.Lock()
	defer c.modMu.Unlock()
	if g := c.modGroups[key]; g != nil {
		for _, call := range g.calls {
			if call.withdraw {
				return true
			}
		}
	}
	return false
}

// SetAwaitingOwnReply has c call f when its read loop starts waiting for
// the replies of its own commits below another instance's event. Set it
// before c is used.
func SetAwaitingOwnReply[T any](c *Context[T], f func()) { c.awaitingOwn = f }
