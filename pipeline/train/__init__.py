"""The training driver (Parquet -> Ray Data windows -> Ray Train), hardware profiles and the doctor report."""
