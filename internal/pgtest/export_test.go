package pgtest

// SetDebianBinGlob replaces where Require looks besides PATH, for a test;
// the returned function restores it.
func SetDebianBinGlob(g string) (restore func()) {
	old := debianBinGlob
	debianBinGlob = g
	return func() { debianBinGlob = old }
}
