"""The sweep runner: grid of cells → tidy results CSV → leaderboards."""
