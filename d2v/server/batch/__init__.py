"""Batch embedding jobs (`d2v embed`): `sources` (what to embed, ids, shards), `store` (the output
directory: atomic Parquet parts, resume, merge), `job` (the run, on the server's `Engine`) and
`command` (the command line, with `settings`: torch-, numpy- and pyarrow-free)."""
