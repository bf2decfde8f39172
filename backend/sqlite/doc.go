// Package sqlite is the SQLite backend of contextd.
package sqlite
