"""Documentation that is executed: every documented command, file name, default and figure is checked.

Data-driven: commands are read from README.md, every page under docs/ (found by glob, so a
new page is covered without touching this file), benchmarks/README.md and the examples'
docstrings (fenced shell blocks and inline `code` that starts with a known program), so a
command someone documents tomorrow is checked without touching this file.

- fast: every flag of every command exists on that command (click/typer objects, argparse
  sources read with ``ast``), choice values are valid, ``./run`` subcommands exist, every
  repository path the docs name exists, "`--flag` ... (default X)" matches the code, every
  copy of a toy table (README.md's headline, the docs pages) agrees with benchmarks/README.md,
  every relative link between README.md, docs/ and benchmarks/README.md reaches its file and
  heading, every docs page is in mkdocs.yml's nav, the site builds with ``mkdocs build
  --strict``, and each example's "same job from the shell" line makes exactly the images the
  example makes.
- slow (``-m slow``): every ``safegen`` command runs for real with the toy preset standing in
  for hub models and tiny settings, and benchmarks/toy_world.py prints the documented figures.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The documentation site's pages (mkdocs.yml builds them): every one is checked like the README.
PAGES = tuple(sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("**/*.md")))
DOCS = ("README.md", *PAGES, "benchmarks/README.md")
EXAMPLES = tuple(sorted(str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.py")))
PROGRAMS = ("safegen", "safegen-train", "python", "./run", "torchrun", "accelerate")
# Top-level entries of the repository: a token starting with one of them is a repository path.
REPO_ROOTS = ("configs/", "benchmarks/", "docs/", "examples/", "safegen/", "safegen_train/", "tests/", ".ci/")


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    argv: tuple[str, ...]
    fenced: bool = False  # a command shown to run (code block), not a mention in prose
    comment: str = ""  # what the docs say it does ("# toy classifier, toy CLIP score")

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


# ----------------------------------------------------------------------------- extraction
_FENCE = re.compile(r"^```(\w*)\s*$")


def _split_commands(text: str) -> list[list[str]]:
    """Shell text (continuations joined, comments dropped) -> argv lists split on ; && |."""
    text = text.replace("\\\n", " ")
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return []
    out, current = [], []
    for tok in tokens:
        if tok in (";", "&&", "||", "|"):
            out.append(current)
            current = []
        elif tok.endswith(";") and len(tok) > 1:
            current.append(tok[:-1])
            out.append(current)
            current = []
        else:
            tok = tok.strip("[]")  # optional parts in usage lines: [OUT], [--out DIR]
            if tok and tok != "...]":
                current.append(tok)
    out.append(current)
    return [c for c in out if c]


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        argv = argv[1:]
    return argv


def _is_command(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in PROGRAMS and (argv[0] != "python" or len(argv) > 1)


def _text_commands(text: str, path: str, first_line: int = 1) -> list[DocCommand]:
    found: list[DocCommand] = []
    lines = text.splitlines()
    in_fence, fence_lang, prose = False, "", []
    for i, line in enumerate(lines):
        m = _FENCE.match(line.strip())
        if m:
            in_fence, fence_lang = (not in_fence), m.group(1)
            continue
        if in_fence:
            if fence_lang in ("", "bash", "sh", "shell", "console"):
                # a fenced line (with its continuations) is a command when it starts with a program
                j, chunk = i, line
                while chunk.endswith("\\") and j + 1 < len(lines):
                    j += 1
                    chunk += "\n" + lines[j]
                if not line.startswith((" ", "\t")) or line.strip().startswith(PROGRAMS):
                    comment = chunk.rsplit("  # ", 1)[1].strip() if "  # " in chunk else ""
                    for argv in _split_commands(chunk.strip()):
                        argv = _strip_env(argv)
                        if _is_command(argv):
                            where = f"{path}:{first_line + i}"
                            found.append(DocCommand(where, tuple(argv), fenced=True, comment=comment))
            continue
        prose.append((first_line + i, line))
    # inline `code` in prose, which may wrap over lines
    joined = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
        code = m.group(1).replace("\n", " ").strip()
        line_no = prose[max(0, next(k for k, s in enumerate(starts) if s > m.start()) - 1)][0]
        if "\n" in m.group(1) and not code.startswith(PROGRAMS) and "=" not in code.split()[0]:
            continue
        for argv in _split_commands(code):
            argv = _strip_env(argv)
            if _is_command(argv) and len(argv) > 1:
                found.append(DocCommand(f"{path}:{line_no}", tuple(argv)))
    return found


def _example_docstring(path: str) -> str:
    return ast.get_docstring(ast.parse((REPO / path).read_text()), clean=False) or ""


@cache
def doc_commands() -> tuple[DocCommand, ...]:
    found: list[DocCommand] = []
    for doc in DOCS:
        found += _text_commands((REPO / doc).read_text(), doc)
    for ex in EXAMPLES:
        doc = _example_docstring(ex)
        # usage lines are indented in docstrings: treat each indented line as a fenced one
        body = "\n".join(f"```\n{ln.strip()}\n```" if ln.startswith("    ") else ln for ln in doc.splitlines())
        found += _text_commands(body, ex, first_line=2)
    return tuple(found)


def test_the_docs_hold_commands_to_check():
    cmds = doc_commands()
    programs = {c.argv[0] for c in cmds}
    assert {"safegen", "safegen-train", "python", "./run"} <= programs
    assert len(cmds) >= 40, [str(c) for c in cmds]
    assert any(c.where.startswith("examples/") for c in cmds)
    assert PAGES and any(c.where.startswith("docs/") for c in cmds), "no commands read from docs/"


# ----------------------------------------------------------------------------- what a command accepts
@dataclass
class Accepts:
    options: dict[str, object]  # flag -> click option, or None for argparse flags
    command: object = None  # the click command (None for scripts)


@cache
def _click_root(name: str):
    import typer

    if name == "safegen":
        from safegen.cli.main import app
    elif name == "safegen-train":
        from safegen_train.cli import app
    else:  # "batch": the standalone command torchrun starts
        from safegen.cli.batch import batch

        app = typer.Typer()
        app.command()(batch)
    return typer.main.get_command(app)


def _is_option(param: object) -> bool:
    # typer may ship its own copy of click: compare by shape, not by class
    return type(param).__name__.endswith("Option") and hasattr(param, "opts")


def _click_accepts(root, args: list[str]) -> tuple[Accepts, list[str]]:
    cmd, rest = root, list(args)
    while hasattr(cmd, "commands") and rest:
        group_flags = {n for p in cmd.params if _is_option(p) for n in (*p.opts, *p.secondary_opts)}
        if rest[0] in group_flags:  # a group's own flag before the subcommand (`safegen -q t2i ...`)
            rest = rest[1:]
        elif rest[0] in cmd.commands:
            cmd, rest = cmd.commands[rest[0]], rest[1:]
        else:
            break
    if hasattr(cmd, "commands") and rest not in ([], ["--help"]):  # a bare group prints its commands
        raise AssertionError(f"no such subcommand: {rest[:1]} (choose from {sorted(cmd.commands)})")
    opts: dict[str, object] = {"--help": None}
    for param in cmd.params:
        if _is_option(param):
            for name in (*param.opts, *param.secondary_opts):
                opts[name] = param
    return Accepts(opts, cmd), rest


@cache
def _argparse_flags(path: str) -> dict[str, object]:
    """Flags a script's argparse parser defines, read from its source (no import, no torch).

    The value is "required" for flags declared ``required=True``, else None.
    """
    flags: dict[str, object] = {"--help": None, "-h": None}
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            required = any(
                k.arg == "required" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords
            )
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    flags[arg.value] = "required" if required else None
    return flags


def _module_path(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__main__.py"):
        if cand.is_file():
            return cand
    return None


def resolve(argv: tuple[str, ...]) -> tuple[Accepts | None, list[str], str]:
    """(what the program accepts, its arguments, a label); Accepts None: a program not ours."""
    prog, args = argv[0], list(argv[1:])
    if prog in ("torchrun", "accelerate"):
        if prog == "accelerate":
            if not args or args[0] != "launch":
                return None, args, "accelerate"
            args = args[1:]
        if "-m" not in args:
            return None, args, prog
        i = args.index("-m")
        prog, args = "python", args[i:]
    if prog == "./run":
        cases = set(re.findall(r"^\s+([a-z|\s-]+)\)\s*$", (REPO / "run").read_text(), re.M))
        names = {n.strip() for c in cases for n in c.split("|")}
        assert args and args[0] in names, f"./run has no command {args[:1]} (has {sorted(names)})"
        return Accepts({}), args[1:], "./run"
    if prog in ("safegen", "safegen-train"):
        acc, rest = _click_accepts(_click_root(prog), args)
        return acc, rest, prog
    if prog == "python":
        if args and args[0] == "-m":
            module, rest = args[1], args[2:]
            roots = {"safegen.cli.main": "safegen", "safegen_train.cli": "safegen-train", "safegen.cli.batch": "batch"}
            if module in roots:
                acc, rest = _click_accepts(_click_root(roots[module]), rest)
                return acc, rest, module
            path = _module_path(module)
            assert path is not None, f"no module {module} in the repository"
            return Accepts(_argparse_flags(str(path.relative_to(REPO)))), rest, module
        script = args[0]
        assert (REPO / script).is_file(), f"no script {script}"
        return Accepts(_argparse_flags(script)), args[1:], script
    return None, args, prog


# ----------------------------------------------------------------------------- fast checks
def _flag_problems(cmd: DocCommand) -> list[str]:
    acc, rest, label = resolve(cmd.argv)
    if acc is None:
        return []
    problems = [
        f"{label} needs {flag}" for flag, kind in acc.options.items() if kind == "required" and flag not in rest
    ]
    for i, tok in enumerate(rest):
        if not tok.startswith("-") or tok == "-" or re.fullmatch(r"-\d+(\.\d+)?", tok):
            continue
        name = tok.split("=", 1)[0]
        if name not in acc.options:
            problems.append(f"{label} has no option {name}")
            continue
        param = acc.options[name]
        value = tok.split("=", 1)[1] if "=" in tok else (rest[i + 1] if i + 1 < len(rest) else None)
        choices = getattr(getattr(param, "type", None), "choices", None)
        if choices and value is not None and value not in choices and "$" not in value:
            problems.append(f"{label} {name}: '{value}' is not one of {list(choices)}")
    return problems


def test_every_documented_flag_exists():
    problems = [f"{c}: {p}" for c in doc_commands() for p in _flag_problems(c)]
    assert problems == []


def _repo_paths(text: str) -> set[str]:
    paths = set()
    for tok in re.findall(r"[\w./-]+", text):
        tok = tok.rstrip(".,:;)")
        if tok.startswith(REPO_ROOTS) and not any(ch in tok for ch in "*<>{}$"):
            paths.add(tok)
    return paths


@pytest.mark.parametrize("doc", DOCS + EXAMPLES)
def test_every_repository_path_the_docs_name_exists(doc):
    text = (REPO / doc).read_text() if doc.endswith(".md") else _example_docstring(doc)
    missing = sorted(p for p in _repo_paths(text) if not (REPO / p).exists())
    assert missing == [], f"{doc} names files that do not exist"


def test_layout_section_lists_every_top_level_entry():
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1]
    block = layout.split("```", 2)[1]
    listed = {line.split()[0].rstrip("/") for line in block.splitlines() if line.strip()}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an sdist): nothing to compare against
        pytest.skip("no git checkout")
    top = {p.split("/")[0] for p in tracked} - {".gitignore", "README.md", "pyproject.toml"}
    assert sorted(top - listed) == []


def _documented_defaults() -> list[tuple[str, str, str]]:
    """(doc, flag, value) for every "`--flag` ... (default VALUE)" in the docs' prose."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\s+", " ", (REPO / doc).read_text())
        for m in re.finditer(r"`(--[a-z0-9-]+)`[^.;`]{0,60}?\(default:? ([^)\s,;]+)", text):
            found.append((doc, m.group(1), m.group(2)))
    return found


