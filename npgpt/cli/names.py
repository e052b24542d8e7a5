"""What llama.cpp, Ollama and nanoGPT call npgpt's commands and options, and what npgpt calls them.

One that means the same as a command's option, whatever its value (``--temp``, ``--max_new_tokens=100``), is
taken as it (:data:`ACCEPTED`). Any other that one of them spells this way is answered with npgpt's own name
("No such option: --init_from. npgpt takes --init"), not with click's closest spellings (``--temp`` on ``next``:
"--help, --stop, --stream"), or with what to do instead ("No such option: --threads; npgpt's threads follow
OMP_NUM_THREADS ..."). The tables and their look-ups are here; :mod:`.parsing` reads a command line with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Other tools' option -> npgpt's (or npgpt's candidates, the first the command has); a hint is given only on a
# command that has npgpt's option. Any other ``--snake_case`` whose ``--kebab-case`` the command has is hinted too.
OPTIONS: dict[str, str | tuple[str, ...]] = {
    "-p": ("PROMPT", "--prompt-len"),  # llama.cpp's prompt; llama-bench's prompt tokens (--n-prompt)
    "--n-prompt": "--prompt-len",  # llama-bench's
    "--n-gen": "--new-tokens",  # llama-bench's
    "--repetitions": "--repeat",  # llama-bench's
    "--prompt": "PROMPT",
    "--start": "PROMPT",  # nanoGPT's sample.py
    "--temp": "--temperature",
    "-n": ("--max-new-tokens", "--new-tokens"),  # where the command has no -n of its own (chat; llama-bench's: bench)
    "--n-predict": "--max-new-tokens",
    "--n_predict": "--max-new-tokens",
    "--max_new_tokens": "--max-new-tokens",
    "--max_tokens": "--max-new-tokens",  # the OpenAI API's (npgpt serve's) name
    "--max_steps": "--steps",  # transformers' Trainer
    "--num_samples": "-n",
    "--num_return_sequences": "-n",  # transformers' generate
    "--num_predict": "--max-new-tokens",  # Ollama's parameter (llama.cpp's n_predict; -1: until end of text)
    "--top_k": "--top-k",
    "--top_p": "--top-p",
    "--min_p": "--min-p",
    "--repeat-penalty": "--repetition-penalty",
    "--repeat_penalty": "--repetition-penalty",
    "--presence_penalty": "--presence-penalty",
    "--frequency_penalty": "--frequency-penalty",
    "-s": "--seed",
    "-v": "--version",  # Ollama's, at the root; a command's is llama.cpp's --verbose (INSTEAD)
    "--init_from": ("--model", "--init"),  # sample.py's, train.py's: taken as them for a model's name (_as_ours)
    "--out_dir": ("--out", "--model"),  # train.py: the run folder; sample.py: the checkpoint's
    "--max_iters": "--steps",
    "--learning_rate": "--lr",
    "--block_size": "--seq-len",
    "--gradient_accumulation_steps": "--grad-accum",
    "--warmup_iters": "--warmup",
    "--grad_clip": "--clip",
    "--log_interval": "--log-interval",
    "--eval_iters": "--eval-batches",  # nanoGPT's train.py: batches per held-out loss
    "--model-path": "--model",
    "-sys": "--system",
    "--system-prompt": "--system",
    "-r": ("--stop", "--repeat"),  # llama.cpp's reverse prompt; llama-bench's repetitions
    "--reverse-prompt": "--stop",
    "--no-display-prompt": "--no-echo",  # llama-cli
    "-np": "--max-batch",  # llama-server's parallel slots
    "--parallel": "--max-batch",
    "--max-num-seqs": "--max-batch",  # vLLM's
    "--served-model-name": "--alias",  # vLLM's
    "--max-model-len": ("--n-ctx", "--window"),  # vLLM's context length: as llama.cpp's -c
    # llama.cpp's context size: only a model trained from scratch has one to choose; llama-perplexity's is eval's window
    "-c": ("--n-ctx", "--window"),
    "--ctx-size": ("--n-ctx", "--window"),
    "--ppl-stride": "--stride",  # llama-perplexity's strided (Hugging Face's sliding-window) perplexity
    "-t": "--threads",  # npgpt bench's
    "--threads": "--threads",
    "-hf": "--hf",  # llama.cpp's Hugging Face repo
    "--hf-repo": "--hf",
}

# The spellings of OPTIONS that a command takes as its own option where it has npgpt's (they mean the same thing
# there, whatever the value): `--temp 0.7`, `--n-predict 64`, `--num_samples=3` run as `--temperature 0.7`,
# `--max-new-tokens 64`, `-n 3`; and any other `--snake_case` whose `--kebab-case` the command has (nanoGPT's
# `--max_new_tokens=100`, `--top_k=200`). The rest of OPTIONS get a hint: their meaning depends on the value
# (`--init_from=resume`, `--out_dir`), or differs (llama.cpp's -c is a run's context, npgpt's --n-ctx a new model's;
# nanoGPT's --block_size is the model's context and the training window at once), or is `npgpt serve`'s.
ACCEPTED = {
    "-p",  # llama.cpp's prompt: the text argument (llama-bench's prompt tokens: bench's --prompt-len)
    "--n-prompt",
    "--n-gen",
    "--repetitions",
    "--prompt",
    "--start",  # nanoGPT's sample.py: the text, or FILE:name for --prompt-file name
    "--temp",
    "-n",  # on a command with no -n of its own (chat): llama.cpp's tokens to predict
    "--n-predict",
    "--n_predict",
    "--max_tokens",
    "--num_samples",
    "--num_return_sequences",
    "--num_predict",
    "--repeat-penalty",
    "--repeat_penalty",
    "-s",
    "--max_iters",
    "--max_steps",
    "--learning_rate",
    "--gradient_accumulation_steps",
    "--warmup_iters",
    "--eval_iters",
    "--grad_clip",
    "--model-path",
    "-sys",
    "--system-prompt",
    "-r",
    "--reverse-prompt",
    "--no-display-prompt",
    "--ppl-stride",
    "-np",  # llama-server's parallel slots: rows decoded together, as LLAMA_ARG_N_PARALLEL is read
    "--parallel",
    "--max-num-seqs",
    "--served-model-name",
    "-t",  # npgpt bench's --threads
    "--threads",
    "-hf",  # npgpt download's --hf
    "--hf-repo",
}

# Other tools' options that a command has no counterpart of, and what to do instead: the first (condition,
# text) whose condition holds is said (an option the command has, a command's name, or "*"); a text names
# only flags the command has (tests/test_cli_usage.py checks it). "{cmd}" is the command's name.
_THREADS = (
    "npgpt's threads follow OMP_NUM_THREADS (or llama.cpp's LLAMA_ARG_THREADS; default: every core): "
    "OMP_NUM_THREADS=4 npgpt {cmd} ..."
)
_CONTEXT = "the context length is the model's own (n_ctx; npgpt info shows it) and cannot be changed"
_ON_JAX = "npgpt train runs on every device JAX sees; JAX_PLATFORMS=cpu keeps it on the CPU"
_OFFLOAD = [
    ("--backend", "npgpt offloads no layers: the whole model runs on --backend's device (torch, jax or cupy: the GPU)"),
    ("train", _ON_JAX),
]
_CONVERSE = [("chat", "npgpt chat is interactive already; drop it"), ("*", "for a conversation, use npgpt chat")]
_PIPE_IN = [("chat", "npgpt chat reads your messages from the terminal, or piped in: echo Hi | npgpt chat")]
_DOWNLOAD_FIRST = [("--model", "download it first (`npgpt download --hf ORG/NAME`), then use -m ORG/NAME")]
_VERBOSE = [("*", "npgpt has no verbose mode; NPGPT_DEBUG=1 adds a traceback to an error")]
_LOGPROBS = [
    (
        "*",
        "npgpt score gives each token's log-probability in a text, npgpt next shows the likeliest next tokens; for "
        "generated text's, the Python API's model.completions(prompt, logprobs=k) or the server's logprobs",
    )
]
_DEVICE = [
    ("--backend", "npgpt picks the device with --backend: numpy runs on the CPU; torch, jax and cupy on the GPU"),
    ("train", _ON_JAX),
]
_MAX_TOKENS = [
    (
        "serve",
        "a client sets max_tokens in each request; "
        "--max-request-tokens caps a request's prompt and max_tokens together",
    )
]
_NOT_RUNNING = "npgpt keeps no models running: each command loads its model and exits (a server: npgpt serve)"
_KERNELS = [("*", "npgpt picks its attention kernel by itself; drop it")]
_MAPPED = [("*", "npgpt memory-maps the weights where the format allows, by itself; drop it")]
_ONE_PROMPT = [
    ("chat", "npgpt chat is a conversation; for one prompt, use npgpt generate"),
    ("*", "npgpt continues the prompt, with no conversation, already; drop it"),
]
_BATCHES = [
    ("--batch-file", "npgpt batches by itself: --batch-file runs its prompts up to 256 rows at a time"),
    ("eval", "npgpt eval's batch is --batch-size N windows a forward pass (llama-perplexity's -b counts tokens)"),
]
_INSECURE = [
    ("*", "npgpt fetches over HTTPS only (OpenAI's storage, the Hugging Face Hub) and runs models from disk; drop it")
]
_SCORE_FILE = [
    ("score", "npgpt score takes the text file as its argument: npgpt score FILE (- reads standard input)"),
    # llama.cpp's -f FILE (the prompt from a file) on a command whose text comes from its argument or stdin
    *[
        (c, f"npgpt {c} reads a file's text from standard input: npgpt {c} - < FILE")
        for c in ("tokenize", "next", "lens", "attention")
    ],
    ("chat", 'llama-cli\'s -f is the system message: npgpt chat --system "$(cat FILE)"'),
]
# llama-cli's system message from a file
_SYSTEM_FILE = [
    ("chat", 'npgpt chat takes the system message itself: npgpt chat --system "$(cat FILE)"'),
    ("*", "npgpt {cmd} has no system message, it continues the text; for a conversation, use npgpt chat"),
]
# llama-tokenize's
_STDIN = [("tokenize", "npgpt tokenize reads standard input with - (or with no TEXT): npgpt tokenize - < FILE")]
_NO_BOS = [("*", "npgpt adds no beginning-of-text token (GPT-2 has none); drop it")]
_COUNT = [("tokenize", "npgpt tokenize's last line is the count (--json: n_tokens); drop it")]
_THINK = [("*", "GPT-2 has no thinking mode: it only continues text; drop it")]
# llama-perplexity's --kl-divergence(-base): a quantized model's logits against the full-precision model's
_KL = [("*", "npgpt bench measures how int8 and 16-bit weights differ from float32 (logits, perplexity, greedy text)")]
# llama.cpp's other samplers and what it prints or reads that npgpt does not
_SAMPLERS = [
    (
        "--top-k",
        "npgpt's samplers are --temperature, --top-k, --top-p and --min-p, with --repetition-penalty, "
        "--presence-penalty and --frequency-penalty",
    ),
    ("serve", "a client sets sampling in each request: temperature, top_p, top_k, min_p and the penalties"),
]
_FORMAT = "GPT-2 cannot be held to a format such as JSON; the prompt is all there is to steer it"
_FORMATS = [("*", _FORMAT)]
_ADAPTERS = [
    ("*", "npgpt loads no adapters: merge a LoRA into the weights (PEFT's merge_and_unload), save them, load that")
]
_SPECIAL = [
    ("--ignore-eos", "npgpt never prints special tokens as text: <|endoftext|> ends the text (--ignore-eos: past it)"),
    ("*", "npgpt never prints special tokens as text; drop it"),
]
_KEEP = [("*", "npgpt shifts no context, so there is nothing to keep: a prompt and its text fit the model's context")]
_TEMPLATE = [
    ("chat", "npgpt chat writes each turn in the one chat template its models share (User: ... Assistant:)"),
    ("serve", "npgpt serve's chat uses the one chat template its models share (User: ... Assistant:)"),
    ("*", "npgpt continues the prompt as it is, with no template; for a conversation, use npgpt chat"),
]
_MULTILINE = [
    ("chat", 'a line starting with """ begins a message of several lines, a line ending with """ ends it'),
    ("--prompt-file", "a prompt may span lines: give it with --prompt-file FILE, or pipe it in"),
]
_SINGLE_TURN = [
    ("chat", "for one turn, pipe the message in: echo Hi | npgpt chat"),
    ("*", "npgpt {cmd} is no conversation, it runs once; drop it"),
]
_QUIET = [("*", "npgpt writes only its results on stdout; notices go to stderr (2>/dev/null leaves them out)")]
_TIMINGS = [("*", "npgpt prints no timings; npgpt bench measures speed")]
_DISPLAY = [("--echo", "npgpt generate prints the prompt before its text already (--no-echo leaves it out)")]
# nanoGPT's train.py settings that npgpt train fixes, and what it does instead
_SCHEDULE = [
    (
        "--warmup",
        "npgpt's learning rate warms up over --warmup steps, then follows a cosine to --lr / 10 at --steps "
        "(nanoGPT's decay_lr with lr_decay_iters = max_iters, min_lr = learning_rate / 10)",
    )
]
_BETAS = [("--lr", "npgpt's AdamW uses beta1 0.9 and beta2 0.95 (nanoGPT's defaults); drop it")]
_LOGGERS = [("--log-interval", "npgpt logs to no service: off a terminal it writes a line every --log-interval steps")]
_TLS = [("serve", "npgpt serve speaks plain HTTP; for HTTPS, put a TLS proxy (Caddy, nginx) in front of it")]
_CONTINUOUS = [("serve", "npgpt serve batches requests continuously by itself; --max-batch caps the rows")]
INSTEAD: dict[str, list[tuple[str, str]]] = {
    "-c": [("*", _CONTEXT)],
    "--max-model-len": [("*", _CONTEXT)],
    "--ctx-size": [("*", _CONTEXT)],
    "-t": [("*", _THREADS)],
    "--threads": [("*", _THREADS)],
    "-i": _CONVERSE,
    "--interactive": _CONVERSE,
    "--interactive-first": _CONVERSE,
    "-cnv": _CONVERSE,
    "--conversation": _CONVERSE,
    "-ngl": _OFFLOAD,
    "--n-gpu-layers": _OFFLOAD,
    "--gpu-layers": _OFFLOAD,
    "--device": _DEVICE,  # nanoGPT's
    "--compile": [  # nanoGPT's torch.compile
        ("--backend", "npgpt has no --compile: --backend jax compiles the model with XLA by itself"),
        ("train", "npgpt train compiles its step with JAX by itself; drop --compile"),
    ],
    "--dtype": [  # nanoGPT's train.py: bfloat16 autocast
        (
            "train",
            "npgpt train trains in float32; for 16-bit weights, convert the result: "
            "`npgpt convert RUN/model.safetensors half.safetensors --dtype float16`",
        )
    ],
    "-n": [("serve", "a client sets max_tokens in each request")],  # llama-server's default n_predict
    "--max-tokens": _MAX_TOKENS,  # the OpenAI API's, typed as a server's setting (generate takes it: ACCEPTED)
    "--max_tokens": _MAX_TOKENS,
    "-p": _PIPE_IN,
    "--prompt": _PIPE_IN,
    "-hf": _DOWNLOAD_FIRST,
    "--hf-repo": _DOWNLOAD_FIRST,
    "-v": _VERBOSE,  # llama.cpp's; Ollama's -v, the version, is the root's (OPTIONS)
    "--verbose": _VERBOSE,
    "--color": [("*", "npgpt colours its output on a terminal by itself; NO_COLOR=1 turns colour off")],
    "-fa": _KERNELS,  # llama.cpp's flash attention
    "--flash-attn": _KERNELS,
    "--no-mmap": _MAPPED,
    "--mlock": _MAPPED,
    "-no-cnv": _ONE_PROMPT,
    "--no-conversation": _ONE_PROMPT,
    "--ignore-eos": [("serve", "a client sets ignore_eos in each request (vLLM's and llama-server's name)")],
    "-b": _BATCHES,  # llama.cpp's logical batch
    "--batch-size": _BATCHES,  # on commands without their own (eval and train have one)
    "--dropout": [("--n-layer", "npgpt trains without dropout (nanoGPT's default, dropout 0.0); drop it")],
    "--bias": [("--n-layer", "npgpt's models keep GPT-2's biases (nanoGPT's bias True); drop it")],
    "--beta1": _BETAS,
    "--beta2": _BETAS,
    "--decay_lr": _SCHEDULE,
    "--lr_decay_iters": _SCHEDULE,
    "--min_lr": _SCHEDULE,
    "--always_save_checkpoint": [
        (
            "--checkpoint-interval",
            "npgpt train checkpoints every --checkpoint-interval steps whatever the held-out loss (nanoGPT's "
            "always_save_checkpoint True); drop it",
        )
    ],
    "--eval_only": [("--steps", "for a model's held-out perplexity, use npgpt eval TEXT -m RUN")],
    "--wandb_log": _LOGGERS,
    "--wandb_project": _LOGGERS,
    "--wandb_run_name": _LOGGERS,
    "--dataset": [  # nanoGPT's train.py: data/NAME/ prepared by its prepare.py
        ("train", "npgpt train takes the text itself: npgpt train input.txt --out RUN (nanoGPT's data/NAME/input.txt)")
    ],
    # Ollama's show: npgpt's models have no Modelfile, sampling parameters or template of their own
    "--modelfile": [
        ("info", "npgpt has no Modelfiles: a model is its checkpoint, whose shape and files npgpt info shows")
    ],
    "--parameters": [("info", "npgpt's models carry no sampling parameters; npgpt generate --help shows the defaults")],
    "--template": [("info", "npgpt's models share one chat template, which npgpt chat and npgpt serve use")],
    "--system": [("info", "npgpt's models carry no system message; npgpt chat --system TEXT gives one")],
    "--license": [
        (
            "info",
            "npgpt's models carry no license text: OpenAI's GPT-2 weights are under its modified MIT license "
            "(github.com/openai/gpt-2), a Hugging Face model's is on its page",
        )
    ],
    "--version": [("*", "the version is npgpt's own, before any command: npgpt --version")],  # llama.cpp's, on each
    # Ollama's run
    "--format": _FORMATS,
    "--nowordwrap": [("*", "npgpt never wraps the text it writes; drop it")],
    "--keepalive": [("*", _NOT_RUNNING)],
    "--think": _THINK,
    "--hidethinking": _THINK,
    "--insecure": _INSECURE,  # Ollama's run, pull and push
    # llama-perplexity's
    "--chunks": [
        (
            "--window",
            "npgpt {cmd} reads the whole text; to score a part, pipe it in: head -c 100000 FILE | npgpt {cmd} -",
        )
    ],
    "--kl-divergence": _KL,
    "--kl-divergence-base": _KL,
    "-f": _SCORE_FILE,  # llama-perplexity's -f FILE, which npgpt eval takes (its --data)
    "--file": _SCORE_FILE,
    "--stdin": _STDIN,
    "-sysf": _SYSTEM_FILE,
    "--system-prompt-file": _SYSTEM_FILE,
    "--no-bos": _NO_BOS,
    "--show-count": _COUNT,
    "--typical": _SAMPLERS,  # llama.cpp's samplers npgpt lacks
    "--mirostat": _SAMPLERS,
    "--mirostat-lr": _SAMPLERS,
    "--mirostat-ent": _SAMPLERS,
    "--dry-multiplier": _SAMPLERS,
    "--xtc-probability": _SAMPLERS,
    "--xtc-threshold": _SAMPLERS,
    "--top-nsigma": _SAMPLERS,
    "--samplers": _SAMPLERS,
    "--dynatemp-range": _SAMPLERS,
    "--repeat-last-n": [
        (
            "--repetition-penalty",
            "npgpt's --repetition-penalty weighs every token of the prompt and the text so far (llama.cpp's "
            "--repeat-last-n -1); there is no window",
        )
    ],
    "--grammar": _FORMATS,
    "--grammar-file": _FORMATS,
    "--json-schema": _FORMATS,
    "--lora": _ADAPTERS,
    "--lora-scaled": _ADAPTERS,
    "--special": _SPECIAL,
    "-sp": _SPECIAL,
    "--keep": _KEEP,
    "--n-keep": _KEEP,
    "--chat-template": _TEMPLATE,
    "--jinja": _TEMPLATE,
    "--in-prefix": _TEMPLATE,
    "--in-suffix": _TEMPLATE,
    "--multiline-input": _MULTILINE,
    "-mli": _MULTILINE,
    "-if": _CONVERSE,  # --interactive-first
    "-ins": _CONVERSE,
    "--instruct": _CONVERSE,
    "-st": _SINGLE_TURN,
    "--single-turn": _SINGLE_TURN,
    "--no-escape": [("--escape", "npgpt reads the prompt as typed unless --escape is given; drop it")],
    "--log-disable": _QUIET,
    "--no-perf": _TIMINGS,
    "--perf": _TIMINGS,
    "--verbose-prompt": _DISPLAY,
    "--display-prompt": _DISPLAY,
    "-ub": _BATCHES,  # llama.cpp's physical batch
    "--ubatch-size": _BATCHES,
    # llama-server's
    "--metrics": [("serve", "npgpt serve always serves /metrics (Prometheus text); drop it")],
    "--api-key-file": [("serve", "give the key in NPGPT_API_KEY: NPGPT_API_KEY=$(cat FILE) npgpt serve")],
    "--ssl-key-file": _TLS,
    "--ssl-cert-file": _TLS,
    "-cb": _CONTINUOUS,
    "--cont-batching": _CONTINUOUS,
    "--no-webui": [("serve", "npgpt serve's playground at / is a page of its own, which no client needs; drop it")],
    "--embeddings": [("serve", "npgpt serve has no embeddings endpoint (GPT-2 makes none); /v1/embeddings is a 404")],
    "--threads-http": [("serve", "npgpt serve answers HTTP on one event loop and runs the model on its own thread")],
    "--timeout": [
        (
            "serve",
            "npgpt serve closes a connection whose request is not in within 60 s (its head) or 300 s (its body); an "
            "answer takes as long as it asks, and a client that leaves stops its work",
        )
    ],
    # transformers' generate (GenerationConfig) and Ollama's parameters
    "--max_length": [
        (
            "--max-new-tokens",
            "transformers' max_length counts the prompt too; npgpt's --max-new-tokens counts only the new tokens",
        )
    ],
    "--do_sample": [
        ("--temperature", "npgpt samples unless --temperature 0, which is greedy (transformers' do_sample False)")
    ],
    "--num_beams": [("--temperature", "npgpt has no beam search: it samples, or picks greedily with --temperature 0")],
    "--min_new_tokens": [
        ("--ignore-eos", "npgpt has no minimum length; --ignore-eos goes on past <|endoftext|> to the length asked")
    ],
    "--typical_p": _SAMPLERS,
    "--no_repeat_ngram_size": _SAMPLERS,
    "--num_ctx": [("*", _CONTEXT)],  # Ollama's context size
    "--logprobs": _LOGPROBS,  # the OpenAI API's
    "--top-logprobs": _LOGPROBS,
    "--n-probs": _LOGPROBS,  # llama.cpp's
}

# Single-dash names of several letters, which click would split into short options.
_GROUPED = {name for name in (*OPTIONS, *INSTEAD) if not name.startswith("--") and len(name) > 2}

# Ollama's commands that npgpt runs as its own: `npgpt pull 124M` is `npgpt download 124M`; `run MODEL [PROMPT]` is
# generate (a prompt) or chat (none), with -m MODEL; `help [COMMAND]` is --help.
COMMAND_ALIASES = {"pull": "download", "show": "info", "ls": "list", "remove": "rm"}

# Ollama's other commands -> what npgpt says of them (`run` without a model is answered with the npgpt command).
COMMANDS = {
    "ps": _NOT_RUNNING,
    "stop": _NOT_RUNNING,
    # click offered 'chat' for create: npgpt has no model store of its own to create, copy or push models in
    "create": "npgpt has no Modelfiles: a model is a checkpoint file or folder, used where it lies (-m PATH)",
    "cp": "npgpt uses a model where it lies (-m PATH); copy its file or folder as any other",
    "push": "npgpt uploads no models; npgpt convert MODEL DIR --to hf writes a folder the Hugging Face Hub takes",
    "help": "npgpt's is --help (or -h), after a command for its own: npgpt generate --help",
}
# ids back to text (llama-server's and vLLM's /detokenize, transformers' tokenizer.decode): click offered tokenize,
# which does the opposite (it splits the ids' digits)
_DECODE = (
    "npgpt has no command for token ids back to text (npgpt tokenize splits text into ids); in Python: "
    "python -c 'from npgpt.tokenizer import Tokenizer; print(Tokenizer().decode([15496, 995]))', "
    "or npgpt serve's POST /detokenize"
)
COMMANDS |= {"detokenize": _DECODE, "decode": _DECODE}


def _ollama_args(
    commands: Mapping[str, Any], args: list[str], piped: Callable[[], str | None] | None = None
) -> list[str]:
    """``args`` with Ollama's command (:data:`COMMAND_ALIASES`, ``run``, ``help``) and its root ``-v`` written as
    npgpt's; other ``args`` as they are."""
    if args[:1] == ["-v"]:  # `ollama -v`: the version
        return ["--version", *args[1:]]
    name = args[0] if args else None
    if name == "run":  # npgpt's run command is only its help (and its usage errors): the run itself is rewritten
        return _ollama_run_args(commands, args[1:], piped)
    if name is None or name in commands:
        return args
    if name in COMMAND_ALIASES:
        return [COMMAND_ALIASES[name], *args[1:]]
    if name == "help" and len(args) <= 2:  # an unknown command after it: click's "No such command 'x'"
        return _ollama_args(commands, [*args[1:], "--help"]) if args[1:] else ["--help"]  # `help pull`: download's
    return args


