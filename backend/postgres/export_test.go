package postgres

// SchemaV1SQL returns the statements that make schema version 1 as
// releases before key expiry made it (without createExpirySQL).
func SchemaV1SQL(schema string) string { return statementsFor(schema).createSchema }
