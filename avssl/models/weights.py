"""Published weights in, plain weights out: name-based key maps between avssl's encoders and the layouts
that torchvision, pytorchvideo, PySlowFast and AVID-CMA publish their weights in.

================ =========================================================== ===================================
format           encoders (avssl name)                                       what a published file holds
================ =========================================================== ===================================
``avssl``        every encoder                                               ``avssl export`` output (the
                                                                             encoder's own keys), or a training
                                                                             checkpoint (``state_dict`` with
                                                                             ``video_encoder.`` … parts)
``torchvision``  ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` (and other depths    ``torchvision.models.video.*``
                 of those units); ``resnet18``, ``resnet50``                  / ``torchvision.models.resnet*``
                                                                             state dicts (``layer1.0.conv1.0``…)
``pytorchvideo`` ``i3d_r50``, ``slow_r50``, ``slowfast_r50``,                 pytorchvideo hub / model zoo
                 ``avslowfast_r50``                                          (``blocks.1.res_blocks.0.branch2``…)
``pyslowfast``   ``i3d_r50``, ``slow_r50``, ``slowfast_r50``                  PySlowFast ``.pyth`` checkpoints
                                                                             (``model_state`` with
                                                                             ``s2.pathway0_res0.branch2.a``…)
``avid_cma``     ``r2plus1d_18_avid``, ``avid_audio_conv``                   the AVID-CMA release (``model`` with
                                                                             ``module.video_model.conv2x.0``… and
                                                                             ``module.audio_model.block1``…)
================ =========================================================== ===================================

Every map is a function from an avssl state-dict key to the reference's key (``None``: no counterpart),
so the same table serves both directions: :func:`load_weights` (reference → avssl) and
:func:`export_weights` (avssl → reference). AVID-CMA's audio network reads its spectrogram as B×1×T×F
(time on the height axis) where avssl's reads B×1×F×T, so its 2D kernels are transposed on the way in and
out; every other tensor is copied as it is.

A file may hold several models: an avssl checkpoint's ``video_encoder.`` / ``audio_encoder.`` (and a
momentum method's ``target_encoder.``), AVID-CMA's ``video_model.`` / ``audio_model.``. The *part* read is
the one whose keys fit the encoder (``part=`` names it). A leading ``module.`` (DataParallel / DDP) is
ignored, and so are the reference's classification heads (torchvision's ``fc``, pytorchvideo's ``proj``,
PySlowFast's ``head``), which an encoder does not have.

Loading is strict: a file that does not fit — another architecture, another width, the wrong format —
raises one :class:`WeightsError` listing the missing, unexpected and mis-shaped keys; nothing is loaded.
Files are read with ``weights_only=True`` through :func:`avssl.checkpoint.load_checkpoint`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from avssl.errors import UserError

log = logging.getLogger(__name__)

FORMATS: Tuple[str, ...] = ("avssl", "torchvision", "pytorchvideo", "pyslowfast", "avid_cma")
#: Where a checkpoint keeps its state dict: Lightning / avssl, PySlowFast, AVID-CMA and most scripts.
_CONTAINERS = ("state_dict", "model_state", "model", "model_state_dict")
#: Parts of an avssl checkpoint preferred over the momentum copies (target_encoder, key_encoder) of a tie.
_PRIMARY_PARTS = ("video_encoder.", "audio_encoder.", "image_encoder.")
_NBT = "num_batches_tracked"
_SHOWN = 5  # keys named per kind of problem in an error; the error object keeps them all

KeyMap = Callable[[str], Optional[str]]
Source = Union[str, "os.PathLike[str]", Mapping[str, Any]]


class WeightsError(UserError, ValueError):
    """Weights that do not fit an encoder, or a format that has no layout for it; one line.

    ``missing`` (reference keys the file lacks), ``unexpected`` (keys of the file nothing reads) and
    ``mismatched`` (``key: file shape vs encoder shape``) hold the full lists the message samples.
    """

    def __init__(self, message: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


@dataclass(frozen=True)
class Layout:
    """How one format names (and stores) the weights of one avssl encoder.

    ``key`` maps an avssl key to the format's key (``None``: no counterpart); ``head`` matches the format's
    classifier keys (dropped when loading); ``parts`` are the prefixes the format uses inside a file that
    holds several models; ``transpose_2d`` swaps the last two axes of 4-D (2D conv) weights both ways.
    """

    format: str
    key: KeyMap
    head: Optional[str] = None
    parts: Tuple[str, ...] = ()
    transpose_2d: bool = False

    def convert(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor in one layout -> the other (the change is its own inverse)."""
        return t.transpose(-1, -2) if self.transpose_2d and t.dim() == 4 else t


