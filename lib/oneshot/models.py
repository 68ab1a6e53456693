"""One view of a causal language model for the one-shot pipeline (:mod:`lib.oneshot.pipeline`).

The pipeline runs a model block by block: it needs the first block's inputs for a batch of token ids
(:meth:`CausalLM.embed`), the blocks in order (:meth:`CausalLM.blocks`), each block's Linears by component name
(:meth:`CausalLM.linears`), a way to call one block on hidden states (:meth:`CausalLM.run_block`), and a full
forward for the perplexity before and after (:meth:`CausalLM.logits`). Two adapters give that view:

- :class:`NanoGPT`: this framework's GPT-2 (``models/gpt2/model.py``, nanoGPT's layout: ``transformer.wte``,
  ``wpe``, ``drop``, ``h``, ``ln_f``, ``lm_head``). A block is called on the hidden states alone. The adapter
  reads the layout, never imports the model (``lib`` looks only down); ``scripts/prune.py`` loads the run.
- :class:`HuggingFace`: a pretrained causal LM of ``transformers`` (OPT: ``self_attn.{q,k,v,out}_proj``, ``fc1``,
  ``fc2``; LLaMA-style: ``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``; any other whose decoder layers
  hold ``nn.Linear``\\ s). A decoder layer takes more than hidden states (attention mask, position ids, rotary
  position embeddings), and each architecture builds them its own way. So the first layer's positional and
  keyword arguments are captured by a forward pre-hook during one model forward that stops there (the hook
  raises a private exception), and every layer is then called with those same arguments and the current hidden
  states: one code path for every architecture. HF's GPT-2 keeps its weights in ``Conv1D`` (``x W + b`` with W
  in x out): :func:`load_hf` swaps each for the ``nn.Linear`` holding ``Wᵀ`` (the same function), and
  :meth:`HuggingFace.save` writes them back in Conv1D's layout, so ``save_pretrained``'s output loads as the
  original architecture.

Component names are the Linears' module paths inside the block (``self_attn.q_proj``, ``mlp.down_proj``,
``fc1``; this framework's GPT-2: ``attn.c_attn``, ``mlp.c_fc`` ...), the published analysis's naming.

``transformers`` is imported only inside :func:`load_hf` (``lib.oneshot`` imports every module of the package).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.errors import UserError

HF_INSTALL = "pip install -e '.[hf]'` (or `make env EXTRAS=hf`)"


def components(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's Linears by component name, their module path inside the block (OPT: ``self_attn.q_proj`` ...
    ``fc2``; LLaMA: ``mlp.down_proj`` ...; this framework's GPT-2: ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
    ``mlp.c_proj``), in module order."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


class CausalLM:
    """What the pipeline needs of a causal LM. ``context`` is whatever a block needs besides the hidden states
    (``None`` for :class:`NanoGPT`; the captured arguments for :class:`HuggingFace`)."""

    name: str  # a file-name-safe name of the model (results directory, prune.json)
    model: nn.Module
    max_length: int | None  # the longest sequence the model takes, if it has a limit
    eos: int  # the token that separates documents

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        return components(block)

    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(hidden states (B, T, C) entering the first block, context) for token ids (B, T)."""
        raise NotImplementedError

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab)."""
        raise NotImplementedError

    def save(self, out_dir: Path) -> Path:
        """Write the (pruned) model into ``out_dir`` in the form it was loaded from; where it went."""
        raise NotImplementedError


class NanoGPT(CausalLM):
    """This framework's GPT-2 (a run directory's model, with the run's tokenizer)."""

    def __init__(self, model: nn.Module, tokenizer: Any, name: str) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_length = model.config.block_size
        self.eos = tokenizer.eot

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.transformer.h)

    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        t = self.model.transformer
        pos = torch.arange(ids.shape[1], device=ids.device)
        return t.drop(t.wte(ids) + t.wpe(pos)), None  # (B, T, C), as GPT2.forward

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: None) -> torch.Tensor:
        return block(hidden)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def save(self, out_dir: Path) -> Path:
        """``model.pt``: the state dict, as a run's checkpoint holds it (``{"model": ...}``)."""
        from lib import checkpoint

        checkpoint.save({"model": self.model.state_dict()}, out_dir / "model.pt")
        return out_dir / "model.pt"


class _Caught(Exception):
    """Raised by the catcher on the first decoder layer: the model forward stops there."""


