"""Column kernels shared by operator families: word tokens, line/paragraph duplicates, n-grams."""
