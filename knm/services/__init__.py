"""knm's services: operations, jobs, sweeps, search, lookup, billing, features."""
