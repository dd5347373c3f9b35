"""A local stand-in for the Amazon Redshift RSQL client: RSQL's script language (meta-commands,
`:ERROR`-style variables, `\\if` branches, `\\goto`) over the emulator's embedded PostgreSQL, with
Redshift-only SQL turned into PostgreSQL where the meaning is kept. See docs/rsql-local.md."""
