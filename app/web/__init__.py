"""The worker's web views: what they share that needs no Faust (token checks, table paging)."""
