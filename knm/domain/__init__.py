"""The domain: number documents, the state table, errors, E.164, options, accounts."""
