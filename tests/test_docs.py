"""The README, docs/ and the READMEs of datasets/ and configs/ against the code: what they name must exist.

Every relative link points to a file (and heading) that exists; every ``avssl VERB`` is a verb of the
command line and every ``--option`` after it one of that verb's options; every config file named is shipped;
every dotted config key (``data.batch_size``) is a key of the config schema; every ``avssl.…`` name in code
imports; the encoder table of the models guide gives each encoder's parameter count and output size; the
README stays short and opens with the two set-up commands.

Results pages (docs/results/*.md) are written by the commands at their top; a link to one that has not been
generated yet fails here, by design: generate it (the page's command) before merging.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib
import re
import typing
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *DOCS, ROOT / "datasets" / "README.md", ROOT / "configs" / "README.md"]
MAX_README_LINES = 320

FENCE = re.compile(r"^(```|~~~)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_pieces(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every code line of a fenced block and every inline code span."""
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            in_block = not in_block
            continue
        if in_block:
            yield n, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield n, span


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) of every line outside fenced blocks."""
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            in_block = not in_block
            continue
        if not in_block:
            yield n, line


def fenced_blocks(text: str) -> List[str]:
    blocks, current, in_block = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if in_block:
                blocks.append("\n".join(current))
                current = []
            in_block = not in_block
            continue
        if in_block:
            current.append(line)
    return blocks


# -- the README --------------------------------------------------------------------------------------------------
def test_readme_is_a_short_users_document():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it to {MAX_README_LINES}"


def test_readme_opens_with_the_two_set_up_commands():
    first = fenced_blocks(README.read_text())[:2]
    joined = "\n".join(first)
    assert "make demo" in joined and "make test" in joined, "the README's first code blocks give make demo and make test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci, "CI runs the README's test command"


def test_every_guide_and_note_is_reachable_from_the_readme():
    text = README.read_text()
    linked = {(README.parent / t.split("#")[0]).resolve() for t in _link_targets(text)}
    pages = [p for p in DOCS if p.parent.name in ("guide", "notes")]
    assert pages, "docs/guide and docs/notes hold the guides and notes"
    missing = [_rel(p) for p in pages if p.resolve() not in linked]
    assert missing == [], f"link these from README.md: {missing}"


# -- links -------------------------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _link_targets(text: str) -> List[str]:
    out = []
    for _, line in prose_lines(text):
        line = re.sub(r"`[^`]*`", "", line)
        out += [t for t in LINK.findall(line) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text()):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(2))
        k = seen.get(s, 0)
        out.add(s if k == 0 else f"{s}-{k}")
        seen[s] = k + 1
    return out


def _links() -> List[Tuple[str, str]]:
    return [(_rel(p), t) for p in PAGES for t in _link_targets(p.read_text())]


@pytest.mark.parametrize("page,target", _links())
def test_relative_link_points_to_an_existing_file(page, target):
    src = ROOT / page
    file_part, _, anchor = target.partition("#")
    dest = (src.parent / file_part).resolve() if file_part else src
    assert dest.exists(), f"{page}: link to {target}: no such file (a results page? run the command at its top)"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{page}: link to {target}: {_rel(dest)} has no heading #{anchor}"


# -- the command line --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from avssl.apps.cli import build_parser

    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> Set[str]:
    return set(parser._option_string_actions)


COMMAND = re.compile(r"(?<![\w./-])avssl ([a-z][a-z0-9-]*)((?: [^`]*)?)")


def _commands() -> List[Tuple[str, int, str, str]]:
    """(page, line, verb, the rest of the command up to the next shell separator)."""
    out = []
    for p in PAGES:
        for n, piece in code_pieces(p.read_text()):
            for m in COMMAND.finditer(piece):
                rest = re.split(r"\s(?:&&|\|\||;|\||#)\s?|\s(?=avssl )", m.group(2) + " ")[0]
                out.append((_rel(p), n, m.group(1), rest))
    return out


COMMANDS = _commands()


def test_the_docs_name_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("page,line,verb,rest", COMMANDS)
def test_command_is_a_verb_of_the_cli_with_its_options(page, line, verb, rest):
    parser = _parser()
    verbs = _subparsers(parser)
    assert verb in verbs, f"{page}:{line}: 'avssl {verb}' is not a command (commands: {', '.join(sorted(verbs))})"
    sub = verbs[verb]
    words = rest.split()
    if re.search(r"(?<![\w-])--[a-z]", rest):
        late = re.findall(r"(?<=\s)[a-z_]+(?:\.\w+)*=\S*", rest[re.search(r"(?<![\w-])--[a-z]", rest).start():])
        assert not late, f"{page}:{line}: {late}: key=value overrides must come before the --options (argparse)"
    known = _options(sub) | _options(parser)
    nested = _subparsers(sub)
    if nested and words and re.fullmatch(r"[a-z][a-z0-9-]*", words[0]):
        assert words[0] in nested, f"{page}:{line}: 'avssl {verb} {words[0]}': no such {verb} (one of {sorted(nested)})"
        known |= _options(nested[words[0]])
    elif nested:  # a synopsis over all of them (avssl bench NAME ...)
        known |= set().union(*map(_options, nested.values()))
    for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
        assert opt in known, f"{page}:{line}: 'avssl {verb}' has no option {opt}"


TOP_OPTION = re.compile(r"(?<![\w./-])avssl (--[a-z][a-z0-9-]*)")


@pytest.mark.parametrize("page,line,option", [(_rel(p), n, o) for p in PAGES for n, piece in code_pieces(p.read_text())
                                               for o in TOP_OPTION.findall(piece)])
def test_top_level_option_exists(page, line, option):
    assert option in _options(_parser()), f"{page}:{line}: 'avssl {option}': no such option"


MAKE = re.compile(r"(?<![\w./-])make ([a-z][a-z0-9-]*)")


@pytest.mark.parametrize("page,line,target", [(_rel(p), n, t) for p in PAGES for n, piece in code_pieces(p.read_text())
                                               for t in MAKE.findall(piece)])
def test_make_target_exists(page, line, target):
    targets = re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert target in targets, f"{page}:{line}: 'make {target}': the Makefile has no such target ({', '.join(targets)})"


# -- configs -----------------------------------------------------------------------------------------------------
def _expand_braces(text: str) -> List[str]:
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [x for alt in m.group(1).split(",") for x in _expand_braces(text[: m.start()] + alt.strip() + text[m.end():])]


CONFIG = re.compile(r"(?<![\w/.-])(?:configs/)?((?:compare|demo|finetune|pretrain|supervised)/[\w{},*.-]+?\.yaml)")


def _config_names() -> List[Tuple[str, int, str]]:
    out = []
    for p in PAGES:
        for n, piece in code_pieces(p.read_text()):
            out += [(_rel(p), n, name) for name in CONFIG.findall(piece)]
    return out


@pytest.mark.parametrize("page,line,name", _config_names())
def test_config_named_is_shipped(page, line, name):
    from avssl.config import shipped_configs

    shipped = shipped_configs()
    name = re.sub(r"[A-Z]+", "*", name)  # a placeholder: demo/digits_NAME.yaml
    for pattern in _expand_braces(name):
        assert fnmatch.filter(shipped, pattern), f"{page}:{line}: no shipped config {pattern} (configs/README.md lists them)"


SECTIONS = ("data", "model", "optim", "trainer", "eval", "method")
KEY = re.compile(r"(?<![\w./-])((?:" + "|".join(SECTIONS) + r")(?:\.[A-Za-z_][\w*]*)+)")
FILE_SUFFIXES = {"py", "md", "yaml", "png", "json", "csv", "ckpt", "pt", "pth", "txt", "mp4"}


def _config_keys() -> List[Tuple[str, int, str]]:
    """Dotted config keys in code, except the mistakes a page shows the error of (``unknown config key 'K'``)."""
    out = []
    for p in PAGES:
        text = p.read_text()
        shown_wrong = set(re.findall(r"unknown config key '([^']+)'", text))
        for n, piece in code_pieces(text):
            for key in KEY.findall(piece):
                if key.rsplit(".", 1)[-1] not in FILE_SUFFIXES and key not in shown_wrong:
                    out.append((_rel(p), n, key))
    return out


def _is_free_form(tp) -> bool:
    """A Dict or Any field: any key below it is the user's."""
    origin = typing.get_origin(tp)
    return tp is typing.Any or origin in (dict, typing.Dict) or tp in (dict,)