# ----------------------------------------------------------------------------------------------------------
# Key maps: avssl key -> reference key
# ----------------------------------------------------------------------------------------------------------
def _sub_first(rules: Sequence[Tuple[str, str]], text: str) -> Optional[str]:
    """``text`` rewritten by the first rule (regex, replacement) that matches it, else None."""
    for pattern, repl in rules:
        if re.match(pattern, text):
            return re.sub(pattern, repl, text, count=1)
    return None


def _stem_and_unit(key: str) -> Tuple[Optional[str], Optional[Tuple[int, str, str]]]:
    """Split a single-pathway key: ("stem rest", None) or (None, (stage 2..5, unit index, rest))."""
    m = re.match(r"^stem\.(.+)$", key)
    if m:
        return m[1], None
    m = re.match(r"^res([2-5])\.blocks\.(\d+)\.(.+)$", key)
    if m:
        return None, (int(m[1]), m[2], m[3])
    return None, None  # e.g. res3.nonlocal_blocks.*: no counterpart


# torchvision VideoResNet: conv1 = Sequential(conv, BN, ReLU), conv2 = Sequential(conv, BN); a (2+1)D conv is
# itself a Sequential, so its layers sit one level deeper (conv1.0.0, conv1.0.1, conv1.0.3).
_TV_UNIT = ((r"^conv([12])\.weight$", r"conv\1.0.weight"), (r"^conv([12])\.(\d)\.", r"conv\1.0.\2."),
            (r"^bn([12])\.", r"conv\1.1."), (r"^shortcut\.", "downsample."))


def _torchvision_video(key: str) -> Optional[str]:
    stem, unit = _stem_and_unit(key)
    if stem is not None:  # r3d/mc3 stem: conv + BN; (2+1)D stem: the same Sequential (0, 1, 3, 4) in both
        r = _sub_first(((r"^conv\.", "0."), (r"^bn\.", "1."), (r"^(\d)\.", r"\1.")), stem)
        return r and "stem." + r
    if unit is None:
        return None
    stage, i, rest = unit
    r = _sub_first(_TV_UNIT, rest)
    return r and f"layer{stage - 1}.{i}.{r}"


def _identity(key: str) -> Optional[str]:
    return key


# Bottleneck units: pytorchvideo ResBlock (branch1_conv/norm, branch2.conv_a/norm_a …) and PySlowFast ResBlock
# (branch1/branch1_bn, branch2.a/a_bn …). conv_b.N / bn_b.N are the two parallel convs of a separable unit.
_PTV_UNIT = ((r"^shortcut\.0\.", "branch1_conv."), (r"^shortcut\.1\.", "branch1_norm."),
             (r"^conv_([abc])\.", r"branch2.conv_\1."), (r"^bn_([abc])\.", r"branch2.norm_\1."))
_PSF_UNIT = ((r"^shortcut\.0\.", "branch1."), (r"^shortcut\.1\.", "branch1_bn."),
             (r"^conv_([abc])\.", r"branch2.\1."), (r"^bn_([abc])\.", r"branch2.\1_bn."))


def _pytorchvideo_resnet(temporal_pool: bool) -> KeyMap:
    """pytorchvideo ``create_resnet``: blocks.0 stem, then one block per stage — with I3D's temporal pool
    as a block of its own after res2, so res3..res5 sit at blocks.3..5 instead of blocks.2..4."""
    index = {2: 1, 3: 3, 4: 4, 5: 5} if temporal_pool else {2: 1, 3: 2, 4: 3, 5: 4}

    def key(k: str) -> Optional[str]:
        stem, unit = _stem_and_unit(k)
        if stem is not None:
            r = _sub_first(((r"^conv\.", "conv."), (r"^bn\.", "norm.")), stem)
            return r and f"blocks.0.{r}"
        if unit is None:
            return None
        stage, i, rest = unit
        r = _sub_first(_PTV_UNIT, rest)
        return r and f"blocks.{index[stage]}.res_blocks.{i}.{r}"

    return key


