"""Sweeps: the grid of runs of one config, each an independent `testbed run` process, and their launchers.

Runs live in one sweep directory, named by the values that vary. A sweep started again skips finished
runs and resumes unfinished ones. Launchers:
- local: `--jobs N` runs at once on this machine, each with its own GPUs (`--gpus-per-run K`) if it has any;
- slurm: job arrays through submitit; a run pre-empted or stopped at its time limit is requeued and
  continues with `--resume`; a run that takes generations from another waits in the queue on a job
  dependency (see slurm_jobs).
`--list` prints one command line per run instead; `--status` shows each run's state. Ctrl-C or SIGTERM
stops a local sweep: its running runs get SIGTERM and stop, to resume; no other run starts.

The sweep directory holds `sweep.json` (the config, the runs, the launcher), `logs/NAME.log` (each run's
output) and `jobs/NAME.json` (each run's job: id, state, exit code), which `--status` reads.
"""
