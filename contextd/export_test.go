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