def _ollama_run_args(
    commands: Mapping[str, Any], rest: list[str], piped: Callable[[], str | None] | None = None
) -> list[str]:
    """``run MODEL [PROMPT...]`` (Ollama's, options anywhere, as its cobra reads them) as generate's arguments (a
    prompt) or chat's (none); with ``-h`` or ``--help`` anywhere, or no model, ``run`` itself: its help, or click's
    "Missing argument 'MODEL'". ``piped``: the text piped into standard input, if any, which Ollama's run puts before
    the prompt's words (``cat notes.txt | ollama run MODEL "Summarize:"``); without words, chat reads it."""
    ended = rest.index("--") if "--" in rest else len(rest)  # after `--`, every word is the prompt's
    options, words, dangling = _options_and_words(commands, rest[:ended])  # `run m why is --seed 1 the sky`
    if "-h" in options or "--help" in options:
        return ["run", *rest]
    given = any(o in ("-m", "--model") or o.startswith("--model=") for o in options)  # npgpt's way: the words' all text
    if not words and not given:  # options without a model (`run --seed 1`): the model is what is missing
        return ["run"]
    model = [] if given else ["-m", words.pop(0)]
    prompt = [*words, *rest[ended + 1 :]]
    if not prompt:
        return ["chat", *model, *options]
    if dangling:  # `run m hi --seed`: nothing may follow it (it would take the `--` below as its value), so
        return ["generate", *model, *options]  # click says "Option '--seed' requires an argument"
    text = piped() if piped is not None else None
    # Ollama joins the text (its newline kept) and the words with a space; the space that starts the line is dropped
    return ["generate", *model, *options, "--", (f"{text}\n" if text else "") + " ".join(prompt)]


