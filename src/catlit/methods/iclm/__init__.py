"""Independent Causal Language Models: routed LoRA domain modules beside an invariant module.

config               ICLMConfig: every setting, validated once, saved as iclm.json
router               the VQ router and its per-epoch routing figures
mutual_information   the independence penalty between the invariant and the domain modules
positions            answer positions, the tokens routing reads
method               IndependentCausalLM: build, forward, losses, decoding, save/load
"""

from catlit.methods.iclm.config import ICLMConfig
from catlit.methods.iclm.method import ICLMOutput, IndependentCausalLM
from catlit.methods.iclm.positions import answer_positions, next_tokens, position_ids

__all__ = [
    "ICLMConfig",
    "ICLMOutput",
    "IndependentCausalLM",
    "answer_positions",
    "next_tokens",
    "position_ids",
]
