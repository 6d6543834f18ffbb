"""SQL that more than one service runs: repositories never commit (the caller owns the
transaction) and take the time as an argument."""