def _prompt_first(commands: Mapping[str, Any], rest: list[str]) -> str | None:
    """What ``npgpt run`` says where its first word, which it reads as the model, is the prompt: one of several words
    that is no model (``npgpt run "Why is the sky blue?"``), or one followed by a model (``npgpt run Hi 124M``); None
    otherwise (a mistyped name gets the list of models when it is loaded). Ollama pulls such a "model" and fails."""
    import shlex

    from ..registry import names_a_model

    ended = rest.index("--") if "--" in rest else len(rest)
    options, words, _ = _options_and_words(commands, rest[:ended])
    if not words or any(o in ("-m", "--model") or o.startswith("--model=") for o in options):
        return None
    first, *others = words
    if names_a_model(first) or not (any(c.isspace() for c in first.strip()) or others and names_a_model(others[-1])):
        return None

    def quoted(text: str) -> str:  # a page pasted is not repeated
        return shlex.quote(text) if len(text) <= 80 and text.isprintable() else "PROMPT"

    if others and names_a_model(others[-1]):  # `run PROMPT MODEL`: the other order
        prompt = quoted(" ".join([first, *others[:-1]]))
        return f"the model goes first, then the prompt: npgpt run {shlex.quote(others[-1])} {prompt}"
    prompt = quoted(" ".join(words))
    return (
        f"npgpt run takes a model first, then the prompt: npgpt run MODEL {prompt} (124M, a path or bundled; "
        f"npgpt list shows what is downloaded); with the default model: npgpt generate {prompt}"
    )


