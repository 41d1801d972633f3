"""MongoDB access: the store client, the embedded server, one module per collection family."""
