"""Reports of finished runs and sweeps: the run directories read back (runs.py), the tables (tables.py), the
figures (figures.py, recovery.py, size.py, on plotting.py's conventions) and the paper check (paper.py).
Everything here reads the metric registry and the run directories; none of it loads torch."""