def _options_and_words(commands: Mapping[str, Any], args: list[str]) -> tuple[list[str], list[str], bool]:
    """``args`` of ``run MODEL`` split into options (each with its value) and the prompt's words, wherever they stand:
    Ollama joins every word that is not an option or its value. Whether an option takes a value is generate's (or
    chat's) say, by npgpt's name or another tool's (``--temp``); an option neither has takes none (click names it).
    The third item: whether the last word is an option that takes a value (``hi --seed``), which has none."""
    options: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
        else:
            options.append(arg)
            if "=" not in arg and _takes_value(commands, arg):
                if i + 1 == len(args):
                    return options, words, True
                i += 1
                options.append(args[i])
        i += 1
    return options, words, False


def _takes_value(commands: Mapping[str, Any], option: str) -> bool:
    """Whether ``option`` (npgpt's spelling or another tool's) takes a value on generate or chat."""
    for command in filter(None, (commands.get("generate"), commands.get("chat"))):
        ours = option if _has(command, option) else _accepted(command, option)
        if ours == "PROMPT" or ours is None and _snake(option) == "--init_from" and _init_from(command, "x"):
            return True  # -p TEXT; nanoGPT's --init_from NAME, read by its value (_as_ours): --model NAME
        param = next((p for p in getattr(command, "params", ()) if ours in (*p.opts, *p.secondary_opts)), None)
        if param is not None:
            return not param.is_flag
    return False


