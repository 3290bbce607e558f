"""Names the record stage writes and the store's suites check (kept free of torch: the suites load without it)."""

KINDS = ("top", "random", "quantile")
STAT_COLUMNS = ("count", "mean", "variance", "skewness", "kurtosis", "max", "frac_positive")
