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


PAGE_IDS = [_rel(p) for p in PAGES]


def _check(problems: List[str]) -> None:
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGE_IDS)
def test_relative_links_point_to_existing_files_and_headings(page):
    src, problems = ROOT / page, []
    for target in _link_targets(src.read_text()):
        file_part, _, anchor = target.partition("#")
        dest = (src.parent / file_part).resolve() if file_part else src
        if not dest.exists():
            problems.append(f"{page}: link to {target}: no such file (a results page? run the command at its top)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page}: link to {target}: {_rel(dest)} has no heading #{anchor}")
    _check(problems)


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
TOP_OPTION = re.compile(r"(?<![\w./-])avssl (--[a-z][a-z0-9-]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MAKE = re.compile(r"(?<![\w./-])make ([a-z][a-z0-9-]*)")


def commands(text: str) -> Iterator[Tuple[int, str, str]]:
    """(line, verb, the rest of the command up to the next shell separator or avssl command)."""
    for n, piece in code_pieces(text):
        for m in COMMAND.finditer(piece):
            yield n, m.group(1), re.split(r"\s(?:&&|\|\||;|\||#)\s?|\s(?=avssl )", m.group(2) + " ")[0]


def command_problems(page: str, line: int, verb: str, rest: str, parser: argparse.ArgumentParser) -> List[str]:
    """What is wrong with ``avssl VERB REST`` as the CLI's parser would read it."""
    verbs = _subparsers(parser)
    if verb not in verbs:
        return [f"{page}:{line}: 'avssl {verb}' is not a command (commands: {', '.join(sorted(verbs))})"]
    sub, words, problems = verbs[verb], rest.split(), []
    first_option = OPTION.search(rest)
    if first_option:
        late = re.findall(r"(?<=\s)[a-z_]+(?:\.\w+)*=\S*", rest[first_option.start():])
        if late:
            problems.append(f"{page}:{line}: avssl {verb}: {late}: key=value overrides must come before the "
                            "--options (argparse reads no positional after them)")
    known = _options(sub) | _options(parser)
    nested = _subparsers(sub)
    if nested and words and re.fullmatch(r"[a-z][a-z0-9-]*", words[0]):
        if words[0] not in nested:
            return problems + [f"{page}:{line}: 'avssl {verb} {words[0]}': no such {verb} (one of {sorted(nested)})"]
        known |= _options(nested[words[0]])
    elif nested:  # a synopsis over all of them: avssl bench NAME ...
        known |= set().union(*map(_options, nested.values()))
    problems += [f"{page}:{line}: 'avssl {verb}' has no option {opt}" for opt in OPTION.findall(rest) if opt not in known]
    return problems


def test_the_docs_name_commands():
    assert sum(1 for p in PAGES for _ in commands(p.read_text())) > 20


@pytest.mark.parametrize("page", PAGE_IDS)
def test_commands_are_verbs_of_the_cli_with_their_options(page):
    parser, text, problems = _parser(), (ROOT / page).read_text(), []
    for line, verb, rest in commands(text):
        problems += command_problems(page, line, verb, rest, parser)
    for line, piece in code_pieces(text):
        problems += [f"{page}:{line}: 'avssl {o}': no such option" for o in TOP_OPTION.findall(piece)
                     if o not in _options(parser)]
    targets = re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
    for line, piece in code_pieces(text):
        problems += [f"{page}:{line}: 'make {t}': the Makefile has no such target ({', '.join(targets)})"
                     for t in MAKE.findall(piece) if t not in targets]
    _check(problems)


def test_command_check_catches_unknown_verbs_options_and_late_overrides():
    parser = _parser()
    assert command_problems("p", 1, "prep", " in out --short-side 128", parser) == []
    assert command_problems("p", 1, "bench", " cma --sizes 10 --page x.md", parser) == []
    assert "not a command" in command_problems("p", 1, "trian", " c.yaml", parser)[0]
    assert "no option --shortside" in command_problems("p", 1, "prep", " in out --shortside 128", parser)[0]
    assert "before the --options" in command_problems("p", 1, "eval", " c.yaml --plot a.b=1", parser)[0]


# -- configs -----------------------------------------------------------------------------------------------------
def _expand_braces(text: str) -> List[str]:
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [x for alt in m.group(1).split(",") for x in _expand_braces(text[: m.start()] + alt.strip() + text[m.end():])]


CONFIG = re.compile(r"(?<![\w/.-])(?:configs/)?((?:compare|demo|finetune|pretrain|supervised)/[\w{},*.-]+?\.yaml)")


@pytest.mark.parametrize("page", PAGE_IDS)
def test_configs_named_are_shipped(page):
    from avssl.config import shipped_configs

    shipped, problems = shipped_configs(), []
    for line, piece in code_pieces((ROOT / page).read_text()):
        for name in CONFIG.findall(piece):
            for pattern in _expand_braces(re.sub(r"[A-Z]+", "*", name)):  # NAME: a placeholder
                if not fnmatch.filter(shipped, pattern):
                    problems.append(f"{page}:{line}: no shipped config {pattern} (configs/README.md lists them)")
    _check(problems)


SECTIONS = ("data", "model", "optim", "trainer", "eval", "method")
KEY = re.compile(r"(?<![\w./-])((?:" + "|".join(SECTIONS) + r")(?:\.[A-Za-z_][\w*]*)+)")
FILE_SUFFIXES = {"py", "md", "yaml", "png", "json", "csv", "ckpt", "pt", "pth", "txt", "mp4"}


def _is_free_form(tp) -> bool:
    """A Dict or Any field: any key below it is the user's."""
    return tp is typing.Any or typing.get_origin(tp) is dict or tp is dict


def _unwrap(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Any
    return tp


def key_problem(key: str) -> str:
    """Why ``key`` (dotted, ``*`` allowed) is not a key of the config schema, or ""."""
    from avssl.config import Config
    from avssl.methods import available_methods, method_config_class

    parts = key.split(".")
    if parts[0] == "method":
        fields: Dict[str, object] = {}
        for m in available_methods():
            fields.update(typing.get_type_hints(method_config_class(m)))
        found = fnmatch.filter(fields, parts[1])
        if not found:
            return f"no method takes the key {'.'.join(parts[:2])}"
        node, done, rest = _unwrap(fields[found[0]]), 2, parts[2:]
    else:
        node, done, rest = Config, 0, parts
    for name in rest:
        if _is_free_form(node):
            return ""
        if not dataclasses.is_dataclass(node):
            return f"{'.'.join(parts[:done])} takes no sub-keys"
        hints = typing.get_type_hints(node)
        matches = fnmatch.filter(hints, name)  # eval.linear_* names several
        done += 1
        if not matches:
            return f"no config key {'.'.join(parts[:done])}"
        node = _unwrap(hints[matches[0]])
    return ""


def test_key_check_knows_the_schema():
    assert key_problem("data.batch_size") == key_problem("method.cma_k") == key_problem("optim.lr_mult.x.y") == ""
    assert key_problem("eval.linear_*") == ""
    assert key_problem("optim.lrr") == "no config key optim.lrr"
    assert key_problem("method.cma_kk") == "no method takes the key method.cma_kk"
    assert key_problem("data.batch_size.x") == "data.batch_size takes no sub-keys"


@pytest.mark.parametrize("page", PAGE_IDS)
def test_config_keys_are_in_the_schema(page):
    """Dotted config keys in code, except a mistake the page shows the error of (``unknown config key 'K'``)."""
    text, problems = (ROOT / page).read_text(), []
    shown_wrong = set(re.findall(r"unknown config key '([^']+)'", text))
    for line, piece in code_pieces(text):
        for key in KEY.findall(piece):
            if key.rsplit(".", 1)[-1] in FILE_SUFFIXES or key in shown_wrong:
                continue
            problem = key_problem(key)
            if problem:
                problems.append(f"{page}:{line}: {key}: {problem} (see avssl/config.py)")
    _check(problems)


# -- Python names ------------------------------------------------------------------------------------------------
NAME = re.compile(r"(?<![\w./-])(avssl(?:\.[A-Za-z_]\w*)+)")
FROM_IMPORT = re.compile(r"from (avssl(?:\.\w+)*) import \(?([\w, ]+)\)?")


def python_names(text: str) -> Iterator[Tuple[int, str]]:
    for line, piece in code_pieces(text):
        for module, names in FROM_IMPORT.findall(piece):
            yield from ((line, f"{module}.{x.split()[0]}") for x in names.split(",") if x.strip())
        for name in NAME.findall(FROM_IMPORT.sub("", piece)):
            if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                yield line, name


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
@pytest.mark.parametrize("page", PAGE_IDS)
def test_python_names_exist(page):
    problems = []
    for line, name in python_names((ROOT / page).read_text()):
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            problems.append(f"{page}:{line}: {name} does not exist ({e})")
    _check(problems)


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
