bench-nlu:
	cargo run --release --example nlu_bench -- --data ../shared/nlu-bench --out bench/NLU.md

.PHONY: bench-nlu
