# Included from the Makefile: `make bench-k8s` rolls 200 replicas out on kwok nodes with
# packfy-deploy and with kubectl apply + rollout status on a cluster of its own (audit log on),
# and rewrites the "k8s" section of bench/RESULTS.md (wall time and API requests of each).
.PHONY: bench-k8s
bench: bench-k8s
bench-k8s: release
	@bench/k8s.sh