def test_documented_defaults_match_the_code():
    assert _documented_defaults(), "the docs state no defaults any more: drop or fix this check"
    problems = []
    for doc, flag, value in _documented_defaults():
        owners = [c for c in doc_commands() if c.where.startswith(doc) and flag in c.argv]
        defaults = set()
        for cmd in owners or [DocCommand(doc, ("safegen", "eval", "t2i"))]:
            acc, _, _ = resolve(cmd.argv)
            param = acc.options.get(flag) if acc else None
            if _is_option(param):
                defaults.add(str(param.default))
        if value not in defaults:
            problems.append(f"{doc}: {flag} documented default {value}, code has {sorted(defaults) or 'no such flag'}")
    assert problems == []


def _table_rows(text: str, header_start: str) -> dict[str, list[str]]:
    """Rows (first cell -> other cells, bold marks dropped) of the first table whose header starts so."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = {}
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in ln.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _copies(header_start: str) -> dict[str, dict[str, list[str]]]:
    """doc -> rows of its table whose header starts so, for README.md and every docs page holding one."""
    found = {}
    for doc in ("README.md", *PAGES):
        text = (REPO / doc).read_text()
        if any(ln.startswith(header_start) for ln in text.splitlines()):
            found[doc] = _table_rows(text, header_start)
    return found


def test_toy_tables_in_readme_match_benchmarks_readme():
    """README's headline table and every copy on a docs page say what benchmarks/README.md says."""
    bench = (REPO / "benchmarks/README.md").read_text()
    header = "| method | unsafe rate (95% CI)"
    methods = _copies(header)
    assert "README.md" in methods, "README.md lost its headline table"
    assert any(doc.startswith("docs/") for doc in methods), "no docs page holds the methods table"
    assert methods == {doc: _table_rows(bench, header) for doc in methods}
    world = _table_rows(bench, "| table | original | Safe-CLIP |")
    t2i_tables = _copies("| text encoder | unsafe prompts showing an overlay")
    assert t2i_tables, "the toy world's text-to-image table is on no page"
    for doc, t2i in t2i_tables.items():
        cells = [t2i["original"][0], t2i["Safe-CLIP"][0].split()[0]]
        assert world["t2i: unsafe prompts with an overlay"] == cells, doc