_PATHWAYS = {"slow": 0, "fast": 1, "audio": 2}


def _pytorchvideo_slowfast(audio: bool) -> KeyMap:
    """pytorchvideo ``create_slowfast`` / ``create_audio_visual_slowfast``: blocks.N.multipathway_blocks.P
    (P = 0 slow, 1 fast, 2 audio) and blocks.N.multipathway_fusion (a Sequential in the audio-visual model)."""
    if audio:
        fuse_rules = ((r"^fast_to_slow\.conv\.", "block_fast_to_slow.0."),
                      (r"^fast_to_slow\.bn\.", "block_fast_to_slow.1."),
                      (r"^audio_to_slow\.", "block_audio_to_fastslow."))
    else:
        fuse_rules = ((r"^fast_to_slow\.conv\.", "conv_fast_to_slow."), (r"^fast_to_slow\.bn\.", "norm."))

    def key(k: str) -> Optional[str]:
        m = re.match(r"^(stem|res[2-5])\.(slow|fast|audio|fuse)\.(.+)$", k)
        if not m:
            return None
        block = 0 if m[1] == "stem" else int(m[1][3]) - 1
        where, rest = m[2], m[3]
        if where == "fuse":
            r = _sub_first(fuse_rules, rest)
            return r and f"blocks.{block}.multipathway_fusion.{r}"
        path = f"blocks.{block}.multipathway_blocks.{_PATHWAYS[where]}."
        if m[1] == "stem":
            r = _sub_first(((r"^conv\.(\d)\.", r"conv.convs.\1."), (r"^conv\.", "conv."), (r"^bn\.", "norm.")), rest)
            return r and path + r
        u = re.match(r"^blocks\.(\d+)\.(.+)$", rest)
        r = _sub_first(_PTV_UNIT, u[2]) if u else None
        return r and f"{path}res_blocks.{u[1]}.{r}"

    return key


def _pyslowfast_resnet(k: str) -> Optional[str]:
    """PySlowFast ``ResNet`` (I3D, Slow): s1.pathway0_stem, s2..s5.pathway0_res{i}."""
    stem, unit = _stem_and_unit(k)
    if stem is not None:
        r = _sub_first(((r"^conv\.", "conv."), (r"^bn\.", "bn.")), stem)
        return r and f"s1.pathway0_stem.{r}"
    if unit is None:
        return None
    stage, i, rest = unit
    r = _sub_first(_PSF_UNIT, rest)
    return r and f"s{stage}.pathway0_res{i}.{r}"


def _pyslowfast_slowfast(k: str) -> Optional[str]:
    """PySlowFast ``SlowFast``: s1.pathway{0,1}_stem, s{N}.pathway{0,1}_res{i}, s{N}_fuse.conv_f2s / bn."""
    m = re.match(r"^(stem|res[2-5])\.(slow|fast|fuse)\.(.+)$", k)
    if not m:
        return None
    s = 1 if m[1] == "stem" else int(m[1][3])
    where, rest = m[2], m[3]
    if where == "fuse":
        r = _sub_first(((r"^fast_to_slow\.conv\.", "conv_f2s."), (r"^fast_to_slow\.bn\.", "bn.")), rest)
        return r and f"s{s}_fuse.{r}"
    p = _PATHWAYS[where]
    if m[1] == "stem":
        r = _sub_first(((r"^conv\.", "conv."), (r"^bn\.", "bn.")), rest)
        return r and f"s1.pathway{p}_stem.{r}"
    u = re.match(r"^blocks\.(\d+)\.(.+)$", rest)
    r = _sub_first(_PSF_UNIT, u[2]) if u else None
    return r and f"s{s}.pathway{p}_res{u[1]}.{r}"


_AVID_UNIT = ((r"^conv([12])_s\.", r"spt_conv\1."), (r"^bn([12])_s\.", r"spt_bn\1."),
              (r"^conv([12])_t\.", r"tmp_conv\1."), (r"^bn1_t\.", "tmp_bn1."), (r"^bn_out\.", "out_bn."),
              (r"^shortcut\.", "res_conv."))


