"""Knowledge neurons located with default parameters and no control prompts: how specific they are
(issue 10 item 2). The sets and the measurement live in bench/bench_knowledge.py (`HELD`, `TUNE`,
`specificity`); `python -m bench.run knowledge_specificity` writes this section alone."""

from __future__ import annotations

import torch

from bench.bench_knowledge import load, specificity


def run() -> str:
    torch.set_num_threads(1)  # a shared 2-core machine: one thread (bench_knowledge.run)
    return "## Knowledge neurons: specific by default (SmolLM2-135M, fp32)\n\n" + specificity(load()) + "\n"


if __name__ == "__main__":
    print(run())
