"""The training driver (Parquet -> Ray Data windows -> Ray Train) and hardware profiles."""