def _has(command: Any, ours: str) -> bool:
    """Whether ``command`` has the option ``ours`` (or the argument, upper-cased: ``PROMPT``, which a command's
    ``TEXT`` is too: llama-tokenize's -p is npgpt tokenize's text)."""
    names = (ours, "TEXT") if ours == "PROMPT" else (ours,)
    return any(
        n in (*p.opts, *getattr(p, "secondary_opts", ()), (p.name or "").upper()) for p in command.params for n in names
    )


def _ours(command: Any, theirs: str) -> str | None:
    """``command``'s spelling of another tool's ``theirs`` (``--temp``: ``--temperature``), ``theirs`` itself where
    the command has it, or None."""
    if _has(command, theirs):
        return theirs
    theirs = _snake(theirs)  # nanoGPT's --learning_rate typed --learning-rate, as every other option is spelt
    known = OPTIONS.get(theirs, theirs.replace("_", "-") if theirs.startswith("--") else ())
    return next((o for o in ((known,) if isinstance(known, str) else known) if _has(command, o)), None)


def _snake(theirs: str) -> str:
    """``--learning-rate`` as :data:`OPTIONS` spells it, ``--learning_rate``, where only that spelling is there."""
    snake = "--" + theirs[2:].replace("-", "_")
    listed = snake in OPTIONS or snake in INSTEAD and theirs not in INSTEAD  # --max-tokens is listed itself
    return snake if theirs.startswith("--") and theirs not in OPTIONS and listed else theirs


