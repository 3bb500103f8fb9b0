# Included from the Makefile: `make bench-config` times validate and diff over 500 generated
# regions × 3 environments beside peers, and rewrites the "config" section of bench/RESULTS.md.
.PHONY: bench-config
bench-config:
	@bench/config.sh
