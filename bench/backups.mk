# Included from the Makefile: `make bench-backups` deploys with a pg_dump backup job of a
# ~200 MB table and rewrites the "backups" section of bench/RESULTS.md (peak RSS of the CLI).
.PHONY: bench-backups
bench: bench-backups
bench-backups: bench-env
	@bench/backups.sh