def _avid_video(k: str) -> Optional[str]:
    """AVID-CMA ``R2Plus1D`` (depth 18): conv1 = Sequential(conv, BN, ReLU, pool), conv{2..5}x.{i} units."""
    stem, unit = _stem_and_unit(k)
    if stem is not None:
        r = _sub_first(((r"^conv\.", "0."), (r"^bn\.", "1.")), stem)
        return r and f"conv1.{r}"
    if unit is None:
        return None
    stage, i, rest = unit
    r = _sub_first(_AVID_UNIT, rest)
    return r and f"conv{stage}x.{i}.{r}"


_PTV_HEAD = r"^blocks\.\d+\.proj\."


def layouts_for(encoder: nn.Module) -> Dict[str, Layout]:
    """The formats that have a layout for ``encoder`` (always ``avssl``), by its structure."""
    from avssl.models.audio import AvidAudioConv
    from avssl.models.image import ResNet2d
    from avssl.models.resnet3d import AvidR2Plus1dBlock, BasicBlock, Bottleneck, VideoResNet
    from avssl.models.slowfast import SlowFast

    out = {"avssl": Layout("avssl", _identity)}
    if isinstance(encoder, VideoResNet):
        unit = encoder.res2.blocks[0]
        if isinstance(unit, BasicBlock):
            out["torchvision"] = Layout("torchvision", _torchvision_video, head=r"^fc\.")
        elif isinstance(unit, Bottleneck):
            pooled = encoder.res3.pre_pool is not None
            out["pytorchvideo"] = Layout("pytorchvideo", _pytorchvideo_resnet(pooled), head=_PTV_HEAD)
            out["pyslowfast"] = Layout("pyslowfast", _pyslowfast_resnet, head=r"^head\.")
        elif isinstance(unit, AvidR2Plus1dBlock):
            out["avid_cma"] = Layout("avid_cma", _avid_video, head=r"^video_proj\.", parts=("video_model.",))
    elif isinstance(encoder, SlowFast) and isinstance(encoder.res2.slow.blocks[0], Bottleneck):
        audio = encoder.audio_time_ratio is not None
        out["pytorchvideo"] = Layout("pytorchvideo", _pytorchvideo_slowfast(audio), head=_PTV_HEAD)
        if not audio:
            out["pyslowfast"] = Layout("pyslowfast", _pyslowfast_slowfast, head=r"^head\.")
    elif isinstance(encoder, AvidAudioConv):
        out["avid_cma"] = Layout("avid_cma", _identity, head=r"^audio_proj\.", parts=("audio_model.",),
                                 transpose_2d=True)
    elif isinstance(encoder, ResNet2d):
        out["torchvision"] = Layout("torchvision", _identity, head=r"^fc\.")
    return out


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------
def split_weights_spec(spec: Any, format: str = "auto") -> Tuple[str, Any]:
    """``"FORMAT:PATH"`` -> (FORMAT, PATH); a plain path or a state dict keeps ``format``.

    Raises :class:`WeightsError` for an unknown format, or one that disagrees with ``format``.
    """
    _check_format(format)
    if not isinstance(spec, str):
        return format, spec
    m = re.match(r"^([A-Za-z][\w-]+):(.+)$", spec)
    if not m or os.path.exists(spec):
        return format, spec
    named, path = m[1], m[2]
    if named not in FORMATS:
        raise WeightsError(f"unknown weights format {named!r} in {spec!r}; formats: {', '.join(FORMATS)} "
                           "(or give the path alone to detect the format)")
    if format not in ("auto", named):
        raise WeightsError(f"{spec!r} names format {named!r} but format={format!r} was asked for")
    return named, path


def _check_format(format: str) -> None:
    if format != "auto" and format not in FORMATS:
        raise WeightsError(f"unknown weights format {format!r}; formats: auto, {', '.join(FORMATS)}")