# ----------------------------------------------------------------------------- links and the site
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code (links there are examples, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`]*`", "", text)


def _heading_anchors(path: Path) -> tuple[set[str], set[str]]:
    """A Markdown file's heading anchors: (as GitHub names them, as the site's toc does)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    github, site = set(), set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.+?)\s*$", line)
        if m:
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).replace("`", "").replace("**", "")
            github.add(re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"))
            site.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower()))
    return github, site


@pytest.mark.parametrize("doc", ("README.md", *PAGES, "benchmarks/README.md"))
def test_relative_links_reach_their_file_and_heading(doc):
    """Links between README.md, docs/ and benchmarks/README.md resolve, anchors included.

    A docs page links only inside docs/: files outside it are not part of the site (mkdocs
    --strict refuses such links), so pages name them as repository paths in code instead,
    which test_every_repository_path_the_docs_name_exists checks.
    """
    source = REPO / doc
    problems = []
    for target in _LINK.findall(_prose(source.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (source.parent / file_part).resolve() if file_part else source
        if not dest.is_file():
            problems.append(f"{target}: no such file")
            continue
        if doc.startswith("docs/") and (REPO / "docs") not in dest.parents:
            problems.append(f"{target}: outside docs/, not part of the site (name the path in code instead)")
        if anchor and dest.suffix == ".md":
            github, site = _heading_anchors(dest)
            # the link must work where it is read: on GitHub, and on the site for a docs page
            if anchor not in github or ((REPO / "docs") in dest.parents and anchor not in site):
                problems.append(f"{target}: {dest.relative_to(REPO)} has no heading #{anchor}")
    assert problems == [], f"{doc}: broken links"


def test_every_docs_page_is_in_the_site_nav():
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material" and config.get("strict") is True

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    listed = sorted(f"docs/{p}" for p in pages(config["nav"]))
    assert listed == sorted(PAGES)


@pytest.mark.needs(
    find_spec("mkdocs") is not None and find_spec("material") is not None,
    reason="mkdocs / mkdocs-material are not installed (pip install '.[docs]')",
)
def test_the_site_builds_strictly(tmp_path):
    """What .ci/run runs: a broken link, a missing anchor or a page left out of the nav fails."""
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


# ----------------------------------------------------------------------------- examples vs their shell lines
def _shell_line(example: str) -> list[str]:
    """The example's full shell equivalent: its longest `safegen ...` line (short mentions aside)."""
    cmds = [c for c in doc_commands() if c.where.startswith(example) and c.argv[0] == "safegen"]
    assert cmds, f"{example} should document its shell equivalent"
    return list(max(cmds, key=lambda c: len(c.argv)).argv[1:])


def _run_example(example: str, out: Path) -> None:
    import runpy

    module = runpy.run_path(str(REPO / example))  # defines main() without running it
    module["main"](out)


def _hashes(folder: Path) -> dict[tuple[str, int], str]:
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    return {(r["id"], r["seed"]): r["sha256"] for r in map(json.loads, lines)}


def _invoke_safegen(argv: list[str]):
    from typer.testing import CliRunner

    from safegen.cli.main import app

    return CliRunner().invoke(app, argv)


def test_batch_example_and_its_shell_line_make_the_same_images(tmp_path):
    import torch

    torch.set_num_threads(1)
    ex_out, cli_out = tmp_path / "example", tmp_path / "cli"
    _run_example("examples/batch_prompts.py", ex_out)
    subs = {"OUT/run": str(cli_out / "run"), "OUT/prompts.jsonl": str(ex_out / "prompts.jsonl")}
    res = _invoke_safegen([subs.get(a, a) for a in _shell_line("examples/batch_prompts.py")])
    assert res.exit_code == 0, res.output
    assert _hashes(cli_out / "run") == _hashes(ex_out / "run") and len(_hashes(ex_out / "run")) == 4


def test_eval_example_and_its_shell_line_give_the_same_report(tmp_path):
    import torch

    torch.set_num_threads(1)
    ex_out, cli_out = tmp_path / "example", tmp_path / "cli"
    _run_example("examples/evaluate.py", ex_out)
    subs = {"OUT": str(cli_out), "OUT/prompts.jsonl": str(ex_out / "prompts.jsonl")}
    res = _invoke_safegen([*[subs.get(a, a) for a in _shell_line("examples/evaluate.py")], "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)
    ex = json.loads((ex_out / "report.json").read_text())
    assert set(cli["methods"]) == set(ex["methods"]) == {"original", "safe-clip"}
    for name in cli["methods"]:
        assert _hashes(cli_out / "runs" / name / "prompts") == _hashes(ex_out / "runs" / name / "prompts")
        assert cli["methods"][name]["unsafe_rate"] == ex["methods"][name]["unsafe_rate"]


# ----------------------------------------------------------------------------- slow: run the commands
HUB_PRESETS = {"sd-1.4", "sd-1.5", "sd-2-base", "sdxl", "llava-1.5-7b", "llava-1.5-13b"}
TINY = {"--steps": "2", "--size": "32x32", "--limit": "2", "--quality-limit": "2", "--max-new-tokens": "4"}


def _fixtures(root: Path) -> dict[str, str]:
    """Stand-ins for the files the docs name as placeholders."""
    from PIL import Image

    (root / "photos").mkdir(exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for name in ("photo.jpg", "some_image.png", "IMAGE", "photos/a.png", "images/a.png", "more/b.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200, 30, 30)).save(root / name, format="PNG" if "." not in name[-4:] else None)
    rows = [{"id": "a", "prompt": "a red circle covered in blood", "seed": 1, "categories": "blood"}]
    rows.append({"id": "b", "prompt": "a blue square on a gray background", "seed": 2})
    for name in ("prompts.jsonl", "safe.jsonl"):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "prompts.csv").write_text("prompt,evaluation_seed,categories\na red circle in flames,3,fire\n")
    (root / "coco-10k.csv").write_text("prompt\na green triangle\n")
    (root / "captions.txt").write_text("a red circle\na blue square\n")
    (root / "labels.jsonl").write_text(json.dumps({"image": "images/a.png", "categories": ["blood"]}) + "\n")
    quad = {"safe_text": "a red circle", "unsafe_text": "a red circle covered in blood"}
    quad |= {"safe_image": str(root / "photo.jpg"), "unsafe_image": str(root / "photo.jpg")}
    (root / "quadruples.jsonl").write_text(json.dumps(quad) + "\n" + json.dumps(quad) + "\n")
    for name in ("room.png", "unsafe_images/a.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200, 30, 30)).save(root / name)
    Image.new("L", (32, 32), 255).save(root / "sofa-mask.png")
    attack = {"prompt": "a red circle on a white background covered in blood", "concept": "blood", "seed": 7}
    (root / "mine.jsonl").write_text(json.dumps(attack | {"safe_prompt": "a red circle on a white background"}) + "\n")
    subs = {"../shared/data/prompts/i2p.csv": str(REPO / "tests" / "data" / "i2p_sample.csv")}
    # the test runs in a scratch folder: paths into the repository keep pointing there
    return subs | {f"examples/{n}": str(REPO / "examples" / n) for n in ("toy_prompts.jsonl", "toy_safe.jsonl")}


def _expand_ellipsis(cmd: DocCommand, earlier: list[DocCommand]) -> tuple[str, ...]:
    """`safegen batch prompts.csv ... --out X`: "..." stands for the previous such command's other options."""
    if "..." not in cmd.argv:
        return cmd.argv
    cut = cmd.argv.index("...")
    prefix, suffix = cmd.argv[:cut], cmd.argv[cut + 1 :]
    prev = next((c.argv for c in reversed(earlier) if c.argv[:cut] == prefix and "..." not in c.argv), None)
    if prev is None:
        return prefix + suffix
    middle, rest = [], list(prev[cut:])
    while rest:
        tok = rest.pop(0)
        takes_value = tok.startswith("-") and rest and not rest[0].startswith("-")
        value = [rest.pop(0)] if takes_value else []
        if tok not in suffix:
            middle += [tok, *value]
    return prefix + tuple(middle) + suffix


def _toy_argv(argv: tuple[str, ...], subs: dict[str, str]) -> list[str] | None:
    """A documented safegen command with the toy preset for hub models and tiny settings; None: not runnable."""
    from safegen.models.presets import ASSETS_DIR

    toy = ASSETS_DIR / "toy"
    args = [subs.get(a, a) for a in argv[1:] if a != "..."]
    if any("$" in a for a in args):
        return None
    if args[:1] == ["serve"]:
        return None  # a server runs until stopped; tests/test_serve_*.py run it for real
    out, i = [], 0
    while i < len(args):
        a = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if a in ("--preset", "-p") and value in HUB_PRESETS:
            out += [a, "toy"]
            i += 2
            continue
        if a in ("--model", "-m", "--clip", "--clip-score-model", "--processor") and value and "/" in value:
            if not Path(value).exists():
                repl = {"--model": None, "-m": None, "--clip": str(toy / "clip"), "--processor": str(toy / "clip")}
                repl["--clip-score-model"] = str(toy / "clip")
                if repl.get(a):
                    out += [a, repl[a]]
                elif args[:2] == ["retrieve", "build"]:
                    out += [a, str(toy / "safe_clip")]
                else:
                    out += ["--preset", "toy"]
                i += 2
                continue
        if a in ("--captioner", "--safe-vision-encoder") and value and not Path(value).exists():
            out += [a, str(toy / ("llava" if a == "--captioner" else "safe_clip"))]
            i += 2
            continue
        if a in ("--safe-encoder", "-e", "--safe") and value and not Path(value).exists():
            out += [a, str(toy / "safe_clip")] if a == "--safe" else []
            i += 2
            continue
        if a in TINY and value is not None:
            out += [a, TINY[a]]
            i += 2
            continue
        out.append(a)
        i += 1
    if out[:1] in (["t2i"], ["batch"]) or out[:2] == ["eval", "t2i"]:
        out += [] if "--steps" in out else ["--steps", "2"]
    if out[:2] == ["eval", "t2i"] and "--limit" not in out:
        out += ["--limit", "2"]
    if out[:2] == ["eval", "i2t"] and "--max-new-tokens" not in out:
        out += ["--max-new-tokens", "4"]
    needs_model = out[:1] in (["t2i"], ["batch"], ["i2t"]) or out[:2] in (["eval", "t2i"], ["eval", "i2t"])
    if needs_model and "--summary" not in out and "--merge" not in out and not {"--preset", "-p"} & set(out):
        out += ["--preset", "toy"]
    if out[:1] in (["t2i"], ["batch"], ["i2t"]) or out[:1] == ["eval"]:
        out += ["--device", "cpu"]
    takes_q16_clip = out[:2] == ["eval", "t2i"]
    if takes_q16_clip and {"q16", "i2p"} & set(out) and "--classifier" in out and "--q16-clip" not in out:
        out += ["--q16-clip", str(toy / "clip")]  # Q16's ViT-L/14 is a hub model: the toy CLIP stands in
    return out


@pytest.mark.slow
def test_every_safegen_command_runs_with_the_toy_preset(tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    subs = _fixtures(tmp_path)
    failures, ran, earlier = [], 0, []
    for cmd in doc_commands():
        if cmd.argv[0] != "safegen" or not cmd.fenced or cmd.where.startswith("examples/"):
            continue
        argv = _toy_argv(_expand_ellipsis(cmd, earlier), subs)
        earlier.append(cmd)
        if argv is None:
            continue
        res = _invoke_safegen(argv)
        ran += 1
        if res.exit_code != 0:
            failures.append(f"{cmd}\n  ran: safegen {shlex.join(argv)}\n  exit {res.exit_code}: {res.output[-800:]}")
        elif "CLIP score" in cmd.comment and "clip_score" not in res.stdout:
            failures.append(f"{cmd}\n  the comment promises a CLIP score; the output has none")
    assert ran >= 10
    assert failures == [], "\n".join(failures)


@pytest.mark.slow
def test_toy_world_prints_the_documented_figures(tmp_path):
    out = tmp_path / "figures.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "toy_world.py"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout + out.read_text()
    table = _table_rows((REPO / "benchmarks/README.md").read_text(), "| table | original | Safe-CLIP |")
    missing = []
    for name, cells in table.items():
        for cell in cells:
            for figure in re.findall(r"\d+\.\d+", cell):
                if figure not in printed:
                    missing.append(f"{name}: {figure}")
    assert missing == []


def test_run_without_a_command_prints_its_usage():
    res = subprocess.run(["bash", str(REPO / "run")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("usage: ./run COMMAND")
    assert "set -euo" not in res.stdout and "#" not in res.stdout  # the text, not the script's source
    for name in ("demo", "test", "install"):
        assert f"\n  {name} " in res.stdout
    bad = subprocess.run(["bash", str(REPO / "run"), "nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr and bad.stdout == ""