class HuggingFace(CausalLM):
    """A ``transformers`` causal LM and its tokenizer (see :func:`load_hf`); ``transposed``: the modules
    :func:`linearize_conv1d` swapped for Linears."""

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, transposed: tuple[str, ...] = ()) -> None:
        self.model, self.tokenizer, self.name, self.transposed = model, tokenizer, name, transposed
        config = model.config
        self.max_length = getattr(config, "max_position_embeddings", None)
        eos = tokenizer.eos_token_id if tokenizer is not None else None
        self.eos = eos if eos is not None else getattr(config, "eos_token_id", None) or 0
        layers = config.num_hidden_layers
        # the decoder layers: the ModuleList with one entry per hidden layer (model.decoder.layers for OPT,
        # model.layers for LLaMA, transformer.h for GPT-2 ...), found without a table of architectures
        self._blocks = next(
            (m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == layers),
            None,
        )
        if self._blocks is None:
            raise UserError(f"{name}: found no list of its {layers} decoder layers; one-shot pruning cannot run it")
        if not components(self._blocks[0]):
            kinds = sorted({type(m).__name__ for m in self._blocks[0].modules() if m is not self._blocks[0]})
            raise UserError(
                f"{name} ({config.model_type}): its decoder layers hold no nn.Linear or Conv1D (they hold "
                f"{', '.join(kinds)}): prune an OPT, GPT-2 or LLaMA-style model, or a GPT-2 run of this framework"
            )

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise UserError(f"{self.name} has no tokenizer (AutoTokenizer found none): save one beside the model")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[tuple, dict]]:
        captured: dict[str, Any] = {}

        def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured["args"], captured["kwargs"] = args, kwargs
            raise _Caught

        handle = self._blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            self.model(input_ids=ids, use_cache=False)
        except _Caught:
            pass
        finally:
            handle.remove()
        args, kwargs = captured["args"], dict(captured["kwargs"])
        hidden = args[0] if args else kwargs.pop("hidden_states")
        for cache in ("past_key_value", "past_key_values"):  # no cache: each call sees only its own tokens
            if cache in kwargs:
                kwargs[cache] = None
        return hidden, (tuple(args[1:]), kwargs)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: tuple[tuple, dict]) -> torch.Tensor:
        args, kwargs = context
        out = block(hidden, *args, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits

    def save(self, out_dir: Path) -> Path:
        """``model/``: ``save_pretrained`` of the model (Conv1D weights back in their in x out layout) and of its
        tokenizer, loadable by ``from_pretrained`` (and by ``make prune RUN=<that directory>``)."""
        state = self.model.state_dict()
        for name in self.transposed:
            state[f"{name}.weight"] = state[f"{name}.weight"].t().contiguous()
        self.model.save_pretrained(out_dir / "model", state_dict=state)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out_dir / "model")
        return out_dir / "model"


def linearize_conv1d(model: nn.Module) -> tuple[str, ...]:
    """Swap every ``transformers`` ``Conv1D`` (``x W + b``, W in x out: HF's GPT-2) in ``model`` for the
    ``nn.Linear`` computing the same function (weight ``Wᵀ``); the swapped modules' names."""
    swapped = []
    for name, module in list(model.named_modules()):
        if type(module).__name__ != "Conv1D" or getattr(module, "weight", None) is None:
            continue
        weight = module.weight  # (in, out)
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=module.bias is not None)
        linear.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        model.set_submodule(name, linear)
        swapped.append(name)
    return tuple(swapped)


def hf_name(source: str) -> str:
    """A directory name for a Hub name or a local model directory: ``facebook/opt-125m`` -> ``facebook--opt-125m``
    (the Hub cache's own convention), a directory -> its last component."""
    path = Path(source)
    name = path.resolve().name if path.is_dir() else source.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def load_hf(source: str, device: torch.device | str = "cpu") -> HuggingFace:
    """A pretrained causal LM and its tokenizer from a Hub name or a local directory (``save_pretrained``), in
    fp32 and eval mode on ``device``. ``HF_HUB_OFFLINE`` set (and not 0): only the local cache or directory is
    read. A directory without a tokenizer is accepted (its calibration then needs token ids)."""
    try:
        import transformers
    except ImportError:
        raise UserError(f"pruning a Hugging Face model needs transformers: `{HF_INSTALL}") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")
    where = {"local_files_only": offline}
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(source, **where)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        hint = " (HF_HUB_OFFLINE is set: only the local cache is read)" if offline else ""
        raise UserError(
            f"{source} is neither a run directory nor a Hugging Face causal LM that loads{hint}: {reason}; give "
            "RUN=<run dir or run id> or a Hub name such as facebook/opt-125m, or a directory saved by save_pretrained"
        ) from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **where)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    model.to(device, torch.float32).eval()  # the statistics and the methods work in fp32
    return HuggingFace(model, tokenizer, hf_name(source), linearize_conv1d(model))
