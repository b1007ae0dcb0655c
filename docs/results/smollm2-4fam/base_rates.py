"""How the families of this comparison were chosen: the base model's memory-free greedy accuracy on candidate
reasoning-gym families (40-token answers, as in the comparison). Run from the repository root:

    .venv/bin/python docs/results/smollm2-4fam/base_rates.py            # every candidate
    .venv/bin/python docs/results/smollm2-4fam/base_rates.py gcd lcm    # some

A family is kept when the base model is neither always right nor always wrong on it (strict or lenient greedy
accuracy between 0.1 and 0.9), so training can move it either way.
"""

import sys
import time

from pmd.compare import evaluate_base
from pmd.config import config_from_dict

ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
# (family, generator params, held-out problems)
CANDIDATES = [
    ("chain_sum", ONE_DIGIT, 24), ("basic_arithmetic", ONE_DIGIT, 24), ("products", ONE_DIGIT, 24),
    ("leg_counting", {}, 24), ("letter_counting", {}, 24), ("gcd", {}, 24), ("lcm", {}, 24),
    ("simple_equations", {}, 24), ("count_bits", {}, 24), ("spell_backward", {}, 24), ("number_sorting", {}, 24),
    ("decimal_chain_sum", {}, 24),
    ("leg_counting", {"min_animals": 1, "max_animals": 2, "min_instances": 1, "max_instances": 3}, 40),
    ("gcd", {"min_value": 1, "max_value": 20}, 40), ("lcm", {"min_value": 1, "max_value": 10}, 40),
    ("spell_backward", {"min_word_len": 3, "max_word_len": 4}, 40), ("count_bits", {"min_n": 1, "max_n": 16}, 40),
    ("letter_counting", {"min_words": 3, "max_words": 5}, 40),
    ("power_function", {"min_base": 1, "max_base": 9, "min_exponent": 0, "max_exponent": 2}, 40),
]

if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    for family, params, n in CANDIDATES:
        if wanted and family not in wanted:
            continue
        cfg = config_from_dict({"model": {"name_or_path": "smollm2-135m-instruct"},
                                "env": {"tasks": [{"name": family, "params": {**params, "lenient_credit": 0.5}}],
                                        "train_size": 8, "eval_size": n},
                                "eval": {"num_samples": 0, "max_new_tokens": 40}})
        t0 = time.time()
        o = evaluate_base(cfg)["overall"]
        print(f"| {family} | {params or 'defaults'} | {o['n_problems']} | {o['greedy_accuracy']:.3f} | "
              f"{o['greedy_lenient_accuracy']:.3f} | {o['greedy_format_rate']:.3f} | {time.time() - t0:.1f} s |",
              flush=True)
