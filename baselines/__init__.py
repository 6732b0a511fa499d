"""Comparison methods, one file each; each lists its `METHODS`, which
`sosp.methods.registry` registers."""
