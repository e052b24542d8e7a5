"""The options npgpt refuses by name (OpenAI's, vLLM's or llama.cpp server's), each with what to do instead.

The rule for a field npgpt cannot honour: if honouring it would change the answer (its text, its tokens, its
form), a request that sets it gets a 400 naming it and what to do instead, never an answer that silently ignored
it (``web_search_options``, ``reasoning_effort``, vLLM's ``min_tokens``, ``chat_template`` or
``add_generation_prompt`` false, llama.cpp's ``n_predict`` or ``repeat_penalty``, transformers' and TGI's
``max_new_tokens`` or ``do_sample`` false...). These are no fields of the
request models: an unknown field is kept (``extra="allow"``) only to be looked up here (:func:`check_refused`).
A field of the other endpoint (chat's ``max_completion_tokens`` or ``top_logprobs`` sent to completions,
completions' ``suffix`` to chat), which OpenAI answers as unrecognised, is refused by name with the field meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import NpgptError

# Options npgpt does not have, each refused once set (never silently ignored), and how to do without.
# vLLM's, for completions and chat:
REFUSED = {
    "min_tokens": "npgpt cannot hold off <|endoftext|> and the stop sequences; leave it out",
    "stop_token_ids": "send the tokens' text in stop instead",
    "include_stop_str_in_output": "the stop sequence is never part of the text; leave it out",
    "use_beam_search": "npgpt only samples; leave it out",
    "prompt_logprobs": "score the prompt with /v1/completions, echo: true and logprobs",
    "guided_json": "GPT-2 cannot be held to a format; leave it out",
    "guided_regex": "GPT-2 cannot be held to a format; leave it out",
    "guided_choice": "GPT-2 cannot be held to a format; leave it out",
    "guided_grammar": "GPT-2 cannot be held to a format; leave it out",
    "structured_outputs": "GPT-2 cannot be held to a format; leave it out",
    "allowed_token_ids": "npgpt cannot restrict the tokens sampled; leave it out",
    "bad_words": "npgpt cannot ban words; leave it out",
    "truncate_prompt_tokens": "npgpt does not cut prompts; shorten the prompt yourself",
    "return_tokens_as_token_ids": "logprobs name tokens by their text ('bytes:\\xe2' for part of a character); "
    "leave it out",
    "return_token_ids": "npgpt does not list the token ids; leave it out (logprobs name each token)",
    "logits_processors": "npgpt runs no custom logits processors; leave it out (logit_bias biases tokens)",
    "logprob_token_ids": "npgpt's logprobs list each position's likeliest tokens, not tokens named; leave it out",
    "return_prompt_text": "npgpt does not return the rendered prompt; leave it out (POST /tokenize with the same "
    "prompt or messages gives its tokens)",
    # transformers' generate's and Hugging Face TGI's names (and npgpt's own Python API's), as a client moving from
    # them writes its request
    "max_new_tokens": "send max_tokens, OpenAI's name for it",
    "max_length": "it counts the prompt's tokens too; send max_tokens, the number of new tokens",
    "do_sample": "npgpt samples unless temperature is 0; for greedy decoding send temperature: 0",
    "num_return_sequences": "send n, OpenAI's name for it",
    "num_beams": "npgpt only samples; leave it out",
    "return_full_text": "/v1/completions returns the prompt with its completion when sent echo: true",
    "stop_at_eot": "send ignore_eos: true (vLLM's name) to go on past <|endoftext|>",
    # llama.cpp server's own names (its /v1 endpoints read them too)
    "n_predict": "send max_tokens, OpenAI's name for it",
    "repeat_penalty": "send repetition_penalty, npgpt's (and vLLM's) name for the same penalty",
    "n_probs": "send logprobs (completions) or logprobs and top_logprobs (chat)",
    "typical_p": "npgpt has no typical sampling; leave it out (npgpt samples with top_k, top_p and min_p)",
    "mirostat": "npgpt has no Mirostat sampling; leave it out (npgpt samples with top_k, top_p and min_p)",
    "top_n_sigma": "npgpt has no top-n-sigma sampling; leave it out (npgpt samples with top_k, top_p and min_p)",
    "dynatemp_range": "npgpt's temperature is fixed; leave it out",
    "dry_multiplier": "npgpt has no DRY penalty; leave it out (repetition_penalty penalises repeats)",
    "xtc_probability": "npgpt has no XTC sampling; leave it out",
    "grammar": "GPT-2 cannot be held to a format; leave it out",
    "json_schema": "GPT-2 cannot be held to a format; leave it out",
    "t_max_predict_ms": "npgpt does not cut a completion by time; bound it with max_tokens",
}
# chat's, OpenAI's (as OpenAI refuses them for a model without the feature) then vLLM's
REFUSED_IN_CHAT = {
    **REFUSED,
    "web_search_options": "GPT-2 cannot search the web; leave it out",
    "reasoning_effort": "GPT-2 is not a reasoning model; leave it out",
    "verbosity": "GPT-2 cannot be told how much to write; leave it out (max_tokens bounds the reply)",
    "continue_final_message": "the reply is always a new assistant message; leave it out",
    "echo": "a chat reply never repeats the last message; leave it out (/v1/completions has echo)",
    "chat_template": "GPT-2's transcript is npgpt's one template (System:/User:/Assistant: lines); leave it out, "
    "or render your own and send it to /v1/completions",
    "add_generation_prompt": "the transcript always ends in 'Assistant:' for the reply; leave it out, or render "
    "your own and send it to /v1/completions",
    "documents": "npgpt's transcript has no place for documents; put them in a message",
    # completions' (OpenAI answers the other endpoint's fields as unrecognised, a 400)
    "suffix": "a chat reply has no text after it to fit; leave it out",
}
REFUSED_IN_COMPLETIONS = {  # chat's, sent to completions, where they would be ignored: the field meant instead
    **REFUSED,
    "max_completion_tokens": "it is chat's name; send max_tokens, /v1/completions' name for it",
    "top_logprobs": "it is chat's name; in /v1/completions, logprobs is the number of alternatives "
    "(logprobs: 5 lists each token's 5 likeliest)",
}
_NEUTRAL = {
    "add_generation_prompt": True,
    "repeat_penalty": 1,
    "typical_p": 1,
    "top_n_sigma": -1,
    "do_sample": True,
    "num_return_sequences": 1,
    "num_beams": 1,
    "stop_at_eot": True,
}  # set to these, the options ask for what npgpt does anyway
_SET_EVEN_IF_FALSY = {  # set to 0 or {}, these still ask for something
    "max_completion_tokens",  # 0: no completion (which max_tokens 0 with echo asks for)
    "top_logprobs",  # 0: the chosen tokens' logprobs (which logprobs 0 asks for)
    "prompt_logprobs",  # 0: the prompt tokens' own logprobs
    "web_search_options",  # {}: search with the default context size
    "truncate_prompt_tokens",
    "reasoning_effort",
    "verbosity",
    "max_new_tokens",  # 0: no completion
    "max_length",
}


class Refused(NpgptError):
    """A request's option refused by name: its message and ``param`` name the request's own fields (its
    ``max_new_tokens`` is what the client sent), never the Python API's to be renamed to OpenAI's."""


def check_refused(extra: Mapping[str, Any], refused: Mapping[str, str]) -> None:
    """Raise NpgptError (``param``: its name) for the first option of ``refused`` (name -> what to do instead) that
    ``extra`` (a request's unknown fields) sets to ask for something."""
    for name, instead in refused.items():
        value = extra.get(name)
        if name in _NEUTRAL:
            asks = value is not None and value != _NEUTRAL[name]
        else:
            asks = value is not None if name in _SET_EVEN_IF_FALSY else bool(value)
        if asks:
            raise Refused(f"{name} is not supported: {instead}", param=name)