def _short_with_equals(command: Any, args: list[str]) -> list[str]:
    """``args`` with a one-letter option written ``-X=VALUE`` (``-k=5``, ``-m=model.gguf``, ``-s=1``) as ``-X VALUE``,
    as Python's argparse and Go's pflag (Ollama's) read it, where ``command`` takes ``-X`` (or another tool's ``-X``)
    with a value: click read it as ``-X`` with the value ``=VALUE`` ("'=5' is not an integer", "'=model.gguf' is not
    a file"), or, for another tool's ``-s``, said there was no such option. After ``--`` every word is text."""
    ended = args.index("--") if "--" in args else len(args)
    out: list[str] = []
    for arg in args[:ended]:
        name, eq, value = arg.partition("=")
        if eq and len(name) == 2 and name[0] == "-" and name[1].isalpha() and _takes_one(command, name):
            out += [name, value]
        else:
            out.append(arg)
    return out + args[ended:]


def _takes_one(command: Any, option: str) -> bool:
    """Whether ``command`` reads ``option`` (its own, or another tool's spelling of one) with a value."""
    param = next((p for p in command.params if option in (*p.opts, *getattr(p, "secondary_opts", ()))), None)
    if param is not None:
        return not getattr(param, "is_flag", False) and not getattr(param, "count", False)
    ours = _accepted(command, option)
    if ours is None and option in ("-m", "--model"):  # npgpt info -m NAME: its MODEL argument
        return _has(command, "MODEL")
    if ours is None or ours == "PROMPT":
        return ours == "PROMPT"
    return _takes_one(command, ours)