def _unwrap(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Any
    return tp


def _key_problem(key: str) -> str:
    from avssl.config import Config
    from avssl.methods import available_methods, method_config_class

    parts = key.split(".")
    if parts[0] == "method":
        fields = {}
        for m in available_methods():
            cls = method_config_class(m)
            fields.update(typing.get_type_hints(cls))
        found = fnmatch.filter(fields, parts[1])
        tp = fields[found[0]] if found else None
        if tp is None:
            return f"no method takes the key {'.'.join(parts[:2])}"
        node, rest = _unwrap(tp), parts[2:]
    else:
        node, rest = Config, parts
    for i, name in enumerate(rest):
        if _is_free_form(node):
            return ""
        if not dataclasses.is_dataclass(node):
            return f"{'.'.join(parts[: len(parts) - len(rest) + i])} takes no sub-keys"
        hints = typing.get_type_hints(node)
        matches = fnmatch.filter(hints, name)  # eval.linear_* names several
        if not matches:
            return f"no config key {'.'.join(parts[: len(parts) - len(rest) + i + 1])}"
        node = _unwrap(hints[matches[0]])
    return ""


@pytest.mark.parametrize("page,line,key", _config_keys())
def test_config_key_is_in_the_schema(page, line, key):
    problem = _key_problem(key)
    assert not problem, f"{page}:{line}: {key}: {problem} (see avssl/config.py)"


# -- Python names ------------------------------------------------------------------------------------------------
NAME = re.compile(r"(?<![\w./-])(avssl(?:\.[A-Za-z_]\w*)+)")
FROM_IMPORT = re.compile(r"from (avssl(?:\.\w+)*) import \(?([\w, ]+)\)?")


def _python_names() -> List[Tuple[str, int, str]]:
    out = []
    for p in PAGES:
        for n, piece in code_pieces(p.read_text()):
            for module, names in FROM_IMPORT.findall(piece):
                out += [(_rel(p), n, f"{module}.{x.split()[0]}") for x in names.split(",") if x.strip()]
            rest = FROM_IMPORT.sub("", piece)
            out += [(_rel(p), n, name) for name in NAME.findall(rest)
                    if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES]
    return sorted(set(out))


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("page,line,name", _python_names())
def test_python_name_exists(page, line, name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{page}:{line}: {name} does not exist ({e})")


# -- the encoder table -------------------------------------------------------------------------------------------
ROW = re.compile(r"^\| `(\w+)` \|[^|]*\| ([\d.]+)M \| (\d+) \|")


def test_models_guide_lists_every_encoder_with_its_size():
    import torch

    from avssl.models import available_encoders, build_encoder

    text = (ROOT / "docs" / "guide" / "models.md").read_text()
    rows = {m.group(1): (float(m.group(2)), int(m.group(3))) for m in map(ROW.match, text.splitlines()) if m}
    assert sorted(rows) == sorted(available_encoders()), "one row per registered encoder"
    for name, (millions, out_dim) in rows.items():
        with torch.device("meta"):
            enc = build_encoder(name)
        params = sum(p.numel() for p in enc.parameters())
        assert round(params / 1e6, 2) == millions, f"{name}: {params / 1e6:.2f}M parameters, the guide says {millions}M"
        assert enc.out_dim == out_dim, f"{name}: out_dim {enc.out_dim}, the guide says {out_dim}"
