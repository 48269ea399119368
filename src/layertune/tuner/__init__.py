"""The per-layer autotuner behind profile_and_optimize: options and variants (derived from the
core's method table), targets, the profiler build, the results store, selection, the driver,
typed results and the report. Devices are reached through layertune.runners."""