def _as_ours(command: Any, args: list[str], typed: dict[str, str] | None = None) -> list[str]:
    """``args`` with another tool's spelling of one of ``command``'s options (:data:`ACCEPTED`, or a ``--snake_case``
    of its ``--kebab-case``) written as the command's own: ``--temp 0.7`` as ``--temperature 0.7``, ``--top_k=200``
    as ``--top-k=200``; llama.cpp's ``-p TEXT`` (``--prompt``, nanoGPT's ``--start``) as the text argument, after
    ``--`` so that text starting with '-' stays text; ``--start=FILE:name`` as ``--prompt-file name``. Each option
    written so goes into ``typed`` as ours -> the spelling typed, for an error about its value to name that."""
    typed = {} if typed is None else typed
    ended = args.index("--") if "--" in args else len(args)
    out: list[str] = []
    texts: list[str] = []
    i = 0
    while i < ended:
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        ours = None if _has(command, name) else _accepted(command, name)
        if ours is None and name in ("-m", "--model") and not _has(command, name) and _has(command, "MODEL"):
            ours = "PROMPT"  # npgpt info -m 124M, as every other command takes its model: the MODEL argument
        given = value if eq else args[i + 1] if i + 1 < ended else None
        init = _init_from(command, given) if ours is None and _snake(name) == "--init_from" else None
        if init is not None:
            typed.update({init[0]: name} if init else {})
            out += init
            i += 1 if eq else 2
            continue
        if ours is None and eq and _as_npgpt_does(command, name, value):  # nanoGPT's --compile=False: nothing to do
            i += 1
            continue
        if ours is None:
            out.append(arg)
        elif ours != "PROMPT":
            typed[ours] = name
            out += ([f"{ours}={value}"] if ours.startswith("--") else [ours, value]) if eq else [ours]  # -n=3: "=3"
        else:
            if not eq:  # the value is the next word (none: click's "requires an argument" for npgpt's own spelling)
                if i + 1 >= ended:
                    return args
                i, value = i + 1, args[i + 1]
            if name == "--start" and value.startswith("FILE:"):
                if not _has(command, "--prompt-file"):  # no file option to read it: the hint (`npgpt lens - < FILE`)
                    return args
                out += ["--prompt-file", value.removeprefix("FILE:")]
            else:
                texts.append(value)
        i += 1
    rest = args[ended:]
    if texts:
        rest = ["--", *texts, *rest[1:]]
    return out + rest