def _flat_state_dict(state: Mapping[str, Any], name: str) -> Dict[str, torch.Tensor]:
    """The tensors of a state dict, looked for inside checkpoint containers; a DDP ``module.`` prefix dropped."""
    for _ in range(3):
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in _CONTAINERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    sd = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        shown = ", ".join(repr(k) for k in list(state)[:8])
        raise WeightsError(f"{name} holds no weights: no tensors at its top level nor under "
                           f"{', '.join(_CONTAINERS)} (its keys: {shown or 'none'})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _prefixes(keys: Sequence[str]) -> List[str]:
    """'' and every one- or two-component key prefix (``video_encoder.``, ``model.video.``)."""
    out = {""}
    for k in keys:
        parts = k.split(".")
        for n in range(1, min(2, len(parts) - 1) + 1):
            out.add(".".join(parts[:n]) + ".")
    return sorted(out)


@dataclass
class _Plan:
    layout: Layout
    prefix: str
    refs: Dict[str, Optional[str]]  # avssl key -> full key in the file (None: no counterpart)
    score: int  # encoder keys found in the file
    leftover: int  # keys of the part that nothing reads (the classifier aside)

    def rank(self) -> int:
        """Tie-break between equally good fits: the format's own part, a bare file, then an avssl encoder."""
        if self.prefix in self.layout.parts:
            return 3
        if self.prefix == "":
            return 2
        return 1 if self.prefix in _PRIMARY_PARTS else 0


def _plan(encoder_keys: Sequence[str], sd: Mapping[str, torch.Tensor], layout: Layout, prefix: str) -> _Plan:
    refs = {}
    for k in encoder_keys:
        r = layout.key(k)
        refs[k] = None if r is None else prefix + r
    score = sum(1 for k, r in refs.items() if r is not None and r in sd and not k.endswith(_NBT))
    if not score:
        return _Plan(layout, prefix, refs, 0, 0)
    used = set(refs.values())
    head = re.compile(layout.head) if layout.head else None
    leftover = sum(1 for k in sd if k.startswith(prefix) and k not in used
                   and not (head and head.match(k[len(prefix):])))
    return _Plan(layout, prefix, refs, score, leftover)


def _sample(items: Sequence[str]) -> str:
    more = f", … (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _shape(t: torch.Tensor) -> str:
    return "×".join(str(d) for d in t.shape) or "scalar"


def encoder_label(encoder: nn.Module) -> str:
    """The registered name of an encoder built by ``build_encoder`` (else its class name)."""
    return getattr(encoder, "avssl_name", None) or type(encoder).__name__


def load_weights(encoder: nn.Module, source: Source, format: str = "auto", part: Optional[str] = None,
                 what: Optional[str] = None) -> nn.Module:
    """Load published weights into ``encoder`` (strict) and return it.

    Args:
        encoder: an avssl encoder (``build_encoder(...)``).
        source: a file (read with ``weights_only=True``), a state dict or checkpoint dict, or ``"FORMAT:PATH"``.
        format: ``auto`` (detected from the keys; the choice is logged) or one of :data:`FORMATS`.
        part: the model to read in a file that holds several (``video_encoder``, ``audio_model`` …);
            default: the one whose keys fit ``encoder``.
        what: names the source in errors (e.g. the config key ``method.init_checkpoint``).

    Raises :class:`WeightsError` (one line) when the weights do not fit: missing, unexpected and mis-shaped
    keys are listed and nothing is loaded; :class:`~avssl.checkpoint.CheckpointError` for a file that
    cannot be read.
    """
    from avssl.checkpoint import load_checkpoint

    format, source = split_weights_spec(source, format)
    if isinstance(source, Mapping):
        name, state = what or "the given state dict", source
    else:
        name = f"{what}: {os.fspath(source)}" if what else os.fspath(source)
        state = load_checkpoint(source, what=what)
    sd = _flat_state_dict(state, name)
    label = encoder_label(encoder)
    layouts = layouts_for(encoder)
    if format != "auto" and format not in layouts:
        raise WeightsError(f"{name}: the {format} format has no layout for {label}; formats that fit it: "
                           f"{', '.join(layouts)}")
    candidates = list(layouts.values()) if format == "auto" else [layouts[format]]
    if part is not None:
        prefix = part if part.endswith(".") else part + "."
        if not any(k.startswith(prefix) for k in sd):
            parts = sorted({k.split(".", 1)[0] for k in sd if "." in k})
            raise WeightsError(f"{name} has no part {part!r}; its parts: {', '.join(parts)}")
        prefixes = [prefix]
    else:
        prefixes = _prefixes(list(sd))
    own = encoder.state_dict()
    plans = [_plan(list(own), sd, lay, p) for lay in candidates for p in prefixes]
    best = max(plans, key=lambda p: (p.score, -p.leftover, p.rank(), -FORMATS.index(p.layout.format)))
    if format == "auto" and best.score == 0:
        raise WeightsError(f"{name} does not fit {label} in any format it has ({', '.join(layouts)}): no key "
                           f"matches; the file's keys: {_sample(list(sd))}; the encoder's: {_sample(list(own))}")
    new_state = _check_and_convert(best, own, sd, name, label)
    encoder.load_state_dict(new_state, strict=True)
    where = f" (part {best.prefix[:-1]})" if best.prefix else ""
    how = ", format detected from the keys" if format == "auto" else ""
    log.info("%s: loaded %s weights%s into %s%s", name, best.layout.format, where, label, how)
    return encoder


def _check_and_convert(plan: _Plan, own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], name: str,
                       label: str) -> Dict[str, torch.Tensor]:
    """The encoder's new state dict, or one WeightsError listing every key that does not fit."""
    lay, prefix = plan.layout, plan.prefix
    missing: List[str] = []
    mismatched: List[str] = []
    out: Dict[str, torch.Tensor] = {}
    for k, ref in plan.refs.items():
        if ref is None or ref not in sd:
            if k.endswith(_NBT) and ref is not None:
                out[k] = own[k]  # BN's step counter: absent from some published files, unused in eval
                continue
            missing.append(ref if ref is not None else f"{k} (no {lay.format} counterpart)")
            continue
        t = lay.convert(sd[ref])
        if t.shape != own[k].shape:
            mismatched.append(f"{ref}: {_shape(t)} in the file, {_shape(own[k])} in {label}")
            continue
        out[k] = t
    used = {r for r in plan.refs.values() if r is not None}
    head = re.compile(lay.head) if lay.head else None
    dropped = [k for k in sd if k.startswith(prefix) and k not in used and head and head.match(k[len(prefix):])]
    unexpected = [k for k in sd if k.startswith(prefix) and k not in used and k not in dropped]
    if missing or unexpected or mismatched:
        problems = [f"{len(v)} {what} ({_sample(v)})" for what, v in
                    (("missing", missing), ("unexpected", unexpected), ("with another shape", mismatched)) if v]
        where = f" part {prefix[:-1]}" if prefix else ""
        raise WeightsError(f"{name}{where} does not fit {label} as {lay.format} weights: {'; '.join(problems)}",
                           missing, unexpected, mismatched)
    if dropped:
        log.info("%s: left out the classifier the encoder has no place for: %s", name, _sample(dropped))
    return out


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------
def export_weights(encoder: nn.Module, format: str = "avssl") -> Dict[str, torch.Tensor]:
    """``encoder``'s weights as a plain state dict (CPU tensors) in ``format``'s layout: the keys of the
    reference model (without its classifier), loadable there with ``load_state_dict(..., strict=False)``
    missing only the classifier, and here with :func:`load_weights`.

    Raises :class:`WeightsError` when the format has no layout for the encoder or for part of it (e.g. a
    non-local block has no torchvision counterpart).
    """
    _check_format(format)
    if format == "auto":
        raise WeightsError("export needs a format: one of " + ", ".join(FORMATS))
    label = encoder_label(encoder)
    layouts = layouts_for(encoder)
    if format not in layouts:
        raise WeightsError(f"{label} has no {format} counterpart; it can be written as: {', '.join(layouts)}")
    lay = layouts[format]
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    for k, v in encoder.state_dict().items():
        ref = lay.key(k)
        if ref is None:
            unmapped.append(k)
            continue
        out[ref] = lay.convert(v.detach()).to("cpu", copy=True).contiguous()
    if unmapped:
        raise WeightsError(f"{label} cannot be written as {format} weights: {len(unmapped)} tensors have no "
                           f"{format} counterpart ({_sample(unmapped)})")
    return out