# nanoGPT's settings (``--key=value``, as its configurator takes them) whose value is what npgpt does anyway, where
# INSTEAD says what npgpt does: taken as no option at all, as --init_from=scratch is. Another value keeps the line
# (``--dropout=0.2``: npgpt trains without dropout). The values as nanoGPT's literal_eval reads them.
SAME_AS_NPGPT = {
    "--compile": ("False",),  # npgpt compiles nothing on NumPy, and JAX's step by itself
    "--dropout": ("0", "0.0", "0."),
    "--bias": ("True",),
    "--wandb_log": ("False",),
    "--always_save_checkpoint": ("True",),
    "--decay_lr": ("True",),
    "--eval_only": ("False",),
}


def _as_npgpt_does(command: Any, theirs: str, value: str) -> bool:
    """Whether nanoGPT's ``theirs=value`` asks ``command`` for what it does anyway (:data:`SAME_AS_NPGPT`)."""
    theirs = _snake(theirs)
    if value.strip() not in SAME_AS_NPGPT.get(theirs, ()):
        return False
    return any(c in ("*", getattr(command, "name", None)) or _has(command, c) for c, _ in INSTEAD.get(theirs, ()))


def _init_from(command: Any, value: str | None) -> list[str] | None:
    """nanoGPT's ``--init_from VALUE`` as ``command``'s options, or None (the hint): a model's name (sample.py's
    ``gpt2-xl``; train.py's, to fine-tune) is ``--model``'s or ``--init``'s, train.py's ``resume`` (its out_dir's
    checkpoint) ``--resume``, its ``scratch`` the default, no option. sample.py's ``resume`` (its out_dir's ckpt.pt)
    keeps the hint: the folder is npgpt's --model."""
    if value is None:
        return None
    if value == "resume":
        return ["--resume"] if _has(command, "--resume") else None
    if value == "scratch":
        return [] if _has(command, "--init") else None
    ours = next((o for o in ("--model", "--init") if _has(command, o)), None)
    return None if ours is None else [ours, value]


def _accepted(command: Any, theirs: str) -> str | None:
    """``command``'s option (or ``PROMPT``, its text argument) that it takes ``theirs`` as, or None."""
    if _snake(theirs) in ACCEPTED:
        return _ours(command, theirs)
    kebab = theirs.replace("_", "-")
    return kebab if theirs.startswith("--") and _has(command, kebab) else None


def _hint_message(command: Any, name: str, theirs: str) -> str | None:
    """What ``npgpt NAME`` says of an option ``theirs`` it lacks: npgpt's spelling, what to do instead, that it
    has nothing like another tool's option; None for an option no tool npgpt knows has (click's own message)."""
    ours = _ours(command, theirs)
    if ours is not None:
        how = f'the text as an argument: npgpt {name} "TEXT"' if ours == "PROMPT" else ours
        if theirs == "--start" and _has(command, "--prompt-file"):
            how += " (nanoGPT's FILE:name is --prompt-file name)"
        elif theirs == "--start":
            how += f" (nanoGPT's FILE:name is read from stdin: npgpt {name} - < name)"
        return f"No such option: {theirs}. npgpt takes {how}"
    instead = next((t for c, t in INSTEAD.get(_snake(theirs), ()) if c in ("*", name) or _has(command, c)), None)
    if instead is not None:
        return f"No such option: {theirs}; {instead.format(cmd=name)}"
    if _snake(theirs) in OPTIONS or _snake(theirs) in INSTEAD:  # click's closest spellings: a wrong neighbour
        return f"No such option: {theirs}; npgpt {name} has nothing like it"  # the error adds where help is
    return None


def _ollama_run(args: list[str]) -> str:
    """npgpt's command for ``ollama run MODEL [PROMPT]``: generate for a prompt, else chat."""
    import shlex

    model = [a for a in args[:1] if not a.startswith("-")]
    prompt = " ".join(args[1:]) if model else ""
    with_model = f" -m {shlex.quote(model[0])}" if model else " -m MODEL"
    if prompt:
        return f"generate: npgpt generate {shlex.quote(prompt)}{with_model}"
    return f"chat: npgpt chat{with_model} (or for one prompt: npgpt generate PROMPT{with_model})"
